//! The checker: reads the whole history after the soak and reports against the goals.
//!
//! A token is *covered* by a revocation when the revocation's scope and target match it
//! and the token's issue time is before the revocation's instant, both as the gateway
//! stamped them (`iat_us` against `not_before_us`). Nodes stamp in the cluster's time
//! (the fastest node clock they heard of), so clock steps must not reorder a token and
//! a revocation: a token the driver had before a revocation was sent yet stamped after
//! its instant (a clock-skew miss), and a token obtained after every covering
//! revocation's acknowledgement yet stamped before it (a clock-skew refusal), are goal
//! violations like the others.
//!
//! 1. Revoked tokens accepted late: a 200 for a covered token on a node, sent more than
//!    `grace` (1 s) after the moment that node could have learnt the acknowledged
//!    revocation (see `model`: the acknowledgement itself unless a fault kept the node
//!    from it). Through the balancer the node comes from the access logs; when unknown,
//!    the latest of the nodes' deadlines counts.
//! 2. Valid tokens refused: a 401/403 for a token no revocation sent before the answer
//!    may cover (an unacknowledged one may carry any instant up to when the driver gave
//!    up on it, plus the largest clock offset, plus a second).
//! 3. Acknowledged revocations lost: from the final check after every process was
//!    killed at once and restarted (every node must list each one, or a later one of
//!    the same key, and refuse a token it covers).
//! 4. 5xx other than the documented 503s (catching up; cut off in `on_stale = "refuse"`;
//!    sign-in while the cluster state cannot be reached).
//! 5. Cut-off nodes serving: a 200 from a node cut off from every peer (or from Redis)
//!    for longer than `max_staleness` + `grace`, clock steps or not (nodes measure
//!    staleness on their monotonic clock).
//! 6. The node that took a revocation accepting a token it covers after acknowledging
//!    it (it is enforced there before the call returns: no grace).
//!
//! And the propagation distribution: for each acknowledged revocation and each other
//! node, the time from the acknowledgement to the first refusal the prober saw of a
//! token only it covers, apart for revocations with no fault in the way (peers: the push
//! from the taking node got through; Redis: published and the node connected) and the
//! others (learnt by anti-entropy through a third node, after a restart, a heal...).

use crate::history::{History, Kind, Request, Revocation, Scope, T};
use crate::model::{Params, Timeline};
use std::collections::HashMap;

/// The reasons a node gives for a documented 503.
pub const DOCUMENTED_503: [&str; 4] = [
    "catching up",
    "cut off from",
    "has not answered since this node started",
    "the cluster state cannot be reached",
];

#[derive(Default, Debug)]
pub struct Report {
    pub late: Vec<String>,
    pub late_fault_free: usize,
    pub origin_late: Vec<String>,
    pub valid_refused: Vec<String>,
    pub lost: Vec<String>,
    pub bad_5xx: Vec<String>,
    pub documented_503: usize,
    pub stale_serving: Vec<String>,
    /// (token, revocation) pairs where the driver had the token before the revocation
    /// was sent, yet the token is stamped after it (a clock ahead) and was accepted
    /// later than `grace` after the acknowledgement; with one line of evidence each.
    pub skew_misses: HashMap<(usize, usize), String>,
    pub max_skew_miss_ms: f64,
    /// The other way round: refusals of a token the driver obtained only after every
    /// revocation that covers it was acknowledged (stamped before them: its node's
    /// clock was behind).
    pub skew_refused: Vec<String>,
    /// ack -> first refusal on the other nodes (ms): no fault in the way; a fault in
    /// the way; on the node that took it.
    pub propagation: Vec<f64>,
    pub propagation_fault: Vec<f64>,
    pub propagation_origin: Vec<f64>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn goals_met(&self) -> bool {
        self.late.is_empty()
            && self.origin_late.is_empty()
            && self.valid_refused.is_empty()
            && self.lost.is_empty()
            && self.bad_5xx.is_empty()
            && self.stale_serving.is_empty()
            && self.skew_misses.is_empty()
            && self.skew_refused.is_empty()
            && self.problems.is_empty()
    }
}

type Key = (Scope, String);

/// One node's listing of revocations (`GET /v1/revocations` after the final restart):
/// (scope, target) -> (instant, id).
pub type Listing = HashMap<Key, (i64, String)>;

/// Goal 3: acknowledged revocations a node does not list with an instant at least the
/// acknowledged one (a later revocation of the same scope and target replaces it).
pub fn lost_in_listings(h: &History, listings: &[Listing]) -> Vec<String> {
    let mut lost = Vec::new();
    for r in &h.revocations {
        let Some(a) = &r.ack else { continue };
        for (i, l) in listings.iter().enumerate() {
            if l.get(&key_of(r)).is_none_or(|(nb, _)| *nb < a.nb_lo) {
                lost.push(format!(
                    "node {} does not list revocation #{} ({} {:?}, id {}, via {:?} at node {:?})",
                    i + 1,
                    r.n,
                    r.scope.as_str(),
                    r.target,
                    a.id,
                    r.entry,
                    r.node.map(|n| n + 1)
                ));
            }
        }
    }
    lost
}

fn keys_of(h: &History, tok: usize) -> Vec<Key> {
    let t = &h.tokens[tok];
    let mut k = vec![
        (Scope::All, String::new()),
        (Scope::Session, t.sid.clone()),
        (Scope::User, t.email.to_ascii_lowercase()),
        (Scope::App, t.app.clone()),
    ];
    k.extend(t.groups.iter().map(|g| (Scope::Group, g.clone())));
    k
}

pub fn key_of(r: &Revocation) -> Key {
    match r.scope {
        Scope::All => (Scope::All, String::new()),
        Scope::User => (Scope::User, r.target.to_ascii_lowercase()),
        s => (s, r.target.clone()),
    }
}

struct Index<'a> {
    h: &'a History,
    revs: HashMap<Key, Vec<usize>>,
    tokens: HashMap<Key, Vec<usize>>,
    by_token: Vec<Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(h: &'a History) -> Index<'a> {
        let mut revs: HashMap<Key, Vec<usize>> = HashMap::new();
        for r in &h.revocations {
            revs.entry(key_of(r)).or_default().push(r.n);
        }
        let mut tokens: HashMap<Key, Vec<usize>> = HashMap::new();
        for t in 0..h.tokens.len() {
            for k in keys_of(h, t) {
                tokens.entry(k).or_default().push(t);
            }
        }
        let mut by_token = vec![Vec::new(); h.tokens.len()];
        for (i, q) in h.requests.iter().enumerate() {
            by_token[q.token].push(i);
        }
        for v in &mut by_token {
            v.sort_by_key(|&i| h.requests[i].sent);
        }
        Index {
            h,
            revs,
            tokens,
            by_token,
        }
    }

    /// Revocations whose scope and target match token `tok`.
    fn matching(&self, tok: usize) -> impl Iterator<Item = &'a Revocation> + '_ {
        keys_of(self.h, tok)
            .into_iter()
            .filter_map(|k| self.revs.get(&k))
            .flatten()
            .map(|&n| &self.h.revocations[n])
    }

    /// Whether some revocation other than `except`, sent by `t`, may cover `tok`.
    fn other_may_cover(&self, tok: usize, except: usize, t: T) -> bool {
        let iat = self.h.tokens[tok].iat_us;
        self.matching(tok)
            .any(|o| o.n != except && o.sent <= t && iat < self.h.nb_hi(o))
    }
}

pub fn check(h: &History, p: &Params) -> Report {
    let tl = Timeline::new(h);
    let ix = Index::new(h);
    let learn: Vec<Vec<Option<T>>> = h.revocations.iter().map(|r| tl.learn_times(r, p)).collect();
    let mut rep = Report {
        lost: h.lost.clone(),
        problems: h.problems.clone(),
        ..Default::default()
    };
    for q in &h.requests {
        match q.status {
            200 => {
                late_accept(h, &ix, &learn, p, q, &mut rep);
                stale_serving(&tl, p, q, &mut rep);
            }
            401 | 403 => valid_refused(h, &ix, q, &mut rep),
            s if s >= 500 => server_error(&format!("request {}", q.id), s, &q.reason, &mut rep),
            _ => {}
        }
    }
    for e in &h.exchanges {
        server_error(&e.what, e.status, &e.reason, &mut rep);
    }
    propagation(h, &tl, &ix, &learn, p, &mut rep);
    rep
}

fn describe(h: &History, r: &Revocation) -> String {
    format!(
        "revocation #{} {} {:?} via {:?} at node {:?}, acked at {:.3}s",
        r.n,
        r.scope.as_str(),
        r.target,
        r.entry,
        r.node.map(|n| n + 1),
        r.done as f64 / 1e6
    ) + &h
        .revocations
        .get(r.n)
        .and_then(|r| r.ack.as_ref())
        .map(|a| format!(" (id {}, nb {})", a.id, a.nb_lo))
        .unwrap_or_default()
}

fn late_accept(
    h: &History,
    ix: &Index,
    learn: &[Vec<Option<T>>],
    p: &Params,
    q: &Request,
    rep: &mut Report,
) {
    let tok = &h.tokens[q.token];
    for r in ix.matching(q.token) {
        let Some(a) = &r.ack else { continue };
        if tok.iat_us >= a.nb_lo {
            if tok.obtained < r.sent && q.sent > r.done + p.grace {
                let ms = (tok.iat_us - a.nb_lo) as f64 / 1e3;
                rep.max_skew_miss_ms = rep.max_skew_miss_ms.max(ms);
                rep.skew_misses.entry((q.token, r.n)).or_insert_with(|| {
                    format!(
                        "token {} ({}, obtained at {:.3}s, iat {}) accepted by node {:?} at {:.3}s, {:.3}s after {}: stamped {ms:.0} ms after the revocation's instant",
                        tok.jti,
                        tok.email,
                        tok.obtained as f64 / 1e6,
                        tok.iat_us,
                        q.node.map(|n| n + 1),
                        q.sent as f64 / 1e6,
                        (q.sent - r.done) as f64 / 1e6,
                        describe(h, r)
                    )
                });
            }
            continue;
        }
        if q.node.is_some() && q.node == r.node && q.sent > r.done {
            rep.origin_late.push(format!(
                "request {} sent at {:.3}s got 200 for token {} (sid {}, {}) from the node that had acknowledged {}",
                q.id,
                q.sent as f64 / 1e6,
                tok.jti,
                tok.sid,
                tok.email,
                describe(h, r)
            ));
        }
        let l = &learn[r.n];
        let known = match q.node {
            Some(n) => l[n],
            None => l
                .iter()
                .copied()
                .collect::<Option<Vec<T>>>()
                .and_then(|v| v.into_iter().max()),
        };
        let Some(known) = known else { continue };
        if q.sent > known + p.grace {
            let fault_free = q.node.is_some_and(|n| l[n] == Some(r.done));
            if fault_free {
                rep.late_fault_free += 1;
            }
            rep.late.push(format!(
                "request {} ({:?}, node {:?}) sent at {:.3}s got 200 for token {} (sid {}, {}, iat {}) although {} was knowable there at {:.3}s{}",
                q.id,
                q.via,
                q.node.map(|n| n + 1),
                q.sent as f64 / 1e6,
                tok.jti,
                tok.sid,
                tok.email,
                tok.iat_us,
                describe(h, r),
                known as f64 / 1e6,
                if fault_free { " (no fault in the way)" } else { " (after a fault)" }
            ));
        }
    }
}

fn stale_serving(tl: &Timeline, p: &Params, q: &Request, rep: &mut Report) {
    let Some(n) = q.node else { return };
    let Some(since) = tl.cut_off_since(n, q.sent) else {
        return;
    };
    let over = q.sent - since - (p.max_staleness + p.grace);
    if over <= 0 {
        return;
    }
    rep.stale_serving.push(format!(
        "request {} at {:.3}s: node {} answered 200 although cut off since {:.3}s",
        q.id,
        q.sent as f64 / 1e6,
        n + 1,
        since as f64 / 1e6
    ));
}

fn valid_refused(h: &History, ix: &Index, q: &Request, rep: &mut Report) {
    let t = &h.tokens[q.token];
    let covering: Vec<&Revocation> = ix
        .matching(q.token)
        .filter(|r| r.sent <= q.done && t.iat_us < h.nb_hi(r))
        .collect();
    let after_every_ack = covering
        .iter()
        .all(|r| r.ack.is_some() && r.done < t.obtained);
    if !covering.is_empty() && after_every_ack {
        rep.skew_refused.push(format!(
            "request {} ({:?}, node {:?}) at {:.3}s: {} for token {} ({}, obtained at {:.3}s, iat {}), obtained after {} but stamped before its instant",
            q.id,
            q.via,
            q.node.map(|n| n + 1),
            q.sent as f64 / 1e6,
            q.status,
            t.jti,
            t.email,
            t.obtained as f64 / 1e6,
            t.iat_us,
            describe(h, covering[0])
        ));
    }
    if covering.is_empty() {
        rep.valid_refused.push(format!(
            "request {} ({:?}, node {:?}) at {:.3}s: {} for token {} (sid {}, {}, groups {:?}, app {}, iat {}) that no revocation covers: {}",
            q.id,
            q.via,
            q.node.map(|n| n + 1),
            q.sent as f64 / 1e6,
            q.status,
            t.jti,
            t.sid,
            t.email,
            t.groups,
            t.app,
            t.iat_us,
            q.reason
        ));
    }
}

fn server_error(what: &str, status: u16, reason: &str, rep: &mut Report) {
    if status < 500 {
        return;
    }
    if status == 503 && DOCUMENTED_503.iter().any(|d| reason.contains(d)) {
        rep.documented_503 += 1;
    } else {
        rep.bad_5xx.push(format!("{what}: {status} {reason}"));
    }
}

fn propagation(
    h: &History,
    tl: &Timeline,
    ix: &Index,
    learn: &[Vec<Option<T>>],
    p: &Params,
    rep: &mut Report,
) {
    for r in &h.revocations {
        let (Some(a), Some(o)) = (&r.ack, r.node) else {
            continue;
        };
        if a.nb_lo != a.nb_hi {
            continue; // instant known to the millisecond only
        }
        let Some(toks) = ix.tokens.get(&key_of(r)) else {
            continue;
        };
        for (n, l) in learn[r.n].iter().enumerate() {
            let Some(l) = *l else { continue };
            let first = toks
                .iter()
                .filter(|&&t| h.tokens[t].iat_us < a.nb_lo)
                .flat_map(|&t| ix.by_token[t].iter().map(move |&i| (t, i)))
                .map(|(t, i)| (t, &h.requests[i]))
                .filter(|(_, q)| {
                    q.kind == Kind::Probe
                        && q.node == Some(n)
                        && q.sent >= r.done
                        && q.status == 401
                })
                .filter(|(t, q)| !ix.other_may_cover(*t, r.n, q.sent))
                .map(|(_, q)| q.done)
                .min();
            let Some(first) = first else { continue };
            let ms = (first - r.done) as f64 / 1e3;
            if n == o && tl.healthy_throughout(o, r.done, first) {
                rep.propagation_origin.push(ms);
            } else if n != o && tl.direct(r, n, l, p) {
                rep.propagation.push(ms);
            } else {
                rep.propagation_fault.push(ms);
            }
        }
    }
}

/// p50, p99 and max of a sample (ms), as text.
pub fn dist(v: &[f64]) -> String {
    if v.is_empty() {
        return "n=0".into();
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "n={}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s.len(),
        q(0.5),
        q(0.99),
        s[s.len() - 1]
    )
}
