//! The live configuration: one validated config generation and everything derived from
//! it once (host table, TLS acceptor config, user table, peer token), swapped whole on
//! reload, so the request path only does lookups and never sees half a reload.

use crate::config::{App, Config, User};
use arc_swap::{ArcSwap, Guard};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("sync.peer_token_file: cannot read {0}")]
    PeerToken(String),
}

/// One config generation.
pub struct Runtime {
    pub generation: u64,
    pub config: Arc<Config>,
    pub hosts: HashMap<String, Arc<App>>,
    pub tls: Arc<rustls::ServerConfig>,
    /// The control port's TLS (none: plain HTTP), read per connection.
    pub control_tls: Option<Arc<rustls::ServerConfig>>,
    /// For calls to `https://` peers, read per new connection.
    pub peer_tls: Arc<rustls::ClientConfig>,
    pub users: HashMap<String, User>,
    pub trusted: Vec<IpNet>,
    pub peer_token_sha256: Option<[u8; 32]>,
    /// The peer token itself, sent on calls to peers.
    pub peer_token: Option<String>,
    pub max_token_lifetime: Duration,
}

impl Runtime {
    pub fn build(config: Config, generation: u64) -> Result<Runtime, RuntimeError> {
        let tls = crate::tls::server_config(&config)?;
        let control_tls = match &config.control.tls {
            Some(t) => Some(crate::tls::control_server_config(t)?),
            None => None,
        };
        let https_peers = config.sync.peers.iter().any(|p| p.starts_with("https://"));
        let peer_tls = crate::tls::peer_client_config(&config.sync.tls, https_peers)?;
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
            return Err(RuntimeError::PeerToken(
                config.sync.peer_token_file.display().to_string(),
            ));
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
            control_tls,
            peer_tls,
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

    /// Revocations older than this (microseconds before now) can match no live token.
    pub fn revocation_horizon_us(&self) -> i64 {
        horizon_us(&self.config)
    }
}

/// How far back a revocation can still match a live token: the longest token lifetime
/// plus the clock skew allowed.
pub fn horizon_us(config: &Config) -> i64 {
    (config.max_token_lifetime() + config.session.clock_skew).as_micros() as i64
}

fn read_token(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The generation in force, swapped whole by [`Live::install`].
pub struct Live {
    current: ArcSwap<Runtime>,
    generation: AtomicU64,
    config_path: PathBuf,
}

impl Live {
    pub fn new(config: Config) -> Result<Live, RuntimeError> {
        let config_path = config.source.clone();
        Ok(Live {
            current: ArcSwap::from_pointee(Runtime::build(config, 1)?),
            generation: AtomicU64::new(1),
            config_path,
        })
    }

    pub fn load(&self) -> Guard<Arc<Runtime>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Builds the next generation from `config` without installing it.
    pub fn next(&self, config: Config) -> Result<Runtime, RuntimeError> {
        Runtime::build(config, self.generation() + 1)
    }

    pub fn install(&self, rt: Runtime) {
        let generation = rt.generation;
        self.current.store(Arc::new(rt));
        self.generation.store(generation, Ordering::SeqCst);
    }
}
