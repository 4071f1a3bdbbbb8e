//! Configuration: `file` holds what operators write; this module turns it into a
//! validated, immutable [`Config`]. Errors name the file, the field path and the reason.

pub mod certs;
pub mod console;
pub mod file;
pub mod idp;
pub mod limits;
mod signals;

pub use signals::{ScimConfig, SignalsConfig};

pub use certs::{CertKey, ControlTls, PeerTls};

use file::{AckMode, FileConfig, LogFile, OnStale, SameSite, Unauthenticated};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: TOML syntax error: {reason}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{file}: {field}: {reason}")]
    Field {
        file: String,
        field: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub public_port: Option<u16>,
    pub auth_domain: String,
    pub issuer: String,
    pub state_dir: PathBuf,
    pub node_id: String,
    pub trusted_proxies: Vec<IpNet>,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub origin_connect_timeout: Duration,
    pub origin_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Worker threads for the runtime (0: one per core).
    pub workers: usize,
    pub tls: TlsConfig,
    pub session: SessionConfig,
    pub login: LoginConfig,
    pub control: ControlConfig,
    pub sync: SyncConfig,
    pub log: LogFile,
    pub limits: limits::Limits,
    pub apps: Vec<Arc<App>>,
    pub users: Vec<User>,
    pub idps: Vec<idp::IdpConfig>,
    /// The admin console; None: no console.
    pub console: Option<console::ConsoleConfig>,
    /// `[scim]`: the SCIM service provider, when configured.
    pub scim: Option<ScimConfig>,
    /// `[[signals.ssf]]` and `[[signals.webhook]]`.
    pub signals: SignalsConfig,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generate_self_signed: bool,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub global_duration: Duration,
    pub relogin_lockout: Duration,
    pub token_cache_capacity: u64,
    pub code_ttl: Duration,
    pub clock_skew: Duration,
}

#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub max_failures_per_user: u32,
    pub max_failures_per_ip: u32,
    pub failure_window: Duration,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    pub admins: Vec<Admin>,
    /// HTTPS on the control port (none: plain HTTP).
    pub tls: Option<ControlTls>,
}

#[derive(Clone)]
pub struct Admin {
    pub name: String,
    pub token_sha256: [u8; 32],
    /// Where the token itself lives, when the config names a file (the CLI reads it).
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("name", &self.name).finish()
    }
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub peers: Vec<String>,
    pub peer_token_file: PathBuf,
    pub ack: AckMode,
    pub ack_timeout: Duration,
    pub anti_entropy_interval: Duration,
    pub max_staleness: Option<Duration>,
    pub on_stale: OnStale,
    pub startup_sync_timeout: Duration,
    pub tls: PeerTls,
    /// Set when `backend = "redis"`.
    pub redis: Option<RedisSettings>,
}

/// Where the Redis backend connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Echo,
    /// `authority` is the origin's `host:port`, the port filled in.
    Http {
        base: http::Uri,
        authority: std::sync::Arc<str>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailPattern {
    Any,
    Domain(String),
    Exact(String),
}

impl EmailPattern {
    pub fn matches(&self, email: &str) -> bool {
        match self {
            EmailPattern::Any => true,
            EmailPattern::Exact(e) => e.eq_ignore_ascii_case(email),
            EmailPattern::Domain(d) => email
                .rsplit_once('@')
                .is_some_and(|(_, dom)| dom.eq_ignore_ascii_case(d)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub hosts: Vec<String>,
    pub origin: Origin,
    pub session_duration: Duration,
    pub http_only: bool,
    pub same_site: SameSite,
    pub binding_cookie: bool,
    pub allow_emails: Vec<EmailPattern>,
    pub allow_groups: Vec<String>,
    pub unauthenticated: Unauthenticated,
    pub pass_gateway_cookies: bool,
    pub preserve_host: bool,
    pub origin_timeout: Duration,
}

impl App {
    /// The policy: a user is let in when any email pattern or any group matches.
    pub fn allows(&self, email: &str, groups: &[String]) -> bool {
        self.allow_emails.iter().any(|p| p.matches(email))
            || self
                .allow_groups
                .iter()
                .any(|g| groups.iter().any(|ug| ug == g))
    }
}

#[derive(Clone)]
pub struct User {
    pub email: String,
    pub password_hash: String,
    pub groups: Vec<String>,
    pub disabled: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Whether loading may create missing secret files (admin and peer tokens). `check`
/// never writes anything; `run` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    Create,
    ReadOnly,
}

pub const DEMO_EMAIL: &str = "demo@example.com";

impl Config {
    pub fn load(path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, path, secrets)
    }

    pub fn parse(text: &str, path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                file: file.clone(),
                line,
                column,
                reason: e.message().to_string(),
            }
        })?;
        let raw: FileConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Field {
                file: file.clone(),
                // (An unknown key named "" at the top level has an empty path: found
                // by `fuzz/` config.)
                field: if path == "." || path.is_empty() {
                    "(top level)".into()
                } else {
                    path
                },
                reason: e.into_inner().to_string(),
            }
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Validator {
            file,
            base,
            secrets,
        }
        .validate(raw, path)
    }

    pub fn app_by_name(&self, name: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The longest any token can live: revocations older than this (plus skew) can match nothing.
    pub fn max_token_lifetime(&self) -> Duration {
        self.apps
            .iter()
            .map(|a| a.session_duration)
            .chain(std::iter::once(self.session.global_duration))
            .max()
            .unwrap_or(self.session.global_duration)
    }

    pub fn has_demo_user(&self) -> bool {
        self.users
            .iter()
            .any(|u| u.email == DEMO_EMAIL && !u.disabled)
    }

    /// Every host name the data plane answers for (for the dev certificate).
    pub fn all_hosts(&self) -> Vec<String> {
        let mut hosts = vec![self.auth_domain.clone()];
        for app in &self.apps {
            hosts.extend(app.hosts.iter().cloned());
        }
        hosts
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Validator {
    file: String,
    base: PathBuf,
    secrets: Secrets,
}

impl Validator {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            file: self.file.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn addr(&self, field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
        s.parse().map_err(|_| {
            self.err(
                field,
                format!("{s:?} is not an address like 127.0.0.1:8443"),
            )
        })
    }

    fn validate(self, raw: FileConfig, source: &Path) -> Result<Config, ConfigError> {
        let g = &raw.gateway;
        let listen = self.addr("gateway.listen", &g.listen)?;
        let http_listen = match &g.http_listen {
            Some(s) => Some(self.addr("gateway.http_listen", s)?),
            None => None,
        };
        let auth_domain = self.gateway_names(g)?;
        let trusted_proxies = self.trusted_proxies(&g.trusted_proxies)?;
        if g.max_header_bytes < 1024 {
            return Err(self.err("gateway.max_header_bytes", "must be at least 1024"));
        }
        let issuer = g
            .issuer
            .clone()
            .unwrap_or_else(|| format!("https://{auth_domain}"));

        let session = self.session(&raw.session)?;

        let control = ControlConfig {
            listen: self.addr("control.listen", &raw.control.listen)?,
            admins: self.admins(&raw)?,
            tls: self.control_tls(&raw.control)?,
        };

        let sync = self.sync(&raw, control.tls.as_ref())?;
        let apps = self.apps(&raw, &auth_domain, g.origin_timeout.0)?;
        let users = self.users(&raw)?;
        let idps = idp::validate(&raw.idps, &self.base)
            .map_err(|(field, reason)| self.err(field, reason))?;
        let console = match &raw.console {
            Some(c) => Some(console::validate(c).map_err(|(f, r)| self.err(f, r))?),
            None => None,
        };
        let scim = self.scim(raw.scim.as_ref())?;
        let signals = self.signals(&raw.signals)?;

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            return Err(self.err("log.level", format!("{e}")));
        }
        let limits = limits::validate(&raw.limits).map_err(|(f, r)| self.err(f, r))?;
        let access_log_file = match raw.log.access_log_file.as_deref().map(Path::to_str) {
            None => None,
            Some(Some(p)) if !p.trim().is_empty() => Some(self.path(p)),
            Some(_) => return Err(self.err("log.access_log_file", "must be a non-empty path")),
        };

        Ok(Config {
            source: source.to_path_buf(),
            listen,
            http_listen,
            public_port: g.public_port,
            auth_domain,
            issuer,
            state_dir: self.path(&g.state_dir),
            node_id: g.node_id.clone(),
            trusted_proxies,
            max_header_bytes: g.max_header_bytes,
            max_body_bytes: g.max_body_bytes,
            origin_connect_timeout: g.origin_connect_timeout.0,
            origin_timeout: g.origin_timeout.0,
            shutdown_grace: g.shutdown_grace.0,
            workers: g.workers,
            tls: TlsConfig {
                cert: self.path(&raw.tls.cert),
                key: self.path(&raw.tls.key),
                generate_self_signed: raw.tls.generate_self_signed,
            },
            session,
            login: LoginConfig {
                max_failures_per_user: raw.login.max_failures_per_user.max(1),
                max_failures_per_ip: raw.login.max_failures_per_ip.max(1),
                failure_window: raw.login.failure_window.0,
            },
            control,
            sync,
            log: LogFile {
                access_log_file,
                ..raw.log
            },
            limits,
            apps,
            users,
            idps,
            console,
            scim,
            signals,
        })
    }

    /// The auth domain (lowercased), after checking it and the node's names.
    fn gateway_names(&self, g: &file::GatewayFile) -> Result<String, ConfigError> {
        let auth_domain = g.auth_domain.trim().to_ascii_lowercase();
        if !valid_host(&auth_domain) {
            return Err(self.err(
                "gateway.auth_domain",
                format!("{:?} is not a host name", g.auth_domain),
            ));
        }
        if g.node_id.trim().is_empty() {
            return Err(self.err("gateway.node_id", "must not be empty"));
        }
        if g.state_dir.trim().is_empty() {
            return Err(self.err("gateway.state_dir", "must not be empty"));
        }
        Ok(auth_domain)
    }

    fn trusted_proxies(&self, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
        let mut nets = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let net = t
                .parse::<IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.err(
                        format!("gateway.trusted_proxies[{i}]"),
                        format!("{t:?} is not an IP address or CIDR range"),
                    )
                })?;
            nets.push(net);
        }
        Ok(nets)
    }

    fn session(&self, s: &file::SessionFile) -> Result<SessionConfig, ConfigError> {
        if s.global_duration.0 < Duration::from_secs(60) {
            return Err(self.err("session.global_duration", "must be at least 1m"));
        }
        if s.token_cache_capacity == 0 {
            return Err(self.err("session.token_cache_capacity", "must be at least 1"));
        }
        Ok(SessionConfig {
            global_duration: s.global_duration.0,
            relogin_lockout: s.relogin_lockout.0,
            token_cache_capacity: s.token_cache_capacity,
            code_ttl: s.code_ttl.0,
            clock_skew: s.clock_skew.0,
        })
    }

    fn admins(&self, raw: &FileConfig) -> Result<Vec<Admin>, ConfigError> {
        let mut admins = Vec::new();
        let mut names = HashSet::new();
        for (i, a) in raw.control.admin.iter().enumerate() {
            let f = |k: &str| format!("control.admin[{i}].{k}");
            if a.name.trim().is_empty() {
                return Err(self.err(f("name"), "must not be empty"));
            }
            if !names.insert(a.name.clone()) {
                return Err(self.err(f("name"), format!("{:?} appears twice", a.name)));
            }
            let (token_sha256, token_file) = match (&a.token_sha256, &a.token_file) {
                (Some(h), None) => {
                    let bytes = hex::decode(h.trim()).ok().filter(|b| b.len() == 32);
                    let Some(bytes) = bytes else {
                        return Err(self.err(
                            f("token_sha256"),
                            "must be 64 hex digits (sha256 of the token)",
                        ));
                    };
                    let mut out = [0u8; 32];
                    out.copy_from_slice(&bytes);
                    (out, None)
                }
                (None, Some(p)) => {
                    let path = self.path(p);
                    let token = self
                        .secret_file(&path)
                        .map_err(|reason| self.err(f("token_file"), reason))?;
                    (Sha256::digest(token.as_bytes()).into(), Some(path))
                }
                _ => {
                    return Err(self.err(
                        format!("control.admin[{i}]"),
                        "set exactly one of token_sha256 or token_file",
                    ));
                }
            };
            admins.push(Admin {
                name: a.name.clone(),
                token_sha256,
                token_file,
            });
        }
        Ok(admins)
    }

    /// Reads a token file; when running (not `check`) a missing file is created with a
    /// fresh random token, readable only by its owner.
    fn secret_file(&self, path: &Path) -> Result<String, String> {
        match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => {
                crate::secrets::check_private(path)?;
                Ok(s.trim().to_string())
            }
            Ok(_) => Err(format!("{} is empty", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.secrets {
                Secrets::ReadOnly => Ok(String::new()),
                Secrets::Create => crate::secrets::create_token_file(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display())),
            },
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn sync(
        &self,
        raw: &FileConfig,
        control: Option<&ControlTls>,
    ) -> Result<SyncConfig, ConfigError> {
        let s = &raw.sync;
        let mut peers = Vec::new();
        for (i, p) in s.peers.iter().enumerate() {
            let uri: http::Uri = p
                .parse()
                .map_err(|_| self.err(format!("sync.peers[{i}]"), format!("{p:?} is not a URL")))?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            if !scheme_ok || uri.host().is_none() {
                return Err(self.err(
                    format!("sync.peers[{i}]"),
                    format!("{p:?} must be an http:// or https:// URL of a peer's control port"),
                ));
            }
            peers.push(p.trim_end_matches('/').to_string());
        }
        let peer_token_file = self.path(s.peer_token_file.as_deref().unwrap_or("state/peer.token"));
        if !peers.is_empty() {
            self.secret_file(&peer_token_file)
                .map_err(|r| self.err("sync.peer_token_file", r))?;
        } else if peer_token_file.exists() {
            // Read (and accepted from peers) whenever it exists.
            crate::secrets::check_private(&peer_token_file)
                .map_err(|r| self.err("sync.peer_token_file", r))?;
        }
        let https = peers.iter().any(|p| p.starts_with("https://"));
        let tls = self.peer_tls(s, https, control)?;
        Ok(SyncConfig {
            tls,
            peers,
            peer_token_file,
            ack: s.ack.unwrap_or(AckMode::Local),
            ack_timeout: s.ack_timeout.map_or(Duration::from_secs(2), |d| d.0),
            anti_entropy_interval: s
                .anti_entropy_interval
                .map_or(Duration::from_secs(5), |d| d.0),
            max_staleness: s.max_staleness.map(|d| d.0),
            on_stale: s.on_stale.unwrap_or(OnStale::Serve),
            startup_sync_timeout: s
                .startup_sync_timeout
                .map_or(Duration::from_secs(5), |d| d.0),
            redis: self.redis(s)?,
        })
    }

    /// `backend = "redis"` and its settings; none of them without it.
    fn redis(&self, s: &file::SyncFile) -> Result<Option<RedisSettings>, ConfigError> {
        if s.backend != file::BackendKind::Redis {
            for (field, set) in [
                ("sync.redis_url", s.redis_url.is_some()),
                ("sync.redis_password_file", s.redis_password_file.is_some()),
                ("sync.redis_prefix", s.redis_prefix.is_some()),
                ("sync.redis_ca_file", s.redis_ca_file.is_some()),
            ] {
                if set {
                    return Err(self.err(field, "only used with backend = \"redis\""));
                }
            }
            return Ok(None);
        }
        if !s.peers.is_empty() {
            return Err(self.err(
                "sync.peers",
                "not used with backend = \"redis\": the nodes meet in Redis",
            ));
        }
        let url = s
            .redis_url
            .as_deref()
            .ok_or_else(|| self.err("sync.redis_url", "backend = \"redis\" needs redis_url"))?;
        let parsed = url::Url::parse(url)
            .map_err(|_| self.err("sync.redis_url", "not a URL like redis://127.0.0.1:6379/0"))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
            return Err(self.err(
                "sync.redis_url",
                "must be redis://host:port/db or rediss://…",
            ));
        }
        let readable = |field: &str, p: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            let Some(p) = p else { return Ok(None) };
            let path = self.path(p);
            std::fs::metadata(&path)
                .map_err(|e| self.err(field, format!("cannot read {}: {e}", path.display())))?;
            Ok(Some(path))
        };
        let prefix = s
            .redis_prefix
            .clone()
            .unwrap_or_else(|| "portcullis".into());
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err("sync.redis_prefix", "must be a non-empty word"));
        }
        Ok(Some(RedisSettings {
            url: url.to_string(),
            password_file: readable("sync.redis_password_file", &s.redis_password_file)?,
            prefix,
            ca_file: readable("sync.redis_ca_file", &s.redis_ca_file)?,
        }))
    }

    fn apps(
        &self,
        raw: &FileConfig,
        auth_domain: &str,
        default_timeout: Duration,
    ) -> Result<Vec<Arc<App>>, ConfigError> {
        let mut apps = Vec::new();
        let mut names = HashSet::new();
        let mut hosts_seen = HashSet::new();
        for (i, a) in raw.apps.iter().enumerate() {
            let f = |k: &str| format!("app[{i}].{k}");
            let name_ok = !a.name.is_empty()
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                return Err(self.err(f("name"), "must be letters, digits, '-' or '_'"));
            }
            if !names.insert(a.name.clone()) {
                return Err(self.err(f("name"), format!("{:?} appears twice", a.name)));
            }
            if a.hosts.is_empty() {
                return Err(self.err(f("hosts"), "list at least one host"));
            }
            let hosts = self.app_hosts(i, &a.hosts, auth_domain, &mut hosts_seen)?;
            let origin = parse_origin(&a.origin).map_err(|r| self.err(f("origin"), r))?;
            let mut allow_emails = Vec::new();
            for (j, p) in a.allow_emails.iter().enumerate() {
                allow_emails.push(
                    parse_email_pattern(p)
                        .map_err(|r| self.err(format!("app[{i}].allow_emails[{j}]"), r))?,
                );
            }
            if allow_emails.is_empty() && a.allow_groups.is_empty() {
                return Err(self.err(
                    f("allow_emails"),
                    "no policy: set allow_emails and/or allow_groups (allow_emails = [\"*\"] lets every signed-in user in)",
                ));
            }
            if a.session_duration.0 < Duration::from_secs(1) {
                return Err(self.err(f("session_duration"), "must be at least 1s"));
            }
            apps.push(Arc::new(App {
                name: a.name.clone(),
                hosts,
                origin,
                session_duration: a.session_duration.0,
                http_only: a.http_only,
                same_site: a.same_site,
                binding_cookie: a.binding_cookie,
                allow_emails,
                allow_groups: a.allow_groups.clone(),
                unauthenticated: a.unauthenticated,
                pass_gateway_cookies: a.pass_gateway_cookies,
                preserve_host: a.preserve_host,
                origin_timeout: a.origin_timeout.map_or(default_timeout, |d| d.0),
            }));
        }
        Ok(apps)
    }

    /// An app's hosts, lowercased; each a host name, not the auth domain, and not
    /// another app's.
    fn app_hosts(
        &self,
        i: usize,
        list: &[String],
        auth_domain: &str,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut hosts = Vec::new();
        for (j, h) in list.iter().enumerate() {
            let field = format!("app[{i}].hosts[{j}]");
            let h = h.trim().to_ascii_lowercase();
            if !valid_host(&h) {
                let why = format!("{h:?} is not a host name (no scheme or port)");
                return Err(self.err(field, why));
            }
            if h == auth_domain {
                return Err(self.err(field, "is the auth domain; an app needs its own host"));
            }
            if !seen.insert(h.clone()) {
                return Err(self.err(field, format!("{h:?} already belongs to another app")));
            }
            hosts.push(h);
        }
        Ok(hosts)
    }

    fn users(&self, raw: &FileConfig) -> Result<Vec<User>, ConfigError> {
        let mut users = Vec::new();
        let mut seen = HashSet::new();
        for (i, u) in raw.users.iter().enumerate() {
            let f = |k: &str| format!("user[{i}].{k}");
            let email = u.email.trim().to_ascii_lowercase();
            if !valid_email(&email) {
                return Err(self.err(f("email"), format!("{:?} is not an email address", u.email)));
            }
            if !seen.insert(email.clone()) {
                return Err(self.err(f("email"), format!("{email:?} appears twice")));
            }
            match argon2::PasswordHash::new(&u.password_hash) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                _ => {
                    return Err(self.err(
                        f("password_hash"),
                        "must be an argon2 PHC string (make one with `portcullis hash-password`)",
                    ));
                }
            }
            users.push(User {
                email,
                password_hash: u.password_hash.clone(),
                groups: u.groups.clone(),
                disabled: u.disabled,
            });
        }
        Ok(users)
    }
}

pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_email(e: &str) -> bool {
    match e.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(|c: char| c.is_whitespace() || c == '@')
                && valid_host(domain)
        }
        None => false,
    }
}

fn parse_email_pattern(p: &str) -> Result<EmailPattern, String> {
    let p = p.trim().to_ascii_lowercase();
    if p == "*" {
        return Ok(EmailPattern::Any);
    }
    if let Some(domain) = p.strip_prefix("*@") {
        if valid_host(domain) {
            return Ok(EmailPattern::Domain(domain.to_string()));
        }
    } else if valid_email(&p) {
        return Ok(EmailPattern::Exact(p));
    }
    Err(format!("{p:?} is not an email, \"*@domain\" or \"*\""))
}

fn parse_origin(s: &str) -> Result<Origin, String> {
    if s == "builtin:echo" {
        return Ok(Origin::Echo);
    }
    if let Some(other) = s.strip_prefix("builtin:") {
        return Err(format!("unknown built-in origin {other:?} (known: echo)"));
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("{s:?} is not a URL like http://127.0.0.1:3000"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https origins are not supported yet; use http:// on a private network".into(),
            );
        }
        _ => return Err(format!("{s:?} must start with http:// or be builtin:echo")),
    }
    if uri.host().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{s:?} must not have a query"));
    }
    let host = uri.host().unwrap_or_default();
    let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80)).into();
    Ok(Origin::Http {
        base: uri,
        authority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[gateway]
listen = "127.0.0.1:0"
auth_domain = "auth.localhost"
[control]
listen = "127.0.0.1:0"
[[app]]
name = "a"
hosts = ["a.localhost"]
origin = "builtin:echo"
allow_emails = ["*@example.com"]
[[app]]
name = "b"
hosts = ["b.localhost"]
origin = "http://127.0.0.1:9"
allow_groups = ["staff"]
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/tmp/x/gateway.toml"), Secrets::ReadOnly)
    }

    #[test]
    fn base_parses() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.apps.len(), 2);
        assert_eq!(c.session.global_duration, Duration::from_secs(86400));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x/state"));
    }

    #[test]
    fn origin_authority_has_its_port() {
        let authority = |s: &str| match parse_origin(s).unwrap() {
            Origin::Http { authority, .. } => authority.to_string(),
            Origin::Echo => unreachable!(),
        };
        assert_eq!(authority("http://127.0.0.1:3000/base"), "127.0.0.1:3000");
        assert_eq!(authority("http://app.internal"), "app.internal:80");
        assert_eq!(authority("http://[::1]:8080"), "[::1]:8080");
        assert!(parse_origin("https://x").is_err());
    }

    #[test]
    fn bad_enum_names_the_field_path() {
        let s = format!("{BASE}same_site = \"sideways\"\n");
        let e = parse(&s).unwrap_err();
        assert_eq!(e.field(), Some("app[1].same_site"), "{e}");
        assert!(e.to_string().contains("sideways"), "{e}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let s = BASE.replace("[control]", "[control]\nlisten_typo = 1");
        let e = parse(&s).unwrap_err();
        assert!(e.to_string().contains("listen_typo"), "{e}");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let s = BASE.replace(
            "[control]",
            "[session]\nglobal_duration = \"forever\"\n[control]",
        );
        let e = parse(&s).unwrap_err();
        assert_eq!(e.field(), Some("session.global_duration"), "{e}");
    }

    #[test]
    fn duplicate_host_and_syntax_errors() {
        let s = BASE.replace("b.localhost", "a.localhost");
        assert_eq!(parse(&s).unwrap_err().field(), Some("app[1].hosts[0]"));
        let e = parse("[gateway\nlisten=").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e}");
    }

    #[test]
    fn redis_backend_settings_are_checked() {
        let with =
            |sync: &str| parse(&BASE.replace("[control]", &format!("[sync]\n{sync}\n[control]")));
        let c = with("backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"").unwrap();
        let r = c.sync.redis.unwrap();
        assert_eq!(
            (r.url.as_str(), r.prefix.as_str()),
            ("redis://127.0.0.1:6379/0", "portcullis")
        );
        for (sync, field) in [
            ("backend = \"redis\"", "sync.redis_url"),
            (
                "backend = \"redis\"\nredis_url = \"http://x\"",
                "sync.redis_url",
            ),
            ("redis_url = \"redis://x\"", "sync.redis_url"),
            (
                "backend = \"redis\"\nredis_url = \"redis://x\"\npeers = [\"http://a:1\"]",
                "sync.peers",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://x\"\nredis_prefix = \"a b\"",
                "sync.redis_prefix",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://x\"\nredis_password_file = \"/nonexistent\"",
                "sync.redis_password_file",
            ),
            ("backend = \"etcd\"", "sync.backend"),
        ] {
            assert_eq!(with(sync).unwrap_err().field(), Some(field), "{sync}");
        }
    }

    #[test]
    fn email_patterns() {
        assert!(
            parse_email_pattern("*@example.com")
                .unwrap()
                .matches("a@EXAMPLE.com")
        );
        assert!(
            !parse_email_pattern("*@example.com")
                .unwrap()
                .matches("a@example.com.evil")
        );
        assert!(parse_email_pattern("bob@").is_err());
    }
}
