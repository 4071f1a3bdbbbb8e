//! The shape of `gateway.toml` as written by operators. Every table refuses unknown
//! fields so a typo is an error that names the field, never a silently ignored setting.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// A human-readable duration ("24h", "60s", "1h 30m").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// A default duration, written as seconds so no literal can fail to parse.
const fn secs(s: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(s))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub gateway: GatewayFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub login: LoginFile,
    pub control: ControlFile,
    #[serde(default)]
    pub sync: SyncFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub limits: super::limits::LimitsFile,
    #[serde(default, rename = "app")]
    pub apps: Vec<AppFile>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserFile>,
    #[serde(default, rename = "idp")]
    pub idps: Vec<super::idp::IdpFile>,
    /// The admin console (off without the table).
    pub console: Option<super::console::ConsoleFile>,
    /// The SCIM 2.0 service provider (none: no `/scim/v2/`).
    pub scim: Option<ScimFile>,
    #[serde(default)]
    pub signals: SignalsFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimFile {
    /// The audit actor is `scim:<name>`.
    pub name: String,
    pub token_sha256: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsFile {
    #[serde(default)]
    pub ssf: Vec<crate::signals::ssf::SsfFile>,
    #[serde(default)]
    pub webhook: Vec<crate::signals::webhook::WebhookFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub listen: String,
    pub auth_domain: String,
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    #[serde(default = "default_node_id")]
    pub node_id: String,
    pub http_listen: Option<String>,
    pub public_port: Option<u16>,
    /// Peers whose X-Forwarded-* headers are believed and appended to.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "default_connect_timeout")]
    pub origin_connect_timeout: HumanDuration,
    #[serde(default = "default_origin_timeout")]
    pub origin_timeout: HumanDuration,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    pub issuer: Option<String>,
    /// Worker threads (0: one per core).
    #[serde(default)]
    pub workers: usize,
}

fn default_state_dir() -> String {
    "state".into()
}
fn default_node_id() -> String {
    "gw-1".into()
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_max_body_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_connect_timeout() -> HumanDuration {
    secs(5)
}
fn default_origin_timeout() -> HumanDuration {
    secs(60)
}
fn default_shutdown_grace() -> HumanDuration {
    secs(10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    #[serde(default = "default_cert")]
    pub cert: String,
    #[serde(default = "default_key")]
    pub key: String,
    /// Write a self-signed certificate for the auth domain and app hosts when the files are missing.
    #[serde(default = "yes")]
    pub generate_self_signed: bool,
}

impl Default for TlsFile {
    fn default() -> Self {
        Self {
            cert: default_cert(),
            key: default_key(),
            generate_self_signed: true,
        }
    }
}

fn default_cert() -> String {
    "certs/gateway.crt".into()
}
fn default_key() -> String {
    "certs/gateway.key".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    #[serde(default = "default_global")]
    pub global_duration: HumanDuration,
    #[serde(default = "default_lockout")]
    pub relogin_lockout: HumanDuration,
    #[serde(default = "default_cache_capacity")]
    pub token_cache_capacity: u64,
    /// How long the one-time hand-off code from the auth domain to an app host lives.
    #[serde(default = "default_code_ttl")]
    pub code_ttl: HumanDuration,
    /// Tolerated clock difference between nodes when dropping old revocations.
    #[serde(default = "default_skew")]
    pub clock_skew: HumanDuration,
}

impl Default for SessionFile {
    fn default() -> Self {
        Self {
            global_duration: default_global(),
            relogin_lockout: default_lockout(),
            token_cache_capacity: default_cache_capacity(),
            code_ttl: default_code_ttl(),
            clock_skew: default_skew(),
        }
    }
}

fn default_global() -> HumanDuration {
    secs(24 * 3600)
}
fn default_lockout() -> HumanDuration {
    secs(60)
}
fn default_cache_capacity() -> u64 {
    100_000
}
fn default_code_ttl() -> HumanDuration {
    secs(60)
}
fn default_skew() -> HumanDuration {
    secs(5 * 60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    #[serde(default = "default_user_failures")]
    pub max_failures_per_user: u32,
    #[serde(default = "default_ip_failures")]
    pub max_failures_per_ip: u32,
    #[serde(default = "default_failure_window")]
    pub failure_window: HumanDuration,
}

impl Default for LoginFile {
    fn default() -> Self {
        Self {
            max_failures_per_user: default_user_failures(),
            max_failures_per_ip: default_ip_failures(),
            failure_window: default_failure_window(),
        }
    }
}

fn default_user_failures() -> u32 {
    5
}
fn default_ip_failures() -> u32 {
    20
}
fn default_failure_window() -> HumanDuration {
    secs(5 * 60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    pub listen: String,
    #[serde(default)]
    pub admin: Vec<AdminFile>,
    /// PEM certificate chain and key: when both are set the control port speaks HTTPS.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca: Option<String>,
    pub client_auth: Option<ClientAuth>,
}

/// Which control-port calls need a client certificate (with `client_ca`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// The peer API; admin calls may come without one (their bearer token suffices).
    #[default]
    Peers,
    /// Every connection, refused at the TLS handshake without one.
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub name: String,
    pub token_sha256: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    #[serde(default)]
    pub peers: Vec<String>,
    pub peer_token_file: Option<String>,
    pub ack: Option<AckMode>,
    pub ack_timeout: Option<HumanDuration>,
    pub anti_entropy_interval: Option<HumanDuration>,
    pub max_staleness: Option<HumanDuration>,
    pub on_stale: Option<OnStale>,
    pub startup_sync_timeout: Option<HumanDuration>,
    /// For `https://` peers: PEM CA certificates their control ports chain to.
    pub ca_file: Option<String>,
    /// The certificate and key this node presents to its peers.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// Where the cluster's state lives: the built-in peer sync or Redis.
    #[serde(default)]
    pub backend: BackendKind,
    pub redis_url: Option<String>,
    pub redis_password_file: Option<String>,
    pub redis_prefix: Option<String>,
    /// PEM CA for `rediss://` with a private CA (the system roots otherwise).
    pub redis_ca_file: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Peers,
    Redis,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    Local,
    All,
    Quorum,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    Serve,
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Where access lines go instead of stderr (appended to; relative to the config
    /// file's folder once validated).
    #[serde(default)]
    pub access_log_file: Option<PathBuf>,
}

impl Default for LogFile {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_level(),
            access_log: true,
            access_log_file: None,
        }
    }
}

fn default_level() -> String {
    "info".into()
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub use crate::web::cookie::SameSite;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
pub enum Unauthenticated {
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "redirect")]
    Redirect,
    #[serde(rename = "401")]
    Status401,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    pub name: String,
    pub hosts: Vec<String>,
    pub origin: String,
    #[serde(default = "default_global")]
    pub session_duration: HumanDuration,
    #[serde(default = "yes")]
    pub http_only: bool,
    #[serde(default = "default_same_site")]
    pub same_site: SameSite,
    #[serde(default = "yes")]
    pub binding_cookie: bool,
    #[serde(default)]
    pub allow_emails: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    #[serde(default)]
    pub unauthenticated: Unauthenticated,
    /// Forward `portcullis_app` / `portcullis_session` cookies to the origin (the binding
    /// cookie never is).
    #[serde(default)]
    pub pass_gateway_cookies: bool,
    /// Keep the client's Host header towards the origin (otherwise the origin's authority).
    #[serde(default = "yes")]
    pub preserve_host: bool,
    pub origin_timeout: Option<HumanDuration>,
}

fn default_same_site() -> SameSite {
    SameSite::Lax
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub email: String,
    pub password_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
}
