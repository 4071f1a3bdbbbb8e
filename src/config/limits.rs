//! The `[limits]` table: what one client may hold or cost the gateway (connections,
//! time to send a request head or body, HTTP/2 streams and resets, password checks,
//! sessions), written by operators and validated into [`Limits`]. Every field has a
//! default meant for production, so the table is optional.

use super::file::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_control_connections: usize,
    pub request_head_timeout: HumanDuration,
    pub idle_timeout: HumanDuration,
    pub body_timeout: HumanDuration,
    pub body_min_rate: u64,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_pending_reset_streams: usize,
    pub h2_max_local_reset_streams: usize,
    pub password_checks: usize,
    pub password_check_queue: usize,
    pub max_sessions: usize,
    pub max_single_use: usize,
    pub max_throttle_keys: usize,
}

impl Default for LimitsFile {
    fn default() -> Self {
        let d = Limits::default();
        Self {
            max_connections: d.max_connections,
            max_connections_per_address: d.max_connections_per_address,
            max_control_connections: d.max_control_connections,
            request_head_timeout: HumanDuration(d.request_head_timeout),
            idle_timeout: HumanDuration(d.idle_timeout),
            body_timeout: HumanDuration(d.body_timeout),
            body_min_rate: d.body_min_rate,
            h2_max_concurrent_streams: d.h2_max_concurrent_streams,
            h2_max_pending_reset_streams: d.h2_max_pending_reset_streams,
            h2_max_local_reset_streams: d.h2_max_local_reset_streams,
            password_checks: 0,
            password_check_queue: d.password_check_queue,
            max_sessions: d.max_sessions,
            max_single_use: d.max_single_use,
            max_throttle_keys: d.max_throttle_keys,
        }
    }
}

/// The validated limits (see the README's "Limits" section for what each one bounds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open data-plane connections, all listeners together.
    pub max_connections: usize,
    /// Open data-plane connections from one client address (trusted proxies exempt).
    pub max_connections_per_address: usize,
    /// Open control-port connections.
    pub max_control_connections: usize,
    /// From accept to the first request head (TLS handshake included); for later
    /// requests on a connection, from the head's first byte to its end.
    pub request_head_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Longest wait for the next bytes of a request body.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average beyond `body_timeout` (0: off).
    pub body_min_rate: u64,
    pub h2_max_concurrent_streams: u32,
    /// Streams the client resets before they are served (rapid reset), per connection.
    pub h2_max_pending_reset_streams: usize,
    /// Streams the gateway had to reset for the client's errors, per connection.
    pub h2_max_local_reset_streams: usize,
    /// Password hashes verified at once (argon2: CPU and ~19 MiB each).
    pub password_checks: usize,
    /// Sign-ins waiting for a password check; more are answered 503.
    pub password_check_queue: usize,
    /// Sessions the registry holds.
    pub max_sessions: usize,
    /// Live single-use markers (sign-in codes, OIDC states, token ids) held in memory
    /// (peer backend); past it new ones are refused.
    pub max_single_use: usize,
    /// Emails and addresses whose failed sign-ins are remembered (peer backend); past
    /// it the least recently failed are forgotten.
    pub max_throttle_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_control_connections: 256,
            request_head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 512,
            h2_max_concurrent_streams: 100,
            h2_max_pending_reset_streams: 20,
            h2_max_local_reset_streams: 256,
            password_checks: default_password_checks(),
            password_check_queue: 32,
            max_sessions: crate::session::registry::DEFAULT_MAX_SESSIONS,
            max_single_use: 100_000,
            max_throttle_keys: 100_000,
        }
    }
}

/// Half the CPUs, at least one: sign-in floods keep the other half for proxying.
fn default_password_checks() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Validates the table; errors are `(field, reason)`.
pub fn validate(f: &LimitsFile) -> Result<Limits, (String, String)> {
    let err = |field: &str, reason: &str| Err((format!("limits.{field}"), reason.to_string()));
    let at_least_one = [
        ("max_connections", f.max_connections),
        ("max_connections_per_address", f.max_connections_per_address),
        ("max_control_connections", f.max_control_connections),
        (
            "h2_max_concurrent_streams",
            f.h2_max_concurrent_streams as usize,
        ),
        (
            "h2_max_pending_reset_streams",
            f.h2_max_pending_reset_streams,
        ),
        ("h2_max_local_reset_streams", f.h2_max_local_reset_streams),
        ("max_sessions", f.max_sessions),
        ("max_single_use", f.max_single_use),
        ("max_throttle_keys", f.max_throttle_keys),
    ];
    for (field, v) in at_least_one {
        if v == 0 {
            return err(field, "must be at least 1");
        }
    }
    if f.max_connections_per_address > f.max_connections {
        return err(
            "max_connections_per_address",
            "must not be larger than max_connections",
        );
    }
    let second = Duration::from_secs(1);
    for (field, d) in [
        ("request_head_timeout", f.request_head_timeout.0),
        ("idle_timeout", f.idle_timeout.0),
        ("body_timeout", f.body_timeout.0),
    ] {
        if d < second / 10 {
            return err(field, "must be at least 100ms");
        }
    }
    Ok(Limits {
        max_connections: f.max_connections,
        max_connections_per_address: f.max_connections_per_address,
        max_control_connections: f.max_control_connections,
        request_head_timeout: f.request_head_timeout.0,
        idle_timeout: f.idle_timeout.0,
        body_timeout: f.body_timeout.0,
        body_min_rate: f.body_min_rate,
        h2_max_concurrent_streams: f.h2_max_concurrent_streams,
        h2_max_pending_reset_streams: f.h2_max_pending_reset_streams,
        h2_max_local_reset_streams: f.h2_max_local_reset_streams,
        password_checks: match f.password_checks {
            0 => default_password_checks(),
            n => n,
        },
        password_check_queue: f.password_check_queue,
        max_sessions: f.max_sessions,
        max_single_use: f.max_single_use,
        max_throttle_keys: f.max_throttle_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Limits, (String, String)> {
        let f: LimitsFile =
            toml::from_str(toml_text).map_err(|e| ("toml".into(), e.to_string()))?;
        validate(&f)
    }

    #[test]
    fn defaults_and_overrides() {
        let d = parse("").unwrap();
        assert_eq!(d, Limits::default());
        assert!(d.password_checks >= 1);
        let l = parse("max_connections = 5\nmax_connections_per_address = 2\nidle_timeout = \"3s\"\npassword_checks = 3").unwrap();
        assert_eq!((l.max_connections, l.max_connections_per_address), (5, 2));
        assert_eq!(l.idle_timeout, Duration::from_secs(3));
        assert_eq!(l.password_checks, 3);
    }

    #[test]
    fn bad_values_name_the_field() {
        for (text, field) in [
            ("max_connections = 0", "limits.max_connections"),
            (
                "max_connections = 10\nmax_connections_per_address = 11",
                "limits.max_connections_per_address",
            ),
            ("body_timeout = \"1ms\"", "limits.body_timeout"),
            (
                "h2_max_concurrent_streams = 0",
                "limits.h2_max_concurrent_streams",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err().0, field, "{text}");
        }
        assert!(
            parse("max_conections = 1").is_err(),
            "unknown fields are refused"
        );
    }
}
