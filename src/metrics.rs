//! Counters and gauges, rendered as Prometheus text on the control port. Plain atomics:
//! the request path only ever does relaxed increments.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Proxied,
    Unauthenticated,
    Forbidden,
    Revoked,
    Gateway,
    Error,
}

const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Proxied, "proxied"),
    (Outcome::Unauthenticated, "unauthenticated"),
    (Outcome::Forbidden, "forbidden"),
    (Outcome::Revoked, "revoked"),
    (Outcome::Gateway, "gateway"),
    (Outcome::Error, "error"),
];

#[derive(Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 6],
    pub revocations: [AtomicU64; 5],
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub login_success: AtomicU64,
    pub login_failures: AtomicU64,
    pub login_throttled: AtomicU64,
    pub config_generation: AtomicU64,
    pub config_reload_failures: AtomicU64,
    pub tunnels_closed_on_revocation: AtomicU64,
}

impl Metrics {
    pub fn outcome(&self, o: Outcome) {
        self.outcomes[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn revoked(&self, scope: crate::revocation::Scope) {
        self.revocations[scope as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text; `extra` appends gauges that live elsewhere.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut s = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP portcullis_requests_total Data-plane requests by outcome."
        );
        let _ = writeln!(s, "# TYPE portcullis_requests_total counter");
        for (o, name) in OUTCOMES {
            let _ = writeln!(
                s,
                "portcullis_requests_total{{outcome=\"{name}\"}} {}",
                g(&self.outcomes[o as usize])
            );
        }
        let _ = writeln!(
            s,
            "# HELP portcullis_revocations_total Revocations taken, by scope."
        );
        let _ = writeln!(s, "# TYPE portcullis_revocations_total counter");
        for scope in crate::revocation::Scope::ALL {
            let _ = writeln!(
                s,
                "portcullis_revocations_total{{scope=\"{}\"}} {}",
                scope.as_str(),
                g(&self.revocations[scope as usize])
            );
        }
        let hits = g(&self.cache_hits);
        let misses = g(&self.cache_misses);
        let rate = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        let counters = [
            (
                "portcullis_token_cache_hits_total",
                "Token checks answered by the cache.",
                hits,
            ),
            (
                "portcullis_token_cache_misses_total",
                "Token checks that verified a signature.",
                misses,
            ),
            (
                "portcullis_login_success_total",
                "Successful logins.",
                g(&self.login_success),
            ),
            (
                "portcullis_login_failures_total",
                "Failed logins.",
                g(&self.login_failures),
            ),
            (
                "portcullis_login_throttled_total",
                "Logins refused by rate limits or lockout.",
                g(&self.login_throttled),
            ),
            (
                "portcullis_config_reload_failures_total",
                "Config reloads refused.",
                g(&self.config_reload_failures),
            ),
            (
                "portcullis_tunnels_closed_on_revocation_total",
                "Long-lived connections closed by a revocation.",
                g(&self.tunnels_closed_on_revocation),
            ),
            (
                "portcullis_access_log_dropped_total",
                "Access log lines dropped because the writer fell behind (or could not write).",
                crate::access_log::dropped_total(),
            ),
            (
                "portcullis_origin_connections_opened_total",
                "New connections to origins (reused ones are not counted).",
                g(&crate::origin::STATS.connects),
            ),
            (
                "portcullis_origin_connect_failures_total",
                "Connections to origins that failed or timed out.",
                g(&crate::origin::STATS.connect_failures),
            ),
            (
                "portcullis_origin_retries_total",
                "Idempotent requests sent again after a kept-alive connection turned out closed.",
                g(&crate::origin::STATS.retries),
            ),
            (
                "portcullis_origin_malformed_responses_total",
                "Origin responses refused as malformed (answered 502).",
                g(&crate::origin::STATS.malformed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP portcullis_token_cache_hit_ratio Share of token checks answered by the cache.\n# TYPE portcullis_token_cache_hit_ratio gauge\nportcullis_token_cache_hit_ratio {rate}"
        );
        let _ = writeln!(
            s,
            "# HELP portcullis_config_generation The live config generation.\n# TYPE portcullis_config_generation gauge\nportcullis_config_generation {}",
            g(&self.config_generation)
        );
        for (name, help, v) in extra {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        s
    }
}
