//! The soak's history: everything the driver did and saw, with the driver's own
//! monotonic time (microseconds since the soak started). The checker reads only this.
//!
//! - Tokens: each app token a browser obtained, decoded from its cookie (sid, user,
//!   groups, app, issue time in the issuing node's clock).
//! - Requests: each protected request sent with a token (through the balancer or to one
//!   node directly): when sent and answered, where, the status and, for refusals and
//!   errors, the reason the gateway gave.
//! - Exchanges: every other HTTP answer (sign-in steps, control calls) that was a 5xx.
//! - Revocations: each revocation sent through any entry point: when, where, what, and
//!   what came back (the acknowledgement with its `not_before` instant, or the failure).
//! - Events: the fault schedule (nodes down and up, links cut and healed, Redis down and
//!   up, clock offsets), as the state changes took effect.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Microseconds since the soak started (the driver's monotonic clock).
pub type T = i64;

pub const SEC: T = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Scope {
    Session,
    User,
    Group,
    App,
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Session => "session",
            Scope::User => "user",
            Scope::Group => "group",
            Scope::App => "app",
            Scope::All => "all",
        }
    }
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "session" => Scope::Session,
            "user" => Scope::User,
            "group" => Scope::Group,
            "app" => Scope::App,
            "all" => Scope::All,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Token {
    pub jti: String,
    pub sid: String,
    pub email: String,
    pub groups: Vec<String>,
    pub app: String,
    /// Issue time in the issuing node's clock (the token's `iat_us`).
    pub iat_us: i64,
    /// When the driver had it (after the sign-in flow ended).
    pub obtained: T,
    /// The Cookie header that carries it (app token and binding cookie).
    #[serde(skip)]
    pub cookie: String,
    /// The app's host name.
    #[serde(skip)]
    pub host: String,
}

impl Token {
    /// Whether a revocation of `scope`/`target` applies to this token at all (before
    /// comparing instants).
    pub fn in_scope(&self, scope: Scope, target: &str) -> bool {
        match scope {
            Scope::All => true,
            Scope::Session => self.sid == target,
            Scope::User => self.email.eq_ignore_ascii_case(target),
            Scope::Group => self.groups.iter().any(|g| g == target),
            Scope::App => self.app == target,
        }
    }
}

/// Where a request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    Balancer,
    Node(usize),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub token: usize,
    pub via: Via,
    /// The node that answered: the target of a direct request, or (through the
    /// balancer) the node whose access log has this request's path; None if unknown.
    pub node: Option<usize>,
    pub sent: T,
    pub done: T,
    /// 0: no HTTP answer (connection refused or reset, timeout).
    pub status: u16,
    /// For answers other than 200: the start of the body (the gateway's reason).
    pub reason: String,
    pub kind: Kind,
}

/// Who sent a protected request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Browser,
    /// The propagation prober, right after an acknowledgement.
    Probe,
    /// The final check, after every process was restarted.
    Final,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Exchange {
    pub what: String,
    pub via: Via,
    pub sent: T,
    pub done: T,
    pub status: u16,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// `POST /v1/revocations`
    Api,
    /// `POST /v1/revocations/bulk` (JSON or CSV)
    Bulk,
    /// `DELETE /v1/sessions/{sid}`
    DeleteSession,
    /// `GET /.portcullis/logout` in the browser, through the balancer
    Logout,
    /// `portcullis revoke ... --json`
    Cli,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ack {
    pub status: u16,
    pub id: String,
    /// The revocation's instant in the taking node's clock, as an interval: exact when
    /// the answer gave microseconds, a millisecond wide when only the RFC 3339 text is
    /// known (bulk rows, logouts found in the audit log).
    pub nb_lo: i64,
    pub nb_hi: i64,
    pub peers_acked: u64,
    pub peers: u64,
    pub propagated: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Revocation {
    pub n: usize,
    pub scope: Scope,
    pub target: String,
    pub entry: Entry,
    /// The reason code sent (unique per call), to find it in listings and audit logs.
    pub reason: String,
    /// The node that took it (its control port was called; for logouts, learnt from the
    /// audit logs afterwards).
    pub node: Option<usize>,
    pub sent: T,
    pub done: T,
    /// The acknowledgement, or None when the call failed or got no answer.
    pub ack: Option<Ack>,
    pub failure: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The node's process is gone (kill -9).
    NodeDown(usize),
    /// The node's process answers on its control port again.
    NodeUp(usize),
    /// The link node a -> node b (peer backend) is cut / healed.
    Cut(usize, usize),
    Heal(usize, usize),
    /// The link node -> Redis is cut / healed.
    RedisCut(usize),
    RedisHeal(usize),
    RedisDown,
    /// redis-server was started again (nodes may reach it from now on) / answers.
    RedisStarting,
    RedisUp,
    /// A node's clock offset is now this many milliseconds.
    Clock(usize, i64),
    /// A fault window starts / ends (for the report: what was going on).
    FaultStart,
    FaultEnd,
}

#[derive(Default, Serialize, Deserialize)]
pub struct History {
    pub nodes: usize,
    pub redis: bool,
    pub tokens: Vec<Token>,
    pub requests: Vec<Request>,
    pub exchanges: Vec<Exchange>,
    pub revocations: Vec<Revocation>,
    pub events: Vec<(T, Event, String)>,
    /// The largest clock offset any node had, in microseconds (bounds the instant an
    /// unacknowledged revocation may carry).
    pub max_offset_us: i64,
    /// The driver's wall clock (µs since the epoch) at T = 0.
    pub wall0_us: i64,
    /// The soak's load phase ended here (the final check came after).
    pub load_end: T,
    /// From the final check: acknowledged revocations a node did not list or refuse.
    pub lost: Vec<String>,
    /// What went wrong running the soak itself (a node that did not come back...).
    pub problems: Vec<String>,
}

impl History {
    /// The latest instant (in a node's clock) revocation `r` may carry: the one it was
    /// acknowledged with; for one without an acknowledgement, the driver's wall clock
    /// when it gave up, plus the largest clock offset any node had, plus a second (the
    /// node that took it, if it did, stamped it before that); for one still in flight,
    /// any instant at all.
    pub fn nb_hi(&self, r: &Revocation) -> i64 {
        match &r.ack {
            Some(a) => a.nb_hi,
            None if r.done == 0 => i64::MAX,
            None => self.wall0_us + r.done + self.max_offset_us + SEC,
        }
    }
}

/// The history being written, shared by every task of the driver.
#[derive(Clone)]
pub struct Recorder {
    t0: Instant,
    pub h: Arc<Mutex<History>>,
}

impl Recorder {
    pub fn new(nodes: usize, redis: bool) -> Recorder {
        let wall0_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Recorder {
            t0: Instant::now(),
            h: Arc::new(Mutex::new(History {
                nodes,
                redis,
                wall0_us,
                ..Default::default()
            })),
        }
    }

    pub fn now(&self) -> T {
        self.t0.elapsed().as_micros() as T
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        f(&mut self.h.lock().expect("history lock"))
    }

    pub fn event(&self, e: Event, note: impl Into<String>) {
        let t = self.now();
        let note = note.into();
        self.with(|h| {
            if let Event::Clock(_, ms) = e {
                h.max_offset_us = h.max_offset_us.max(ms.abs() * 1_000);
            }
            h.events.push((t, e, note))
        });
    }

    pub fn token(&self, t: Token) -> usize {
        self.with(|h| {
            h.tokens.push(t);
            h.tokens.len() - 1
        })
    }

    pub fn request(&self, r: Request) {
        self.with(|h| h.requests.push(r));
    }

    pub fn exchange(&self, e: Exchange) {
        self.with(|h| h.exchanges.push(e));
    }

    /// Records a revocation about to be sent; returns its number.
    pub fn revocation(&self, r: Revocation) -> usize {
        self.with(|h| {
            let n = h.revocations.len();
            h.revocations.push(Revocation { n, ..r });
            n
        })
    }

    pub fn settle(&self, n: usize, done: T, ack: Option<Ack>, failure: String) {
        self.with(|h| {
            let r = &mut h.revocations[n];
            r.done = done;
            r.ack = ack;
            r.failure = failure;
        });
    }
}

/// The first `n` characters of a body, on one line.
pub fn excerpt(body: &str, n: usize) -> String {
    body.chars()
        .take(n)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
