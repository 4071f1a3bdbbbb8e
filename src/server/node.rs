//! The composition root: builds every service of one gateway node from a validated
//! config and a clock, in dependency order, and hands each only what it needs. Nothing
//! below the server sees this struct; it exists so the server (and tests) can reach
//! the services by name.

use super::StartError;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::clock::{Clock, Ticker};
use crate::cluster::Cluster;
use crate::cluster::docs::{DocReplicator, DocStore};
use crate::cluster::docs_redis::RedisDocs;
use crate::cluster::redis::{Outbox, RedisConfig, RedisStore};
use crate::config::{Config, Secrets};
use crate::console::{AccountStatus, Console, ConsoleParts, NodeCluster};
use crate::control::{Control, ControlParts};
use crate::login::{Idps, Login, LoginParts};
use crate::metrics::Metrics;
use crate::proxy::{DataPlane, DataPlaneParts};
use crate::revocation::engine::Notifier;
use crate::revocation::engine::{self, Engine};
use crate::revocation::log::RevocationLog;
use crate::revocation::meta::MetaIndex;
use crate::revocation::set::RevocationSet;
use crate::revocation::{RevocationRecord, Scope};
use crate::runtime::{Live, horizon_us};
use crate::session::keys::KeyRing;
use crate::session::registry::Registry;
use crate::sync::PeerSync;
use crate::sync::client::PeerClient;
use crate::sync::docs::PeerDocs;
use crate::sync::journal::{self, Journal};
use crate::sync::push::PeerPush;
use crate::sync::redis::{RedisBackend, RedisPush};
use crate::triggers::{Signals, SignalsParts};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

pub struct Node {
    pub node_id: String,
    /// The cluster backend in force, through the interfaces the services use.
    pub cluster: Cluster,
    /// Set with `backend = "redis"`.
    pub redis: Option<Arc<RedisBackend>>,
    pub state_dir: PathBuf,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub revocations: Arc<RevocationSet>,
    pub auth: Arc<Authenticator>,
    pub sessions: Arc<Registry>,
    pub engine: Arc<Engine>,
    pub sync: Arc<PeerSync>,
    /// SCIM state, account flags and applied signals, the same on every node.
    pub docs: Arc<DocStore>,
    pub signals: Arc<Signals>,
    pub login: Arc<Login>,
    /// The identity providers (`[[idp]]`): discovered in the background, kept in step
    /// with the config on reload.
    pub idps: Arc<Idps>,
    pub data: Arc<DataPlane>,
    pub control: Arc<Control>,
    docs_backend: DocsBackend,
    reload_lock: Mutex<()>,
}

/// Where this node's documents meet the other nodes'.
enum DocsBackend {
    Peers(Arc<PeerClient>),
    Redis(Arc<RedisDocs>),
}

impl DocsBackend {
    fn replicator(&self, live: &Arc<Live>) -> Arc<dyn DocReplicator> {
        match self {
            DocsBackend::Peers(client) => Arc::new(PeerDocs::new(live.clone(), client.clone())),
            DocsBackend::Redis(docs) => docs.clone(),
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.display().to_string();
    move |source| StartError::Io { what, path, source }
}

/// Replays the revocation log into `set`, drops what no token can match any more, and
/// opens the log for appends.
fn open_revocations(dir: &Path, into: &journal::Target<'_>) -> Result<RevocationLog, StartError> {
    let (log, records) = RevocationLog::open(&dir.join("revocations.log"))?;
    let horizon = into.horizon;
    let live_rec = |r: &RevocationRecord| r.not_before_us >= horizon || r.scope == Scope::All;
    let mut live = 0usize;
    for r in records.iter().filter(|r| live_rec(r)) {
        into.set.apply(r.scope, &r.target, r.not_before_us);
        into.ticker.observe(r.not_before_us);
        into.meta.insert(r.clone());
        live += 1;
    }
    tracing::info!(replayed = records.len(), live, "revocation log replayed");
    if live < records.len() {
        let stats = log.compact(live_rec)?;
        tracing::info!(
            kept = stats.kept,
            dropped = stats.dropped,
            "revocation log compacted"
        );
    }
    Ok(log)
}

/// What a node holds on disk, opened and replayed.
struct Durable {
    set: Arc<RevocationSet>,
    meta: Arc<MetaIndex>,
    revlog: RevocationLog,
    journal: Journal,
    audit: Arc<AuditLog>,
    sessions: Arc<Registry>,
    keys: KeyRing,
}

/// Opens the state folder: the revocation log and sync journal (replayed into the set),
/// the audit log, the session journal and the signing keys.
fn open_state(config: &Config, ticker: &Ticker) -> Result<Durable, StartError> {
    let dir = &config.state_dir;
    std::fs::create_dir_all(dir).map_err(io("cannot create state dir", dir))?;
    let now = ticker.now_us();
    let horizon = now - horizon_us(config);
    let (set, meta) = (
        Arc::new(RevocationSet::new()),
        Arc::new(MetaIndex::default()),
    );
    let into = journal::Target {
        set: &set,
        meta: &meta,
        ticker,
        horizon,
    };
    let revlog = open_revocations(dir, &into)?;
    // Entries learnt from peers by anti-entropy are durable in sync's own journal.
    let (journal, _) = Journal::open(dir, &into)?;
    Ok(Durable {
        set,
        meta,
        revlog,
        journal,
        audit: Arc::new(AuditLog::open(&dir.join("audit.log"))?),
        sessions: Arc::new(Registry::open_bounded(
            &dir.join("sessions.log"),
            now,
            config.limits.max_sessions,
        )?),
        keys: KeyRing::load_or_create(&dir.join("keys"))?,
    })
}

/// The Redis store and outbox when `backend = "redis"` (nothing is connected yet).
fn open_redis(
    live: &Live,
    state_dir: &Path,
    clock: Arc<dyn Clock>,
) -> Result<Option<(RedisStore, Arc<Outbox>)>, StartError> {
    let Some(r) = live.load().config.sync.redis.clone() else {
        return Ok(None);
    };
    let other = |e: String| StartError::Other(format!("sync.redis: {e}"));
    let mut cfg = RedisConfig::new(r.url);
    cfg.prefix = r.prefix;
    if let Some(p) = &r.password_file {
        let pw = RedisConfig::read_password_file(p).map_err(|e| other(e.to_string()))?;
        cfg.password = Some(pw);
    }
    if let Some(ca) = &r.ca_file {
        cfg.ca_pem = Some(std::fs::read(ca).map_err(io("cannot read sync.redis_ca_file", ca))?);
    }
    let store = RedisStore::new(cfg, clock).map_err(|e| other(e.to_string()))?;
    let outbox = Outbox::open(&state_dir.join("redis.outbox")).map_err(|e| other(e.to_string()))?;
    Ok(Some((store, Arc::new(outbox))))
}

/// The backend in force as the services see it: Redis when configured, else peers.
fn cluster_of(
    sync: &Arc<PeerSync>,
    redis: Option<&Arc<RedisBackend>>,
    sessions: &Registry,
) -> Cluster {
    match redis {
        Some(r) => {
            sessions.set_mirror(r.clone());
            Cluster {
                shared: r.clone(),
                directory: r.clone(),
                freshness: r.clone(),
                status: r.clone(),
            }
        }
        None => Cluster {
            shared: sync.shared.clone(),
            directory: sync.clone(),
            freshness: sync.clone(),
            status: sync.clone(),
        },
    }
}

fn route_table(e: matchit::InsertError) -> StartError {
    StartError::Other(format!("route table: {e}"))
}

impl Node {
    /// Builds the node: opens its durable state, then wires the services together,
    /// each with only what it needs.
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Node>, StartError> {
        let ticker = Arc::new(Ticker::new(clock));
        let d = open_state(&config, &ticker)?;
        let (node_id, state_dir) = (config.node_id.clone(), config.state_dir.clone());
        let metrics = Arc::new(Metrics::default());
        let cache = config.session.token_cache_capacity;
        let auth = Arc::new(Authenticator::new(
            d.keys,
            cache,
            d.set.clone(),
            ticker.clone(),
            metrics.clone(),
        ));
        let live = Arc::new(Live::new(config)?);
        metrics.config_generation.store(1, Ordering::Relaxed);
        let client = Arc::new(PeerClient::new(
            live.clone(),
            node_id.clone(),
            ticker.clone(),
        ));
        let redis = open_redis(&live, &state_dir, ticker.clock().clone())?;
        let notifier: Arc<dyn Notifier> = match &redis {
            Some((store, outbox)) => Arc::new(RedisPush::new(store.clone(), outbox.clone())),
            None => Arc::new(PeerPush::new(live.clone(), client.clone())),
        };
        let engine = Arc::new(Engine::new(engine::Parts {
            node_id: node_id.clone(),
            ticker: ticker.clone(),
            set: d.set.clone(),
            meta: d.meta,
            log: Arc::new(d.revlog),
            sessions: d.sessions.clone(),
            audit: d.audit,
            notifier,
            metrics: metrics.clone(),
        }));
        let docs_backend = match &redis {
            Some((store, _)) => DocsBackend::Redis(Arc::new(RedisDocs::new(store.clone()))),
            None => DocsBackend::Peers(client.clone()),
        };
        let docs = Arc::new(DocStore::open(
            &state_dir.join("docs.log"),
            &node_id,
            ticker.clone(),
            docs_backend.replicator(&live),
        )?);
        let journal = Arc::new(d.journal);
        let sync = Arc::new(PeerSync::new(
            live.clone(),
            engine.clone(),
            auth.clone(),
            client.clone(),
            d.sessions.clone(),
            journal.clone(),
            ticker,
        ));
        let redis = redis.map(|(store, outbox)| {
            let (l, e, s) = (live.clone(), engine.clone(), d.sessions.clone());
            Arc::new(RedisBackend::new(store, outbox, l, e, journal, s).with_docs(docs.clone()))
        });
        let cluster = cluster_of(&sync, redis.as_ref(), &d.sessions);
        let signals = Arc::new(Signals::new(SignalsParts {
            live: live.clone(),
            engine: engine.clone(),
            docs: docs.clone(),
            shared: cluster.shared.clone(),
            directory: cluster.directory.clone(),
            freshness: cluster.freshness.clone(),
        }));
        let (sessions, set) = (d.sessions, d.set);
        let console = Arc::new(
            Console::new(ConsoleParts {
                auth: auth.clone(),
                engine: engine.clone(),
                directory: cluster.directory.clone(),
                shared: cluster.shared.clone(),
                cluster: Arc::new(NodeCluster {
                    sync: sync.clone(),
                    status: cluster.status.clone(),
                }),
                audit_path: state_dir.join("audit.log"),
                user_status: Some(Arc::new(AccountStatus(signals.accounts().clone()))),
            })
            .map_err(route_table)?,
        );
        let idps = Arc::new(
            Idps::new(&live.load().config.idps, auth.now_us())
                .map_err(|e| StartError::Other(format!("identity providers: {e}")))?,
        );
        let login = Arc::new(
            Login::new(LoginParts {
                auth: auth.clone(),
                engine: engine.clone(),
                sessions: sessions.clone(),
                metrics: metrics.clone(),
                shared: cluster.shared.clone(),
                accounts: signals.accounts().clone(),
                directory: cluster.directory.clone(),
                idps: idps.clone(),
            })
            .map_err(route_table)?,
        );
        let data = Arc::new(DataPlane::new(DataPlaneParts {
            live: live.clone(),
            auth: auth.clone(),
            login: login.clone(),
            console,
            signals: signals.clone(),
            sessions: sessions.clone(),
            set: set.clone(),
            freshness: cluster.freshness.clone(),
            metrics: metrics.clone(),
        }));
        let control = Arc::new(
            Control::new(ControlParts {
                live: live.clone(),
                engine: engine.clone(),
                sync: sync.clone(),
                cluster: cluster.clone(),
                sessions: sessions.clone(),
                auth: auth.clone(),
                metrics: metrics.clone(),
                signals: signals.clone(),
                docs: docs.clone(),
            })
            .map_err(route_table)?,
        );
        if live.load().config.has_demo_user() {
            tracing::warn!(
                email = crate::config::DEMO_EMAIL,
                "the demo user is configured: remove it before exposing this gateway"
            );
        }
        Ok(Arc::new(Node {
            node_id,
            cluster,
            redis,
            state_dir,
            live,
            metrics,
            revocations: set,
            auth,
            sessions,
            engine,
            sync,
            docs,
            signals,
            login,
            idps,
            data,
            control,
            docs_backend,
            reload_lock: Mutex::new(()),
        }))
    }

    /// The background work of the signal triggers: keeping the documents in step with
    /// the other nodes (peer anti-entropy, or rounds with Redis), and the upkeep
    /// (recovery of missing SCIM revocations, expired markers).
    pub fn spawn_signals(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let docs = self.docs.clone();
        let in_step = match &self.docs_backend {
            DocsBackend::Peers(client) => tokio::spawn(crate::sync::docs::run(
                docs,
                client.clone(),
                self.live.clone(),
                shutdown.clone(),
            )),
            DocsBackend::Redis(redis_docs) => {
                let every = self.live.load().config.sync.anti_entropy_interval;
                tokio::spawn(crate::cluster::docs_redis::run(
                    docs,
                    redis_docs.clone(),
                    every,
                    shutdown.clone(),
                ))
            }
        };
        vec![in_step, self.signals.spawn(shutdown)]
    }

    pub fn generation(&self) -> u64 {
        self.live.generation()
    }

    pub fn now_us(&self) -> i64 {
        self.engine.now_us()
    }

    /// Re-reads the config file (and certificates and keys); on success swaps the whole
    /// runtime, on failure keeps serving the old one and returns why.
    pub fn reload(&self) -> Result<u64, StartError> {
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.try_reload() {
            Ok(generation) => {
                self.metrics
                    .config_generation
                    .store(generation, Ordering::Relaxed);
                tracing::info!(generation, "config reloaded; new generation is live");
                Ok(generation)
            }
            Err(e) => {
                self.metrics
                    .config_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, generation = self.generation(), "config reload refused; the previous config keeps serving");
                Err(e)
            }
        }
    }

    fn try_reload(&self) -> Result<u64, StartError> {
        let config = Config::load(self.live.config_path(), Secrets::Create)?;
        warn_restart_only(&self.live.load().config, &config);
        let keys = KeyRing::load(&self.state_dir.join("keys"))?;
        let runtime = self.live.next(config)?;
        let generation = runtime.generation;
        self.auth.replace_keys(keys);
        self.live.install(runtime);
        // Unchanged IdPs keep their discovery; new or changed ones are discovered now.
        self.idps
            .reconfigure(&self.live.load().config.idps, self.now_us());
        Ok(generation)
    }

    /// The horizon before which revocations can match no live token.
    pub fn revocation_horizon(&self) -> i64 {
        self.now_us() - self.live.load().revocation_horizon_us()
    }
}

/// Settings a reload reads but cannot apply: say so.
fn warn_restart_only(old: &Config, new: &Config) {
    for (what, changed) in [
        ("gateway.listen", new.listen != old.listen),
        ("gateway.http_listen", new.http_listen != old.http_listen),
        ("gateway.state_dir", new.state_dir != old.state_dir),
        ("gateway.node_id", new.node_id != old.node_id),
        ("control.listen", new.control.listen != old.control.listen),
    ] {
        if changed {
            tracing::warn!(field = what, "this setting changes only on restart");
        }
    }
}
