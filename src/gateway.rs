//! The gateway's shared state: the live config generation (swapped whole on reload),
//! the key ring, token cache, revocation set and log, session registry and audit log.

use crate::audit::AuditLog;
use crate::clock::{Clock, Micros, Ticker};
use crate::config::{App, Config, ConfigError, Secrets, User};
use crate::login::codes::Codes;
use crate::login::limiter::Limiter;
use crate::metrics::Metrics;
use crate::proxy::body::Body;
use crate::revocation::log::RevocationLog;
use crate::revocation::set::RevocationSet;
use crate::session::keys::{KeyError, KeyRing};
use crate::session::registry::Registry;
use crate::session::token::Verifier;
use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub type OriginClient = Client<HttpConnector, Body>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("revocation log: {0}")]
    RevocationLog(#[from] crate::revocation::log::LogError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// One validated config generation and everything derived from it once, so the
/// request path only does lookups.
pub struct Runtime {
    pub generation: u64,
    pub config: Arc<Config>,
    pub hosts: HashMap<String, Arc<App>>,
    pub tls: Arc<rustls::ServerConfig>,
    pub users: HashMap<String, User>,
    pub trusted: Vec<IpNet>,
    pub peer_token_sha256: Option<[u8; 32]>,
    /// The peer token itself, sent on calls to peers.
    pub peer_token: Option<String>,
    pub max_token_lifetime: Duration,
}

impl Runtime {
    fn build(config: Config, generation: u64) -> Result<Runtime, StartError> {
        let tls = crate::tls::server_config(&config)?;
        let mut hosts = HashMap::new();
        for app in &config.apps {
            for h in &app.hosts {
                hosts.insert(h.clone(), app.clone());
            }
        }
        let users = config
            .users
            .iter()
            .map(|u| (u.email.clone(), u.clone()))
            .collect();
        let peer_token = read_token(&config.sync.peer_token_file);
        if !config.sync.peers.is_empty() && peer_token.is_none() {
            return Err(StartError::Other(format!(
                "sync.peer_token_file: cannot read {}",
                config.sync.peer_token_file.display()
            )));
        }
        let peer_token_sha256 = peer_token.as_deref().map(|t| {
            use sha2::Digest;
            sha2::Sha256::digest(t.as_bytes()).into()
        });
        Ok(Runtime {
            generation,
            trusted: config.trusted_proxies.clone(),
            max_token_lifetime: config.max_token_lifetime(),
            config: Arc::new(config),
            hosts,
            tls,
            users,
            peer_token_sha256,
            peer_token,
        })
    }

    pub fn app_for_host(&self, host: &str) -> Option<&Arc<App>> {
        self.hosts.get(host)
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        !self.trusted.is_empty() && self.trusted.iter().any(|n| n.contains(&ip))
    }
}

fn read_token(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

pub struct Gateway {
    pub ticker: Ticker,
    pub runtime: ArcSwap<Runtime>,
    pub keys: ArcSwap<KeyRing>,
    pub verifier: Verifier,
    pub revocations: RevocationSet,
    pub revlog: RevocationLog,
    pub audit: AuditLog,
    pub registry: Registry,
    pub codes: Codes,
    pub limiter: Limiter,
    pub metrics: Metrics,
    pub client: OriginClient,
    pub node_id: String,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub ready: AtomicBool,
    pub peers: crate::sync::PeerHealth,
    pub started_us: Micros,
    generation: AtomicU64,
    reload_lock: std::sync::Mutex<()>,
}

impl Gateway {
    /// Builds the gateway from a validated config: loads or creates keys, replays the
    /// revocation log and the session journal.
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Gateway>, StartError> {
        let ticker = Ticker::new(clock);
        let now = ticker.now_us();
        let state_dir = config.state_dir.clone();
        std::fs::create_dir_all(&state_dir).map_err(|source| StartError::Io {
            what: "cannot create state dir",
            path: state_dir.display().to_string(),
            source,
        })?;
        let keys = KeyRing::load_or_create(&state_dir.join("keys"))?;
        let (revlog, records) = RevocationLog::open(&state_dir.join("revocations.log"))?;
        let revocations = RevocationSet::new();
        let horizon = now - horizon_us(&config);
        let mut live = 0usize;
        for r in &records {
            if r.not_before_us >= horizon || r.scope == crate::revocation::Scope::All {
                revocations.apply(r.scope, &r.target, r.not_before_us);
                ticker.observe(r.not_before_us);
                live += 1;
            }
        }
        tracing::info!(replayed = records.len(), live, "revocation log replayed");
        // Entries learnt from peers by anti-entropy are durable in sync's own journal.
        crate::sync::journal::replay(&state_dir, &revocations, &ticker, horizon);
        if live < records.len() {
            // Drop what no token can match any more, so the log does not grow forever.
            let stats = revlog.compact(|r| {
                r.scope == crate::revocation::Scope::All || r.not_before_us >= horizon
            })?;
            tracing::info!(
                kept = stats.kept,
                dropped = stats.dropped,
                "revocation log compacted"
            );
        }
        let audit = AuditLog::open(&state_dir.join("audit.log"))?;
        let registry = Registry::open(&state_dir.join("sessions.log"), now).map_err(|source| {
            StartError::Io {
                what: "session journal",
                path: state_dir.join("sessions.log").display().to_string(),
                source,
            }
        })?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.origin_connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let verifier = Verifier::new(config.session.token_cache_capacity);
        let node_id = config.node_id.clone();
        let config_path = config.source.clone();
        let runtime = Runtime::build(config, 1)?;
        let metrics = Metrics::default();
        metrics.config_generation.store(1, Ordering::Relaxed);
        let gw = Arc::new(Gateway {
            ticker,
            runtime: ArcSwap::from_pointee(runtime),
            keys: ArcSwap::from_pointee(keys),
            verifier,
            revocations,
            revlog,
            audit,
            registry,
            codes: Codes::default(),
            limiter: Limiter::default(),
            metrics,
            client,
            node_id,
            state_dir,
            config_path,
            ready: AtomicBool::new(false),
            peers: crate::sync::PeerHealth::default(),
            started_us: now,
            generation: AtomicU64::new(1),
            reload_lock: std::sync::Mutex::new(()),
        });
        let rt = gw.runtime.load();
        if rt.config.has_demo_user() {
            tracing::warn!(
                email = crate::config::DEMO_EMAIL,
                "the demo user is configured: remove it before exposing this gateway"
            );
        }
        Ok(gw)
    }

    pub fn now_us(&self) -> Micros {
        self.ticker.now_us()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Re-reads the config file (and certificates and keys); on success swaps the whole
    /// runtime, on failure keeps serving the old one and returns why.
    pub fn reload(&self) -> Result<u64, StartError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.try_reload();
        match &result {
            Ok(generation) => {
                self.metrics
                    .config_generation
                    .store(*generation, Ordering::Relaxed);
                tracing::info!(generation, "config reloaded; new generation is live");
            }
            Err(e) => {
                self.metrics
                    .config_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, generation = self.generation(), "config reload refused; the previous config keeps serving");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<u64, StartError> {
        let config = Config::load(&self.config_path, Secrets::Create)?;
        let old = self.runtime.load();
        for (what, changed) in [
            ("gateway.listen", config.listen != old.config.listen),
            (
                "gateway.http_listen",
                config.http_listen != old.config.http_listen,
            ),
            (
                "gateway.state_dir",
                config.state_dir != old.config.state_dir,
            ),
            ("gateway.node_id", config.node_id != old.config.node_id),
            (
                "control.listen",
                config.control.listen != old.config.control.listen,
            ),
        ] {
            if changed {
                tracing::warn!(field = what, "this setting changes only on restart");
            }
        }
        let keys = KeyRing::load(&self.state_dir.join("keys"))?;
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        let runtime = Runtime::build(config, generation)?;
        let old_kids: Vec<String> = self.keys.load().kids().cloned().collect();
        if keys.kids().any(|k| !old_kids.contains(k)) || keys.kids().count() != old_kids.len() {
            // A key left the ring: cached verifications made with it must go too.
            self.verifier.clear();
        }
        self.keys.store(Arc::new(keys));
        self.runtime.store(Arc::new(runtime));
        self.generation.store(generation, Ordering::SeqCst);
        Ok(generation)
    }

    /// The horizon before which revocations can match no live token.
    pub fn revocation_horizon(&self) -> Micros {
        self.now_us() - horizon_us(&self.runtime.load().config)
    }
}

fn horizon_us(config: &Config) -> Micros {
    (config.max_token_lifetime() + config.session.clock_skew).as_micros() as Micros
}
