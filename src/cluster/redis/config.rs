//! Where the Redis backend connects and how long it may wait: the URL (`redis://` or
//! `rediss://`), the password (from the URL or a file), the key prefix, and the bounded
//! timeouts that keep a dead Redis from stalling the gateway.

use super::RedisError;
use ::redis::{Client, IntoConnectionInfo, TlsCertificates};
use std::path::Path;
use std::time::Duration;

/// Settings of the Redis backend. Build with [`RedisConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port/db` or `rediss://...` for TLS.
    pub url: String,
    /// Overrides any password in the URL (read from `redis_password_file`).
    pub password: Option<String>,
    /// Every key this backend writes starts with `<prefix>:` (default `portcullis`).
    pub prefix: String,
    /// PEM trust anchors for `rediss://` with a private CA; the system roots otherwise.
    pub ca_pem: Option<Vec<u8>>,
    /// Upper bound for one call (a command, a script, one page of a scan), connecting
    /// included. A call that has not finished by then fails with `RedisError::Timeout`.
    pub op_timeout: Duration,
    /// Upper bound for opening one connection (TCP, TLS, AUTH, SELECT).
    pub connect_timeout: Duration,
    /// How long one `XREAD BLOCK` waits for new entries before it asks again. It is
    /// also how often the tail proves Redis is alive when nothing happens.
    pub block: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("op_timeout", &self.op_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("block", &self.block)
            .finish()
    }
}

pub const DEFAULT_PREFIX: &str = "portcullis";

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            password: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            ca_pem: None,
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            block: Duration::from_secs(1),
        }
    }

    /// Reads `redis_password_file`: its content without the trailing newline.
    pub fn read_password_file(path: &Path) -> Result<String, RedisError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RedisError::Config(format!("redis_password_file {}: {e}", path.display()))
        })?;
        let pw = text.trim_end_matches(['\r', '\n']).to_owned();
        if pw.is_empty() {
            return Err(RedisError::Config(format!(
                "redis_password_file {} is empty",
                path.display()
            )));
        }
        Ok(pw)
    }

    /// The client for this configuration: URL parsed, password applied, TLS set up with
    /// rustls on the process's aws-lc-rs provider. Connects to nothing yet.
    pub(super) fn client(&self) -> Result<Client, RedisError> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(RedisError::Config(format!(
                "redis_url must start with redis:// or rediss:// (got {})",
                redact_url(&self.url)
            )));
        }
        if self.prefix.is_empty() {
            return Err(RedisError::Config("redis_prefix is empty".into()));
        }
        let bad = |e: ::redis::RedisError| {
            RedisError::Config(format!("redis_url {}: {e}", redact_url(&self.url)))
        };
        let mut info = self.url.as_str().into_connection_info().map_err(bad)?;
        if let Some(pw) = &self.password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        if self.url.starts_with("rediss://") {
            // rustls picks the process-wide provider; make sure it is aws-lc-rs even when
            // another provider is compiled into the same binary (tests).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            if let Some(ca) = &self.ca_pem {
                let certs = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                };
                return Client::build_with_tls(info, certs).map_err(bad);
            }
        }
        Client::open(info).map_err(bad)
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_schemes_and_redacts_passwords() {
        let c = RedisConfig::new("http://127.0.0.1:6379");
        assert!(matches!(c.client(), Err(RedisError::Config(_))));
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/2"),
            "redis://:redacted@127.0.0.1:6379/2"
        );
        let c = RedisConfig::new("redis://:hunter2@127.0.0.1:6379/2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(c.client().is_ok());
    }
}
