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

pub mod http;
pub mod journal;
pub mod peer;
pub mod selftest;
pub mod wire;

use crate::clock::Ticker;
use crate::config::file::{AckMode, OnStale};
use crate::gateway::Gateway;
use crate::revocation::engine::{self, RevokeError};
use crate::revocation::set::RevocationSet;
use crate::revocation::{RevocationRecord, Scope};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Small calls to a peer (digests, pushes, session lists) must answer within this.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// A pull can carry a whole set (a million entries is ~33 MB).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// Records per push request, so a large bulk revocation stays under the peer's body limit.
const PUSH_CHUNK: usize = 5_000;

#[derive(Debug, Default)]
pub struct PushResult {
    pub acked: usize,
    pub peers: usize,
    /// Sessions each revocation ended on the peers, by revocation id.
    pub remote_sessions: HashMap<String, u64>,
}

/// What the startup catch-up achieved, for `/readyz`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StartupSync {
    pub peers: usize,
    pub peers_answered: usize,
    pub entries_pulled: usize,
    pub millis: u64,
    pub timed_out: bool,
}

/// Sync's state on one node: when each peer last answered (microseconds, for staleness
/// and metrics), counters, the sync journal and the last self-test.
#[derive(Default)]
pub struct PeerHealth {
    last_heard: DashMap<String, i64>,
    up: DashMap<String, bool>,
    push_failures: DashMap<String, u64>,
    pulled_entries: AtomicU64,
    pulls: AtomicU64,
    startup: Mutex<Option<StartupSync>>,
    journal: OnceLock<journal::Journal>,
    pub(crate) selftest: selftest::State,
}

impl PeerHealth {
    pub fn heard(&self, peer: &str, now: i64) {
        self.last_heard.insert(peer.to_string(), now);
        self.up.insert(peer.to_string(), true);
    }
    pub fn failed(&self, peer: &str) {
        self.up.insert(peer.to_string(), false);
    }
    pub fn last_heard(&self, peer: &str) -> Option<i64> {
        self.last_heard.get(peer).map(|v| *v)
    }
    pub fn startup(&self) -> Option<StartupSync> {
        self.startup.lock().ok().and_then(|s| s.clone())
    }
}

fn journal(gw: &Gateway) -> &journal::Journal {
    gw.peers
        .journal
        .get_or_init(|| journal::Journal::new(&gw.state_dir))
}

/// Sends freshly taken revocations to every peer, waiting as `[sync] ack` says.
pub async fn push(gw: &Arc<Gateway>, records: &[RevocationRecord]) -> PushResult {
    let rt = gw.runtime.load_full();
    let sync = &rt.config.sync;
    let peers = sync.peers.clone();
    if peers.is_empty() || records.is_empty() {
        return PushResult::default();
    }
    // Encoded once for every peer.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        records
            .chunks(PUSH_CHUNK)
            .filter_map(|c| peer::push_body(&gw.node_id, c).ok())
            .collect(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(peers.len());
    for p in &peers {
        let (gw, p, tx, bodies) = (gw.clone(), p.clone(), tx.clone(), bodies.clone());
        tokio::spawn(async move {
            let mut ack = peer::PushAck::default();
            let mut res = Ok(());
            for body in bodies.iter() {
                match peer::push_encoded(&gw, &p, body.clone()).await {
                    Ok(a) => {
                        ack.applied += a.applied;
                        ack.sessions.extend(a.sessions);
                    }
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            if let Err(e) = &res {
                *gw.peers.push_failures.entry(p.clone()).or_default() += 1;
                tracing::warn!(peer = %p, error = %e, "push to peer failed; anti-entropy will retry");
            }
            let _ = tx.send(res.ok().map(|()| ack)).await;
        });
    }
    drop(tx);
    let mut out = PushResult {
        peers: peers.len(),
        ..Default::default()
    };
    let need = match sync.ack {
        AckMode::Local => return out,
        AckMode::All => peers.len(),
        // A majority of the cluster, counting this node.
        AckMode::Quorum => peers.len().div_ceil(2),
    };
    let deadline = tokio::time::sleep(sync.ack_timeout);
    tokio::pin!(deadline);
    while out.acked < need {
        tokio::select! {
            got = rx.recv() => match got {
                Some(Some(ack)) => {
                    out.acked += 1;
                    for (id, n) in ack.sessions {
                        *out.remote_sessions.entry(id).or_default() += n;
                    }
                }
                Some(None) => {}
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    // Count the confirmations that are already in as well.
    while let Ok(got) = rx.try_recv() {
        if let Some(ack) = got {
            out.acked += 1;
            for (id, n) in ack.sessions {
                *out.remote_sessions.entry(id).or_default() += n;
            }
        }
    }
    out
}

/// Applies revocations a peer pushed (`POST /v1/peer/revocations`). They are enforced at
/// once, then made durable in the revocation log before the peer hears back: refusing
/// sooner is always safe, and should this node crash in between, the sender (which
/// made them durable before pushing) still holds them and this node pulls them again
/// before it reports ready. Returns how many moved the set forward and the sessions
/// each ended here.
pub async fn receive(
    gw: &Arc<Gateway>,
    records: Vec<RevocationRecord>,
) -> Result<(usize, HashMap<String, u64>), RevokeError> {
    let fresh: Vec<RevocationRecord> = records
        .into_iter()
        .filter(|r| {
            canonical(r.scope, &r.target)
                && gw
                    .revocations
                    .get(r.scope, &r.target)
                    .is_none_or(|have| have < r.not_before_us)
        })
        .collect();
    let mut ended = HashMap::new();
    if fresh.is_empty() {
        return Ok((0, ended));
    }
    let mut moved = 0;
    for rec in &fresh {
        gw.ticker.observe(rec.not_before_us);
        if gw
            .revocations
            .apply(rec.scope, &rec.target, rec.not_before_us)
        {
            moved += 1;
        }
    }
    let writer = gw.clone();
    let durable = fresh.clone();
    tokio::task::spawn_blocking(move || writer.revlog.append(&durable))
        .await
        .map_err(|e| RevokeError::Durability(e.to_string()))?
        .map_err(|e| RevokeError::Durability(e.to_string()))?;
    let now = gw.now_us();
    for rec in &fresh {
        ended.insert(rec.id.clone(), engine::end_sessions(gw, rec, now));
    }
    Ok((moved, ended))
}

/// Starts anti-entropy (which also does the startup catch-up that gates readiness).
pub fn spawn(gw: Arc<Gateway>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![tokio::spawn(anti_entropy(gw, shutdown))]
}

type Reconciled = Result<usize, peer::PeerError>;

/// The reconciles in flight, one per peer at most; dropping it (when the anti-entropy
/// task is aborted at shutdown) aborts them all.
#[derive(Default)]
struct Inflight {
    tasks: JoinSet<Reconciled>,
    peers: HashMap<tokio::task::Id, String>,
}

impl Inflight {
    fn start(&mut self, gw: &Arc<Gateway>, p: &str) {
        if self.peers.values().any(|q| q == p) {
            return;
        }
        let (g, q) = (gw.clone(), p.to_string());
        let h = self
            .tasks
            .spawn(async move { peer::reconcile(&g, &q).await });
        self.peers.insert(h.id(), p.to_string());
    }

    /// The next finished reconcile: its peer and result (None when it panicked).
    async fn next(&mut self) -> Option<(String, Option<Reconciled>)> {
        let (id, r) = match self.tasks.join_next_with_id().await? {
            Ok((id, r)) => (id, Some(r)),
            Err(e) => (e.id(), None),
        };
        Some((self.peers.remove(&id).unwrap_or_default(), r))
    }
}

fn note(gw: &Gateway, p: &str, r: &Option<Reconciled>, startup: bool) -> Option<usize> {
    match r {
        Some(Ok(pulled)) => {
            if *pulled > 0 {
                tracing::info!(peer = %p, pulled, startup, "pulled missed revocations from a peer");
            }
            Some(*pulled)
        }
        Some(Err(e)) => {
            gw.peers.failed(p);
            if startup {
                tracing::warn!(peer = %p, error = %e, "startup catch-up with peer failed");
            } else {
                tracing::debug!(peer = %p, error = %e, "anti-entropy with peer failed");
            }
            None
        }
        None => {
            tracing::error!(peer = %p, "anti-entropy with peer panicked");
            None
        }
    }
}

/// How often to talk to peers: the configured interval, but often enough that a
/// healthy cluster never looks stale.
fn interval(gw: &Gateway) -> Duration {
    let rt = gw.runtime.load();
    let s = &rt.config.sync;
    let mut every = s.anti_entropy_interval;
    if let Some(max) = s.max_staleness {
        every = every.min(max / 3);
    }
    every.max(Duration::from_millis(10))
}

async fn anti_entropy(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut inflight = Inflight::default();

    // Catch up before reporting ready: bounded, and says so when no peer answered.
    let peers = gw.runtime.load().config.sync.peers.clone();
    let timeout = gw.runtime.load().config.sync.startup_sync_timeout;
    let t0 = Instant::now();
    for p in &peers {
        inflight.start(&gw, p);
    }
    let mut status = StartupSync {
        peers: peers.len(),
        peers_answered: 0,
        entries_pulled: 0,
        millis: 0,
        timed_out: false,
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while !inflight.tasks.is_empty() {
        tokio::select! {
            Some((p, r)) = inflight.next() => {
                if let Some(n) = note(&gw, &p, &r, true) {
                    status.peers_answered += 1;
                    status.entries_pulled += n;
                }
            }
            _ = &mut deadline => {
                // Pulls still running carry on in the background.
                status.timed_out = true;
                break;
            }
        }
    }
    status.millis = t0.elapsed().as_millis() as u64;
    if peers.is_empty() {
        tracing::debug!("no peers configured");
    } else if status.peers_answered > 0 {
        tracing::info!(
            peers_answered = status.peers_answered,
            peers = status.peers,
            pulled = status.entries_pulled,
            millis = status.millis,
            "caught up with peers"
        );
    } else {
        tracing::warn!("no peer answered the startup catch-up; serving what this node holds");
    }
    if let Ok(mut s) = gw.peers.startup.lock() {
        *s = Some(status);
    }
    gw.ready.store(true, Ordering::SeqCst);

    let mut every = interval(&gw);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut rounds: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((p, r)) = inflight.next(), if !inflight.tasks.is_empty() => {
                note(&gw, &p, &r, false);
                continue;
            }
            _ = shutdown.changed() => return,
        }
        rounds += 1;
        // A reload may change the peers or the interval.
        let now_every = interval(&gw);
        if now_every != every {
            every = now_every;
            tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
        }
        let peers = gw.runtime.load().config.sync.peers.clone();
        for p in &peers {
            inflight.start(&gw, p);
        }
        if rounds.is_multiple_of(64) {
            let g = gw.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = journal(&g).maybe_compact(&g.revocations) {
                    tracing::error!(error = %e, "sync journal compaction failed");
                }
            })
            .await;
        }
    }
}

/// Is `target` already in the form `engine::normalize` gives for `scope`? (Checked
/// without allocating: a pull can carry a million entries.)
pub fn canonical(scope: Scope, target: &str) -> bool {
    if scope == Scope::All {
        return target == "*";
    }
    !target.is_empty()
        && target.len() <= 512
        && target.trim() == target
        && !target.chars().any(char::is_control)
        && (scope != Scope::User || !target.bytes().any(|b| b.is_ascii_uppercase()))
}

/// Applies entries pulled from a peer (a run of wire entries): keeps the ones that move
/// this node's set forward, makes them durable in the sync journal, enforces them and
/// ends the sessions they cover. Returns how many moved the set forward.
pub fn apply_pulled(gw: &Gateway, entries: &[u8]) -> Result<usize, peer::PeerError> {
    let t0 = Instant::now();
    let horizon = gw.revocation_horizon();
    let set = &gw.revocations;
    let mut fresh = Vec::with_capacity(entries.len().min(64 << 20));
    let mut n = 0usize;
    for e in wire::Entries::new(entries) {
        let (scope, target, nb) = e.map_err(|e| peer::PeerError::Decode(e.to_string()))?;
        if (scope != Scope::All && nb < horizon)
            || !canonical(scope, target)
            || set.get(scope, target).is_some_and(|have| have >= nb)
        {
            continue;
        }
        wire::put_entry(&mut fresh, scope, target, nb);
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    let t_filtered = t0.elapsed();
    let (moved, t_applied) = journal(gw)
        .append_then(&fresh, || {
            let moved = apply_entries(set, &gw.ticker, &fresh, n);
            (moved, t0.elapsed())
        })
        .map_err(|e| {
            tracing::error!(error = %e, "cannot make pulled revocations durable");
            peer::PeerError::Apply(format!("sync journal: {e}"))
        })?;
    let t_durable = t0.elapsed();
    gw.peers
        .pulled_entries
        .fetch_add(moved as u64, Ordering::Relaxed);
    gw.peers.pulls.fetch_add(1, Ordering::Relaxed);
    let ended = end_revoked_sessions(gw);
    tracing::debug!(
        received = n,
        moved,
        ended,
        filter_ms = t_filtered.as_secs_f64() * 1e3,
        applied_ms = (t_applied - t_filtered).as_secs_f64() * 1e3,
        durable_ms = (t_durable - t_filtered).as_secs_f64() * 1e3,
        sessions_ms = (t0.elapsed() - t_durable).as_secs_f64() * 1e3,
        "applied pulled entries"
    );
    Ok(moved)
}

/// Merges `n` wire entries into the set (in batches on several threads when there are
/// many) and makes later ticks come after them; returns how many moved the set forward.
fn apply_entries(set: &RevocationSet, ticker: &Ticker, entries: &[u8], n: usize) -> usize {
    let all: Vec<(Scope, &str, i64)> = wire::Entries::new(entries).flatten().collect();
    let latest = all.iter().map(|e| e.2).max().unwrap_or(i64::MIN);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let moved = if n < 50_000 || threads < 2 {
        set.apply_batch(all.iter().copied())
    } else {
        let per = all.len().div_ceil(threads);
        std::thread::scope(|s| {
            let parts: Vec<_> = all
                .chunks(per)
                .map(|c| s.spawn(move || set.apply_batch(c.iter().copied())))
                .collect();
            parts.into_iter().filter_map(|h| h.join().ok()).sum()
        })
    };
    ticker.observe(latest);
    moved
}

/// Ends this node's live sessions that the set now revokes (one pass over the
/// registry, however many entries arrived).
fn end_revoked_sessions(gw: &Gateway) -> u64 {
    let set = &gw.revocations;
    let now = gw.now_us();
    let covers =
        |scope: Scope, key: &str, created: i64| set.get(scope, key).is_some_and(|nb| nb >= created);
    gw.registry.end_matching(i64::MAX, now, true, |s| {
        covers(Scope::All, "*", s.created_us)
            || covers(Scope::Session, &s.sid, s.created_us)
            || covers(Scope::User, &s.user, s.created_us)
            || s.groups
                .iter()
                .any(|g| covers(Scope::Group, g, s.created_us))
    })
}

/// In refuse mode, whether this node has been cut off from every peer for too long.
pub fn stale_reason(gw: &Gateway) -> Option<String> {
    let rt = gw.runtime.load();
    let s = &rt.config.sync;
    let max = s.max_staleness?;
    if s.on_stale != OnStale::Refuse || s.peers.is_empty() {
        return None;
    }
    let now = gw.now_us();
    let limit = max.as_micros() as i64;
    let newest = s
        .peers
        .iter()
        .filter_map(|p| gw.peers.last_heard(p))
        .max()
        .unwrap_or(gw.started_us);
    (now - newest > limit).then(|| {
        format!(
            "cut off from all {} peers for {}s (max_staleness {}s): refusing to serve protected apps",
            s.peers.len(),
            (now - newest) / 1_000_000,
            max.as_secs_f64()
        )
    })
}

/// What `/readyz` adds about sync once the node is ready.
pub fn readiness(gw: &Gateway) -> serde_json::Value {
    let rt = gw.runtime.load();
    let peers = &rt.config.sync.peers;
    if peers.is_empty() {
        return serde_json::json!({"peers": 0});
    }
    let up = peers
        .iter()
        .filter(|p| gw.peers.up.get(p.as_str()).is_some_and(|u| *u))
        .count();
    let startup = gw.peers.startup();
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
        "peers": peers.len(), "peers_up": up, "startup": startup, "note": note,
    })
}

pub fn peer_metrics(gw: &Gateway) -> String {
    let rt = gw.runtime.load();
    let now = gw.now_us();
    let mut s = String::from(
        "# HELP portcullis_peer_last_heard_seconds Seconds since each peer last answered (-1: never).\n# TYPE portcullis_peer_last_heard_seconds gauge\n",
    );
    let peers = &rt.config.sync.peers;
    for p in peers {
        let age = gw
            .peers
            .last_heard(p)
            .map_or(-1.0, |t| (now - t) as f64 / 1e6);
        s.push_str(&format!(
            "portcullis_peer_last_heard_seconds{{peer=\"{p}\"}} {age}\n"
        ));
    }
    s.push_str("# HELP portcullis_peer_up Whether the last call to each peer succeeded.\n# TYPE portcullis_peer_up gauge\n");
    for p in peers {
        let up = gw.peers.up.get(p.as_str()).is_some_and(|u| *u);
        s.push_str(&format!(
            "portcullis_peer_up{{peer=\"{p}\"}} {}\n",
            u8::from(up)
        ));
    }
    s.push_str("# HELP portcullis_sync_push_failures_total Pushes to each peer that failed (anti-entropy repairs them).\n# TYPE portcullis_sync_push_failures_total counter\n");
    for p in peers {
        let n = gw.peers.push_failures.get(p.as_str()).map_or(0, |v| *v);
        s.push_str(&format!(
            "portcullis_sync_push_failures_total{{peer=\"{p}\"}} {n}\n"
        ));
    }
    s.push_str(&format!(
        "# HELP portcullis_sync_pulled_entries_total Entries anti-entropy pulled from peers that moved this node's set forward.\n# TYPE portcullis_sync_pulled_entries_total counter\nportcullis_sync_pulled_entries_total {}\n",
        gw.peers.pulled_entries.load(Ordering::Relaxed)
    ));
    s.push_str(&format!(
        "# HELP portcullis_sync_stale Whether this node refuses protected apps because it is cut off from its peers.\n# TYPE portcullis_sync_stale gauge\nportcullis_sync_stale {}\n",
        u8::from(stale_reason(gw).is_some())
    ));
    s.push_str(&selftest::metrics(gw));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::engine::normalize;

    #[test]
    fn canonical_agrees_with_normalize() {
        for scope in Scope::ALL {
            for t in [
                "a@x.com",
                "A@x.com",
                " a",
                "a ",
                "",
                "*",
                "sid_-1",
                "tab\there",
                "ünï",
                &"x".repeat(513),
            ] {
                let want = normalize(scope, t).is_ok_and(|n| n == t);
                assert_eq!(canonical(scope, t), want, "{scope:?} {t:?}");
            }
        }
    }
}
