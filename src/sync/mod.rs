//! Peer sync: one revocation set across all gateway nodes.
//!
//! - Push: a revocation taken here is durable and enforced first, then sent to every
//!   peer at once (while this node writes its audit line); `[sync] ack` decides how long
//!   the API waits for their answers. A peer enforces what it receives on arrival and
//!   confirms once it is durable in its revocation log ([`receive`]).
//! - Anti-entropy: every `anti_entropy_interval` each node compares its set digest with
//!   each peer's (one small GET). When they differ it fetches the peer's per-bucket
//!   digests (4096 buckets of keys) twice, [`peer::SETTLE`] apart, and pulls in a
//!   compact binary form only the entries of buckets that differed both times (a push
//!   in flight makes a bucket differ for a moment; a missed revocation keeps it
//!   different), or every entry when this node is empty or far behind. New entries are
//!   made durable in the sync journal ([`journal`]) and enforced. Entries merge by
//!   keeping the latest instant per key, so order and repetition do not matter. Each
//!   peer is reconciled on its own, so a slow or hung peer never delays the others.
//! - Startup: a node pulls from every peer before it reports ready on `/readyz`
//!   (bounded by `startup_sync_timeout`; it serves what it has if no peer answers, and
//!   `/readyz` says so in its `sync` field).
//! - Staleness: the last time each peer answered is tracked (and exported as metrics);
//!   in `on_stale = "refuse"` mode a node cut off from every peer for longer than
//!   `max_staleness` fails closed. Peers are asked at least every `max_staleness / 3`.
//! - Self-test: see [`selftest`].

pub mod anti_entropy;
pub mod apply;
pub mod client;
mod directory;
pub mod docs;
pub mod http;
pub mod journal;
pub mod peer;
pub mod push;
pub mod redis;
pub mod selftest;
pub mod shared;
/// The binary entry form lives with the revocations (the Redis snapshot uses it too).
pub use crate::revocation::wire;

use crate::auth::Authenticator;
use crate::config::file::OnStale;
use crate::metrics::{Kind, Writer};
use crate::revocation::engine::Engine;
use crate::runtime::Live;
use crate::session::registry::Registry;
use client::PeerClient;
use journal::Journal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the startup catch-up achieved, for `/readyz`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StartupSync {
    pub peers: usize,
    pub peers_answered: usize,
    pub entries_pulled: usize,
    pub millis: u64,
    pub timed_out: bool,
}

/// The peer backend on one node: the client to the peers, the sync journal, the
/// catch-up state and the self-test.
pub struct PeerSync {
    live: Arc<Live>,
    engine: Arc<Engine>,
    auth: Arc<Authenticator>,
    pub client: Arc<PeerClient>,
    sessions: Arc<Registry>,
    /// The single-use markers and sign-in failures this backend shares.
    pub shared: Arc<shared::PeerShared>,
    journal: Arc<Journal>,
    ready: AtomicBool,
    pulled_entries: AtomicU64,
    pulls: AtomicU64,
    startup: Mutex<Option<StartupSync>>,
    pub(crate) selftest: selftest::State,
}

impl PeerSync {
    pub fn new(
        live: Arc<Live>,
        engine: Arc<Engine>,
        auth: Arc<Authenticator>,
        client: Arc<PeerClient>,
        sessions: Arc<Registry>,
        journal: Arc<Journal>,
        ticker: Arc<crate::clock::Ticker>,
    ) -> Self {
        let limits = live.load().config.limits.clone();
        let shared = Arc::new(shared::PeerShared::new(
            client.clone(),
            ticker,
            limits.max_single_use,
            limits.max_throttle_keys,
        ));
        // With no peers there is nothing to catch up with.
        let alone = client.peers().is_empty();
        Self {
            live,
            engine,
            auth,
            client,
            sessions,
            shared,
            journal,
            ready: AtomicBool::new(alone),
            pulled_entries: AtomicU64::new(0),
            pulls: AtomicU64::new(0),
            startup: Mutex::new(None),
            selftest: selftest::State::default(),
        }
    }

    /// Whether the startup catch-up is over.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn startup(&self) -> Option<StartupSync> {
        self.startup.lock().ok().and_then(|s| s.clone())
    }

    /// Starts anti-entropy (which also does the startup catch-up that gates readiness).
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![tokio::spawn(anti_entropy::run(self.clone(), shutdown))]
    }

    /// Applies entries pulled from a peer (a run of wire entries): see
    /// [`apply::apply_durably`]. Returns how many moved the set forward.
    pub fn apply_pulled(&self, entries: &[u8]) -> Result<usize, peer::PeerError> {
        let horizon = self.engine.now_us() - self.live.load().revocation_horizon_us();
        let moved = apply::apply_durably(&self.engine, &self.journal, horizon, entries).map_err(
            |e| match e {
                apply::ApplyError::Decode(e) => peer::PeerError::Decode(e.to_string()),
                e => peer::PeerError::Apply(e.to_string()),
            },
        )?;
        if moved > 0 {
            self.pulled_entries
                .fetch_add(moved as u64, Ordering::Relaxed);
            self.pulls.fetch_add(1, Ordering::Relaxed);
        }
        Ok(moved)
    }

    /// Why this node must not serve protected requests now: it has not caught up with
    /// its peers since it started, or (in `on_stale = "refuse"` mode) it has heard from
    /// none of them for longer than `max_staleness`, or never since it started.
    pub fn stale_reason(&self) -> Option<String> {
        if !self.is_ready() {
            return Some(
                "this node is catching up with its peers' revocations and serves nothing until it has".into(),
            );
        }
        let rt = self.live.load();
        let s = &rt.config.sync;
        let max = s.max_staleness?;
        if s.on_stale != OnStale::Refuse || s.peers.is_empty() {
            return None;
        }
        let Some(silent) = s
            .peers
            .iter()
            .filter_map(|p| self.client.health.silent_for(p))
            .min()
        else {
            return Some(format!(
                "no peer of {} has answered since this node started: refusing to serve protected apps",
                s.peers.len()
            ));
        };
        (silent > max).then(|| {
            format!(
                "cut off from all {} peers for {}s (max_staleness {}s): refusing to serve protected apps",
                s.peers.len(),
                silent.as_secs(),
                max.as_secs_f64()
            )
        })
    }
}

impl crate::revocation::Freshness for PeerSync {
    fn not_ready(&self) -> Option<String> {
        (!self.is_ready()).then(|| {
            "this node is catching up with its peers' revocations and serves nothing until it has"
                .to_string()
        })
    }
    fn stale_reason(&self) -> Option<String> {
        PeerSync::stale_reason(self)
    }
}

impl crate::cluster::BackendStatus for PeerSync {
    fn name(&self) -> &'static str {
        "peers"
    }

    fn readiness(&self) -> serde_json::Value {
        let peers = self.client.peers();
        if peers.is_empty() {
            return serde_json::json!({"backend": "peers", "peers": 0});
        }
        let up = peers.iter().filter(|p| self.client.health.is_up(p)).count();
        let startup = self.startup();
        let note = match &startup {
            Some(s) if s.peers_answered == 0 => {
                "no peer answered the startup catch-up: serving the revocations this node holds"
            }
            Some(s) if s.timed_out => {
                "the startup catch-up timed out for some peers; anti-entropy carries on"
            }
            _ => "caught up with peers at startup",
        };
        serde_json::json!({
            "backend": "peers", "peers": peers.len(), "peers_up": up, "startup": startup, "note": note,
        })
    }

    fn write_metrics(&self, w: &mut Writer) {
        let peers = self.client.peers();
        let h = &self.client.health;
        let age = |p: &String| h.silent_for(p).map_or(-1.0, |d| d.as_secs_f64());
        let labels: Vec<[(&str, &str); 1]> = peers.iter().map(|p| [("peer", p.as_str())]).collect();
        w.family(
            "portcullis_peer_last_heard_seconds",
            "Seconds since each peer last answered (-1: never).",
            Kind::Gauge,
            labels.iter().zip(&peers).map(|(l, p)| (&l[..], age(p))),
        );
        w.family(
            "portcullis_peer_up",
            "Whether the last call to each peer succeeded.",
            Kind::Gauge,
            labels
                .iter()
                .zip(&peers)
                .map(|(l, p)| (&l[..], u8::from(h.is_up(p)))),
        );
        w.family(
            "portcullis_sync_push_failures_total",
            "Pushes to each peer that failed (anti-entropy repairs them).",
            Kind::Counter,
            labels
                .iter()
                .zip(&peers)
                .map(|(l, p)| (&l[..], h.push_failures(p))),
        );
        w.counter(
            "portcullis_sync_pulled_entries_total",
            "Entries anti-entropy pulled from peers that moved this node's set forward.",
            self.pulled_entries.load(Ordering::Relaxed),
        );
        w.gauge(
            "portcullis_sync_stale",
            "Whether this node refuses protected apps because it is cut off from its peers.",
            u8::from(self.stale_reason().is_some()),
        );
        w.gauge(
            "portcullis_clock_lead_seconds",
            "How far the fastest peer clock heard of is ahead of this node's.",
            self.engine.clock_lead_us() as f64 / 1e6,
        );
    }
}
