//! Counters the request path and the engines bump (plain relaxed atomics), and the one
//! writer of Prometheus text every metrics producer uses. A leaf: what the counters
//! mean and which labels they get is decided by whoever renders the page (the control
//! port), so nothing here knows about scopes, peers or origins.
//!
//! Hand-written rather than `prometheus-client`: the counters must stay single atomic
//! increments on the request path, and the page mixes them with values read at scrape
//! time (set sizes, peer ages); a 60-line writer keeps the classic text format exactly.

use std::fmt::{Display, Write};
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

pub const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Proxied, "proxied"),
    (Outcome::Unauthenticated, "unauthenticated"),
    (Outcome::Forbidden, "forbidden"),
    (Outcome::Revoked, "revoked"),
    (Outcome::Gateway, "gateway"),
    (Outcome::Error, "error"),
];

/// The gateway's own counters.
#[derive(Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 6],
    /// Revocations taken, indexed by `revocation::Scope as usize`.
    pub revocations: [AtomicU64; 6],
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub login_success: AtomicU64,
    pub login_failures: AtomicU64,
    pub login_throttled: AtomicU64,
    pub config_generation: AtomicU64,
    pub config_reload_failures: AtomicU64,
    pub tunnels_closed_on_revocation: AtomicU64,
    /// What the limits against hostile clients refused or cut off.
    pub limits: LimitCounters,
}

/// Counters (and a few gauges) of the limits against hostile clients.
#[derive(Default)]
pub struct LimitCounters {
    /// Open data-plane connections (gauge).
    pub connections_open: AtomicU64,
    /// Open control-port connections (gauge).
    pub control_connections_open: AtomicU64,
    /// Data-plane connections closed at accept: the total cap was reached.
    pub refused_total: AtomicU64,
    /// Data-plane connections closed at accept: the client address had its share.
    pub refused_per_address: AtomicU64,
    /// Control-port connections closed at accept.
    pub refused_control: AtomicU64,
    /// Connections closed because a request head did not arrive in time.
    pub head_timeouts: AtomicU64,
    /// Connections closed after sitting idle (no request in flight).
    pub idle_timeouts: AtomicU64,
    /// HTTP/2 connections the gateway ended with a GOAWAY for the client's behaviour,
    /// by [`H2_REASONS`].
    pub h2_goaway: [AtomicU64; 3],
    /// Requests whose body came too slowly (408, or the connection closed).
    pub body_timeouts: AtomicU64,
    /// Password checks running (gauge).
    pub password_checks_active: AtomicU64,
    /// Sign-ins waiting for a password check (gauge).
    pub password_checks_waiting: AtomicU64,
    /// Sign-ins answered 503 because the password-check queue was full.
    pub password_checks_refused: AtomicU64,
}

/// Labels of `LimitCounters::h2_goaway`: ENHANCE_YOUR_CALM (reset floods, too many
/// CONTINUATION frames or local resets), any other protocol error.
pub const H2_REASONS: [&str; 3] = ["enhance_your_calm", "protocol_error", "other"];

/// Adds one to a counter.
pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Takes one from a gauge.
pub fn dec(a: &AtomicU64) {
    a.fetch_sub(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn outcome(&self, o: Outcome) {
        self.outcomes[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn outcomes(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize].load(Ordering::Relaxed)
    }

    pub fn cache(&self, hit: bool) {
        let c = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a revocation of the scope with index `scope` (`Scope as usize`).
    pub fn revoked(&self, scope: usize) {
        if let Some(c) = self.revocations.get(scope) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads a counter.
pub fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Prometheus text exposition format (version 0.0.4).
#[derive(Default)]
pub struct Writer {
    out: String,
}

#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Writer {
    fn head(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, help, Kind::Counter);
        let _ = writeln!(self.out, "{name} {value}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.head(name, help, Kind::Gauge);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A metric with one sample per label set.
    pub fn family<'a, V: Display>(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        samples: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], V)>,
    ) {
        self.head(name, help, kind);
        for (labels, value) in samples {
            self.out.push_str(name);
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            let _ = writeln!(self.out, "}} {value}");
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format() {
        let mut w = Writer::default();
        w.counter("a_total", "A things.", 3);
        w.gauge("b", "B.", -1.5);
        w.family(
            "c",
            "C.",
            Kind::Gauge,
            [(&[("peer", "x\"y")][..], 1), (&[("peer", "z")][..], 0)],
        );
        assert_eq!(
            w.finish(),
            "# HELP a_total A things.\n# TYPE a_total counter\na_total 3\n\
             # HELP b B.\n# TYPE b gauge\nb -1.5\n\
             # HELP c C.\n# TYPE c gauge\nc{peer=\"x\\\"y\"} 1\nc{peer=\"z\"} 0\n"
        );
    }
}
