//! Health, readiness and the metrics page.

use super::Control;
use crate::metrics::{self, Kind, OUTCOMES, Writer};
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
        write_origin_metrics(&mut w);
        w.gauge(
            "portcullis_revocation_set_size",
            "Entries in the revocation set.",
            self.engine.set().len(),
        );
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
}
