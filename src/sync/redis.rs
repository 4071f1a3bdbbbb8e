//! The Redis backend (`[sync] backend = "redis"`): the cluster's state lives in one Redis
//! (or Valkey) that every node talks to (storage layer: `cluster::redis`).
//!
//! - Revocations: a revocation taken here is durable and enforced first (the engine),
//!   then published to the Redis stream ([`RedisPush`]). When Redis is away it goes to
//!   a durable local outbox instead, the caller hears it has not propagated yet, and a
//!   flusher hands it over as soon as Redis answers again: nothing acknowledged is lost.
//! - Every node keeps its in-memory set exactly as with peers, so the per-request check
//!   never waits on Redis. It is fed by a snapshot when the node starts and then by a
//!   tail of the stream (`XREAD BLOCK` on its own connection), both made durable in the
//!   sync journal before they are enforced. A node serves nothing before the snapshot
//!   is in (bounded by `startup_sync_timeout`, then `on_stale` decides).
//! - Single-use keys, the sign-in throttle and the session inventory live in Redis.

use super::apply::apply_durably;
use super::journal::Journal;
use super::wire;
use crate::clock::Micros;
use crate::cluster::docs::DocStore;
use crate::cluster::redis::{Outbox, RedisStore, SessionRecord, TailEvent};
use crate::cluster::{BackendStatus, ClusterError, Directory, SessionDirectory, SharedState};
use crate::config::file::OnStale;
use crate::metrics::Writer;
use crate::revocation::engine::{Engine, Notifier, Propagation};
use crate::revocation::{Freshness, RevocationRecord};
use crate::runtime::Live;
use crate::session::registry::{
    KEEP_ENDED_US, Registry, SessionInfo, SessionMirror, SessionView, merge,
};
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the outbox flusher looks for waiting revocations.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often this node shares its reading of the cluster's time through Redis.
const CLOCK_EVERY: Duration = Duration::from_millis(200);

/// The Redis backend's [`Notifier`]: publish, or keep in the outbox.
pub struct RedisPush {
    store: RedisStore,
    outbox: Arc<Outbox>,
}

impl RedisPush {
    pub fn new(store: RedisStore, outbox: Arc<Outbox>) -> Self {
        Self { store, outbox }
    }

    async fn publish(&self, records: &[RevocationRecord]) -> Propagation {
        let sent = self.store.publish(records).await;
        let mut out = Propagation {
            peers: 1,
            ..Default::default()
        };
        match sent {
            Ok(_) => out.acked = 1,
            Err(e) => {
                tracing::warn!(error = %e, "redis did not take the revocation: kept in the outbox");
                let (ob, recs) = (self.outbox.clone(), records.to_vec());
                let kept = tokio::task::spawn_blocking(move || ob.push(&recs)).await;
                if !matches!(kept, Ok(Ok(()))) {
                    tracing::error!(
                        ?kept,
                        "cannot write the redis outbox; the revocation log still holds it"
                    );
                }
                out.pending = true;
            }
        }
        out
    }
}

impl Notifier for RedisPush {
    fn publish<'a>(&'a self, records: &'a [RevocationRecord]) -> BoxFuture<'a, Propagation> {
        Box::pin(RedisPush::publish(self, records))
    }
}

/// What the startup catch-up achieved, for `/readyz`.
#[derive(Clone, Debug, serde::Serialize)]
struct Startup {
    records: usize,
    millis: u64,
    timed_out: bool,
}

pub struct RedisBackend {
    store: RedisStore,
    outbox: Arc<Outbox>,
    live: Arc<Live>,
    engine: Arc<Engine>,
    journal: Arc<Journal>,
    sessions: Arc<Registry>,
    ready: AtomicBool,
    applied: AtomicU64,
    resyncs: AtomicU64,
    startup: Mutex<Option<Startup>>,
    /// The cluster's documents, brought up to date before a signal's revocations are
    /// enforced (see [`RedisBackend::apply`]).
    docs: Option<Arc<DocStore>>,
}

impl RedisBackend {
    pub fn new(
        store: RedisStore,
        outbox: Arc<Outbox>,
        live: Arc<Live>,
        engine: Arc<Engine>,
        journal: Arc<Journal>,
        sessions: Arc<Registry>,
    ) -> Self {
        Self {
            store,
            outbox,
            live,
            engine,
            journal,
            sessions,
            ready: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            startup: Mutex::new(None),
            docs: None,
        }
    }

    /// Keeps `docs` up to date with the revocations this node takes from the stream.
    pub fn with_docs(mut self, docs: Arc<DocStore>) -> Self {
        self.docs = Some(docs);
        self
    }

    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Starts the feed (snapshot, then tail), the outbox flusher and the clock reader.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let (feed, flush, clock) = (self.clone(), self.clone(), self.clone());
        let mut stop = shutdown.clone();
        let mut stop3 = shutdown.clone();
        let mut stop2 = shutdown;
        vec![
            tokio::spawn(async move {
                tokio::select! {
                    _ = clock.read_clocks_forever() => {}
                    _ = stop3.changed() => {}
                }
            }),
            tokio::spawn(async move {
                tokio::select! {
                    _ = feed.feed() => {}
                    _ = stop.changed() => {}
                }
            }),
            tokio::spawn(async move {
                tokio::select! {
                    _ = flush.flush_forever() => {}
                    _ = stop2.changed() => {}
                }
            }),
        ]
    }

    /// Enforces `records` here (durable in the sync journal first); returns how many
    /// moved the set forward.
    /// Makes `records` durable and enforces them. A revocation a signal trigger made
    /// (SCIM, Shared Signals) follows the documents that trigger wrote first (a group
    /// without the user, an account flag): those are merged here before, so a token
    /// re-issued right after the revocation carries what the directory says now.
    async fn apply(&self, records: Vec<RevocationRecord>) -> usize {
        if records.is_empty() {
            return 0;
        }
        let from_signal =
            |r: &RevocationRecord| r.actor.starts_with("scim:") || r.actor.starts_with("ssf:");
        if let Some(docs) = self
            .docs
            .as_ref()
            .filter(|_| records.iter().any(from_signal))
        {
            docs.catch_up().await;
        }
        let mut entries = Vec::with_capacity(records.len() * 64);
        for r in &records {
            wire::put_entry(&mut entries, r.scope, &r.target, r.not_before_us, Some(r));
        }
        self.apply_entries(entries).await
    }

    /// Makes a run of wire entries durable and enforces them; returns how many moved the
    /// set forward.
    async fn apply_entries(&self, entries: Vec<u8>) -> usize {
        let horizon = self.engine.now_us() - self.live.load().revocation_horizon_us();
        let (engine, journal) = (self.engine.clone(), self.journal.clone());
        let res = tokio::task::spawn_blocking(move || {
            apply_durably(&engine, &journal, horizon, &entries)
        })
        .await;
        match res {
            Ok(Ok(moved)) => {
                self.applied.fetch_add(moved as u64, Ordering::Relaxed);
                moved
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot apply revocations from redis");
                0
            }
            Err(e) => {
                tracing::error!(error = %e, "applying revocations from redis failed");
                0
            }
        }
    }

    /// The snapshot, then the stream, forever.
    async fn feed(&self) {
        let pos = self.catch_up().await;
        let mut tail = self.store.tail(pos);
        while let Some(ev) = tail.next().await {
            match ev {
                TailEvent::Records(recs) => {
                    self.apply(recs.into_iter().map(|(_, r)| r).collect()).await;
                }
                TailEvent::Resync {
                    records, reason, ..
                } => {
                    self.resyncs.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        ?reason,
                        "redis lost stream entries: applying its whole set again"
                    );
                    self.apply(records).await;
                    self.republish().await;
                }
            }
        }
    }

    /// Loads the snapshot, retrying until Redis answers. Past `startup_sync_timeout`
    /// the node reports ready anyway (and `on_stale` decides what it serves).
    async fn catch_up(&self) -> crate::cluster::redis::StreamId {
        let t0 = Instant::now();
        let timeout = self.live.load().config.sync.startup_sync_timeout;
        let mut wait = Duration::from_millis(100);
        loop {
            match self.store.snapshot().await {
                Ok((snap, pos)) => {
                    let n = snap.count;
                    let read_millis = t0.elapsed().as_millis() as u64;
                    // Signal revocations follow the documents their trigger wrote.
                    if let Some(docs) = &self.docs {
                        docs.catch_up().await;
                    }
                    self.apply_entries(snap.entries).await;
                    self.started(n, t0, false);
                    tracing::info!(
                        records = n,
                        read_millis,
                        millis = t0.elapsed().as_millis() as u64,
                        "caught up with redis"
                    );
                    return pos;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the revocations from redis yet");
                    if t0.elapsed() >= timeout && !self.is_ready() {
                        tracing::warn!(
                            "startup catch-up with redis timed out; on_stale decides what this node serves"
                        );
                        self.started(0, t0, true);
                    }
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    fn started(&self, records: usize, t0: Instant, timed_out: bool) {
        if let Ok(mut s) = self.startup.lock() {
            *s = Some(Startup {
                records,
                millis: t0.elapsed().as_millis() as u64,
                timed_out,
            });
        }
        self.ready.store(true, Ordering::SeqCst);
    }

    /// After Redis lost data: hand it every record in force this node knows in full,
    /// so the other nodes (and later ones) learn them again.
    async fn republish(&self) {
        let records: Vec<RevocationRecord> = self
            .engine
            .in_force(usize::MAX)
            .into_iter()
            .filter(|r| !r.id.is_empty())
            .collect();
        for chunk in records.chunks(500) {
            if let Err(e) = self.store.publish(chunk).await {
                tracing::warn!(error = %e, "cannot republish to redis; will on the next resync");
                return;
            }
        }
    }

    async fn flush_forever(&self) {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            let ob = self.outbox.clone();
            let waiting = tokio::task::spawn_blocking(move || ob.is_empty())
                .await
                .ok()
                .and_then(Result::ok)
                == Some(false);
            if waiting && let Err(e) = self.store.flush_outbox(&self.outbox).await {
                tracing::debug!(error = %e, "redis outbox not flushed yet");
            }
        }
    }

    /// Shares this node's reading of the cluster's time and learns the latest one through
    /// Redis, so tokens and revocations are stamped in the cluster's time (see
    /// [`crate::clock::Ticker`]).
    async fn read_clocks_forever(&self) {
        loop {
            let sent = Instant::now();
            let now = self.engine.cluster_now_us();
            match self.store.fastest_clock(self.engine.node_id(), now).await {
                Ok(fastest) => {
                    let max_lead = self.live.load().config.session.clock_skew;
                    self.engine.heard_clock(fastest, sent.elapsed(), max_lead);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the clocks through redis"),
            }
            tokio::time::sleep(CLOCK_EVERY).await;
        }
    }

    /// Forgets what no live token can depend on (in Redis; each node prunes its own set).
    pub async fn prune(&self, horizon: Micros) {
        if let Err(e) = self.store.prune(horizon).await {
            tracing::debug!(error = %e, "cannot prune redis");
        }
    }

    fn outbox_len(&self) -> usize {
        self.outbox.pending().map_or(0, |p| p.len())
    }
}

fn unavailable(e: crate::cluster::redis::RedisError) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

impl SharedState for RedisBackend {
    fn claim_once<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async move { self.store.claim_once(key, ttl).await.map_err(unavailable) })
    }

    fn record_failure<'a>(
        &'a self,
        key: &'a str,
        at: Micros,
        window: Duration,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            self.store
                .record_failure(key, at, window)
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
    }

    fn failures<'a>(
        &'a self,
        key: &'a str,
        now: Micros,
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Micros>, ClusterError>> {
        Box::pin(async move {
            self.store
                .failure_times(key, now, window)
                .await
                .map_err(unavailable)
        })
    }

    fn clear_failures<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.store.clear_failures(key).await.map_err(unavailable) })
    }
}

fn view_of(r: SessionRecord) -> SessionView {
    SessionView {
        info: SessionInfo {
            sid: r.sid,
            user: r.user,
            groups: r.groups,
            ip: r.ip,
            user_agent: r.user_agent,
            created_us: r.created_us,
            expires_us: r.expires_us,
            node: r.node,
            idp: r.idp,
            idp_sub: r.idp_sub,
            idp_sid: r.idp_sid,
            foreign: false,
        },
        apps: r.apps,
        last_seen_us: r.last_seen_us,
    }
}

impl RedisBackend {
    /// Redis' sessions and this node's, merged (this node's answer alone when Redis is
    /// away, which the answer says).
    async fn directory(&self, user: Option<&str>, local: Vec<SessionView>) -> Directory {
        let now = self.engine.now_us();
        let remote = match user {
            Some(u) => self.store.sessions_of(u, now).await,
            None => self.store.all_sessions(now).await,
        };
        let mut d = Directory::default();
        let mut all = local;
        match remote {
            Ok(recs) => {
                d.answered = 1;
                all.extend(recs.into_iter().map(view_of));
            }
            Err(e) => d.missing.push(format!("redis: {e}")),
        }
        d.sessions = merge(all);
        d
    }
}

impl SessionDirectory for RedisBackend {
    fn live<'a>(&'a self, user: Option<&'a str>) -> BoxFuture<'a, Directory> {
        Box::pin(async move {
            let now = self.engine.now_us();
            let local = self.sessions.list(user, now);
            let mut d = self.directory(user, local).await;
            let set = self.engine.set();
            d.sessions.retain(|s| {
                let i = &s.info;
                i.expires_us > now && !set.revokes_session(&i.sid, &i.user, &i.groups, i.created_us)
            });
            d
        })
    }

    fn created_since(&self, since: Micros) -> BoxFuture<'_, Directory> {
        Box::pin(async move {
            let local = self.sessions.created_since(since);
            let mut d = self.directory(None, local).await;
            d.sessions.retain(|s| s.info.created_us >= since);
            d
        })
    }
}

impl SessionMirror for RedisBackend {
    fn created(&self, info: &SessionInfo) {
        let rec = SessionRecord {
            sid: info.sid.clone(),
            user: info.user.clone(),
            groups: info.groups.clone(),
            ip: info.ip.clone(),
            user_agent: info.user_agent.clone(),
            created_us: info.created_us,
            last_seen_us: info.created_us,
            expires_us: info.expires_us,
            node: info.node.clone(),
            idp: info.idp.clone(),
            idp_sub: info.idp_sub.clone(),
            idp_sid: info.idp_sid.clone(),
            ..Default::default()
        };
        let (store, keep) = (self.store.clone(), info.expires_us + KEEP_ENDED_US);
        tokio::spawn(async move {
            if let Err(e) = store.put_session(&rec, keep).await {
                tracing::warn!(error = %e, sid = %rec.sid, "cannot record the session in redis");
            }
        });
    }

    fn app_added(&self, sid: &str, app: &str, now: Micros) {
        let (store, sid, app) = (self.store.clone(), sid.to_string(), app.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.add_app(&sid, &app, now).await {
                tracing::debug!(error = %e, "cannot note the app in redis");
            }
        });
    }

    fn ended(&self, sid: &str, at: Micros) {
        let (store, sid) = (self.store.clone(), sid.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.end_session(&sid, at).await {
                tracing::debug!(error = %e, "cannot end the session in redis");
            }
        });
    }

    fn seen(&self, sid: &str, at: Micros) {
        let (store, sid) = (self.store.clone(), sid.to_string());
        tokio::spawn(async move {
            let _ = store.touch_session(&sid, at).await;
        });
    }
}

const CATCHING_UP: &str =
    "this node is catching up with the revocations in redis and serves nothing until it has";

impl Freshness for RedisBackend {
    fn not_ready(&self) -> Option<String> {
        (!self.is_ready()).then(|| CATCHING_UP.to_string())
    }

    /// In refuse mode: no answer from Redis for longer than `max_staleness` (or never
    /// since this node started).
    fn stale_reason(&self) -> Option<String> {
        if !self.is_ready() {
            return Some(CATCHING_UP.into());
        }
        let rt = self.live.load();
        let s = &rt.config.sync;
        let max = s.max_staleness?;
        if s.on_stale != OnStale::Refuse {
            return None;
        }
        let Some(silent) = self.store.silent_for() else {
            return Some(
                "redis has not answered since this node started: refusing to serve protected apps"
                    .into(),
            );
        };
        (silent > max).then(|| {
            format!(
                "cut off from redis for {}s (max_staleness {}s): refusing to serve protected apps",
                silent.as_secs(),
                max.as_secs_f64()
            )
        })
    }
}

impl BackendStatus for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn readiness(&self) -> serde_json::Value {
        let h = self.store.health();
        let startup = self.startup.lock().ok().and_then(|s| s.clone());
        serde_json::json!({
            "backend": "redis",
            "redis": crate::cluster::redis::redact_url(&self.store.config().url),
            "connected": h.connected,
            "lag_ms": h.lag_ms,
            "last_applied": h.last_applied.map(|s| s.to_string()),
            "outbox": self.outbox_len(),
            "startup": startup,
        })
    }

    fn write_metrics(&self, w: &mut Writer) {
        let h = self.store.health();
        let now = self.engine.now_us();
        w.gauge(
            "portcullis_redis_connected",
            "Whether the last exchange with redis succeeded.",
            u8::from(h.connected),
        );
        w.counter(
            "portcullis_redis_reconnects_total",
            "Times the connection to redis came back after being lost.",
            h.reconnects,
        );
        w.gauge(
            "portcullis_redis_lag_seconds",
            "How far the last stream entry applied here is behind the stream's newest (-1: none yet).",
            h.lag_ms.map_or(-1.0, |ms| ms as f64 / 1e3),
        );
        w.gauge(
            "portcullis_redis_last_applied_age_seconds",
            "Seconds since this node last applied an entry from the stream (-1: never).",
            h.last_applied_at_us
                .map_or(-1.0, |t| (now - t) as f64 / 1e6),
        );
        w.counter(
            "portcullis_redis_applied_total",
            "Revocations from redis that moved this node's set forward.",
            self.applied.load(Ordering::Relaxed),
        );
        w.counter(
            "portcullis_redis_resyncs_total",
            "Times redis had lost entries and its whole set was applied again.",
            self.resyncs.load(Ordering::Relaxed),
        );
        w.gauge(
            "portcullis_redis_outbox",
            "Revocations taken here that redis has not taken yet.",
            self.outbox_len(),
        );
        w.gauge(
            "portcullis_sync_stale",
            "Whether this node refuses protected apps because it is cut off from redis.",
            u8::from(self.stale_reason().is_some()),
        );
        w.gauge(
            "portcullis_clock_lead_seconds",
            "How far the fastest node clock heard of (through redis) is ahead of this node's.",
            self.engine.clock_lead_us() as f64 / 1e6,
        );
    }
}
