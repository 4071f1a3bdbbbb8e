//! Health, readiness and the metrics page.

use super::Control;
use crate::metrics::{self, H2_REASONS, Kind, LimitCounters, OUTCOMES, Writer};
use crate::revocation::Scope;
use crate::web::body::{self, Body};
use http::{Response, StatusCode, header};
use serde_json::json;

impl Control {
    pub(super) fn healthz(&self) -> Response<Body> {
        body::json(
            StatusCode::OK,
            &json!({"status": "ok", "node": self.engine.node_id()}),
        )
    }

    pub(super) fn readyz(&self) -> Response<Body> {
        let c = &self.cluster;
        if let Some(reason) = c.freshness.not_ready() {
            return body::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": reason, "sync": c.status.readiness()}),
            );
        }
        if let Some(reason) = c.freshness.stale_reason() {
            return body::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": reason}),
            );
        }
        body::json(
            StatusCode::OK,
            &json!({
                "ready": true, "generation": self.live.generation(),
                "node": self.engine.node_id(), "backend": c.status.name(), "sync": c.status.readiness(),
            }),
        )
    }

    pub(super) fn metrics_page(&self) -> Response<Body> {
        let mut w = Writer::default();
        self.write_gateway_metrics(&mut w);
        write_limit_metrics(&self.metrics.limits, &mut w);
        write_origin_metrics(&mut w);
        w.gauge(
            "portcullis_revocation_set_size",
            "Entries in the revocation set.",
            self.engine.set().len(),
        );
        self.write_bounded_maps(&mut w);
        self.cluster.status.write_metrics(&mut w);
        crate::sync::selftest::write_metrics(&self.sync, &mut w);
        self.signals.write_metrics(&mut w);
        let mut r = body::text(StatusCode::OK, w.finish());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    }

    /// The maps that grow with client input: what each holds and what its bound
    /// refused or forgot.
    fn write_bounded_maps(&self, w: &mut Writer) {
        let mem = self.sync.shared.stats();
        w.gauge(
            "portcullis_token_cache_entries",
            "Verified tokens in the cache.",
            self.auth.cached_tokens(),
        );
        w.gauge(
            "portcullis_sessions_known",
            "Sessions in this node's registry.",
            self.sessions.len(),
        );
        w.family(
            "portcullis_bounded_map_entries",
            "Entries in the in-memory maps that grow with client input.",
            Kind::Gauge,
            [
                (&[("map", "sessions")][..], self.sessions.len() as u64),
                (&[("map", "single_use")][..], mem.claims as u64),
                (&[("map", "login_failures")][..], mem.failures as u64),
                (&[("map", "token_cache")][..], self.auth.cached_tokens()),
            ],
        );
        w.family(
            "portcullis_bounded_map_evictions_total",
            "Entries refused (single_use) or forgotten (the others) because a map was full.",
            Kind::Counter,
            [
                (&[("map", "sessions")][..], self.sessions.evicted()),
                (&[("map", "single_use")][..], mem.claims_refused),
                (&[("map", "login_failures")][..], mem.failures_dropped),
            ],
        );
    }

    fn write_gateway_metrics(&self, w: &mut Writer) {
        let m = &self.metrics;
        let outcomes: Vec<([(&str, &str); 1], u64)> = OUTCOMES
            .iter()
            .map(|(o, name)| ([("outcome", *name)], m.outcomes(*o)))
            .collect();
        w.family(
            "portcullis_requests_total",
            "Data-plane requests by outcome.",
            Kind::Counter,
            outcomes.iter().map(|(l, v)| (&l[..], v)),
        );
        let scopes: Vec<([(&str, &str); 1], u64)> = Scope::ALL
            .iter()
            .map(|s| {
                (
                    [("scope", s.as_str())],
                    metrics::get(&m.revocations[*s as usize]),
                )
            })
            .collect();
        w.family(
            "portcullis_revocations_total",
            "Revocations taken, by scope.",
            Kind::Counter,
            scopes.iter().map(|(l, v)| (&l[..], v)),
        );
        let (hits, misses) = (metrics::get(&m.cache_hits), metrics::get(&m.cache_misses));
        w.counter(
            "portcullis_token_cache_hits_total",
            "Token checks answered by the cache.",
            hits,
        );
        w.counter(
            "portcullis_token_cache_misses_total",
            "Token checks that verified a signature.",
            misses,
        );
        w.counter(
            "portcullis_login_success_total",
            "Successful logins.",
            metrics::get(&m.login_success),
        );
        w.counter(
            "portcullis_login_failures_total",
            "Failed logins.",
            metrics::get(&m.login_failures),
        );
        w.counter(
            "portcullis_login_throttled_total",
            "Logins refused by rate limits or lockout.",
            metrics::get(&m.login_throttled),
        );
        w.counter(
            "portcullis_config_reload_failures_total",
            "Config reloads refused.",
            metrics::get(&m.config_reload_failures),
        );
        w.counter(
            "portcullis_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind (or could not write).",
            crate::access_log::dropped_total(),
        );
        w.counter(
            "portcullis_tunnels_closed_on_revocation_total",
            "Long-lived connections closed by a revocation.",
            metrics::get(&m.tunnels_closed_on_revocation),
        );
        let rate = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        w.gauge(
            "portcullis_token_cache_hit_ratio",
            "Share of token checks answered by the cache.",
            rate,
        );
        w.gauge(
            "portcullis_config_generation",
            "The live config generation.",
            self.live.generation(),
        );
    }
}

/// What the limits against hostile clients refused or cut off.
fn write_limit_metrics(l: &LimitCounters, w: &mut Writer) {
    let g = metrics::get;
    w.family(
        "portcullis_connections_open",
        "Open connections, by listener.",
        Kind::Gauge,
        [
            (&[("listener", "data")][..], g(&l.connections_open)),
            (
                &[("listener", "control")][..],
                g(&l.control_connections_open),
            ),
        ],
    );
    w.family(
        "portcullis_connections_refused_total",
        "Connections closed at accept by a connection cap.",
        Kind::Counter,
        [
            (
                &[("listener", "data"), ("cap", "total")][..],
                g(&l.refused_total),
            ),
            (
                &[("listener", "data"), ("cap", "per_address")][..],
                g(&l.refused_per_address),
            ),
            (
                &[("listener", "control"), ("cap", "total")][..],
                g(&l.refused_control),
            ),
        ],
    );
    w.family(
        "portcullis_connections_timed_out_total",
        "Connections closed by a deadline: a request head late, or idle too long.",
        Kind::Counter,
        [
            (&[("deadline", "request_head")][..], g(&l.head_timeouts)),
            (&[("deadline", "idle")][..], g(&l.idle_timeouts)),
        ],
    );
    let goaway: Vec<([(&str, &str); 1], u64)> = H2_REASONS
        .iter()
        .zip(&l.h2_goaway)
        .map(|(r, c)| ([("reason", *r)], g(c)))
        .collect();
    w.family(
        "portcullis_h2_goaway_total",
        "HTTP/2 connections ended with a GOAWAY for the client's behaviour (rapid reset, CONTINUATION flood, protocol errors).",
        Kind::Counter,
        goaway.iter().map(|(lab, v)| (&lab[..], v)),
    );
    w.counter(
        "portcullis_request_body_timeouts_total",
        "Requests whose body arrived too slowly (answered 408).",
        g(&l.body_timeouts),
    );
    w.gauge(
        "portcullis_password_checks_active",
        "Password hashes being verified.",
        g(&l.password_checks_active),
    );
    w.gauge(
        "portcullis_password_checks_waiting",
        "Sign-ins waiting for a password check.",
        g(&l.password_checks_waiting),
    );
    w.counter(
        "portcullis_password_checks_refused_total",
        "Sign-ins answered 503 because too many were waiting for a password check.",
        g(&l.password_checks_refused),
    );
}

fn write_origin_metrics(w: &mut Writer) {
    let s = &crate::origin::STATS;
    w.counter(
        "portcullis_origin_connections_opened_total",
        "New connections to origins (reused ones are not counted).",
        metrics::get(&s.connects),
    );
    w.counter(
        "portcullis_origin_connect_failures_total",
        "Connections to origins that failed or timed out.",
        metrics::get(&s.connect_failures),
    );
    w.counter(
        "portcullis_origin_retries_total",
        "Idempotent requests sent again after a kept-alive connection turned out closed.",
        metrics::get(&s.retries),
    );
    w.counter(
        "portcullis_origin_malformed_responses_total",
        "Origin responses refused as malformed (answered 502).",
        metrics::get(&s.malformed),
    );
    w.counter(
        "portcullis_origin_requests_aborted_total",
        "Requests whose body failed after part was sent: the origin connection was reset.",
        metrics::get(&s.aborted),
    );
}
