//! Signed webhooks from SIEM and SOAR tools (`POST /v1/hooks/<name>` on the control
//! port): the HMAC signature is the authentication (`signals::webhook` checks it and
//! the five-minute window), `(hook, event_id)` is applied once across the cluster, and
//! the revocation goes through the engine with actor `hook:<name>` and the event id as
//! its external id.

use super::Signals;
use super::dedup::Delivery;
use crate::revocation::engine::{RevokeError, RevokeRequest, normalize, normalize_reason};
use crate::signals::webhook::{HookError, SIGNATURE_HEADER};
use crate::web::body::{self, Body};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use std::time::Duration;

/// Largest webhook body read.
const MAX_BODY: usize = 64 * 1024;
/// How long an applied `event_id` is remembered: retries of one alert come within it.
const KEEP_EVENT_IDS: Duration = Duration::from_secs(7 * 24 * 3600);

fn refused(status: u16, code: &str, description: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    body::json(status, &json!({"error": code, "description": description}))
}

impl Signals {
    /// One webhook delivery to the hook called `name`.
    pub async fn webhook(&self, name: &str, req: Request<Incoming>) -> Response<Body> {
        let rt = self.live.load_full();
        let Some(hook) = rt.config.signals.webhooks.iter().find(|h| h.name == name) else {
            return refused(404, "unknown_hook", "no webhook of this name is configured");
        };
        let trigger = format!("hook:{name}");
        self.metrics.received(&trigger);
        let signature = req
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Ok(raw) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
            self.metrics.refused(&trigger, "too_large");
            return refused(413, "too_large", "the body is larger than 64 KiB");
        };
        let raw = raw.to_bytes();
        let hr = match hook.verify(signature.as_deref(), &raw, self.engine.now_us()) {
            Ok(r) => r,
            Err(e) => return self.hook_refused(&trigger, &e),
        };
        // A revocation the engine would refuse is refused before the event id counts.
        if let Err(RevokeError::Invalid(m)) =
            normalize(hr.scope, &hr.target).and_then(|_| normalize_reason(&hr.reason))
        {
            self.metrics.refused(&trigger, "bad_body");
            return refused(400, "bad_body", &m);
        }
        let key = format!("{trigger}:{}", hr.event_id);
        match self.begin_once(&key).await {
            Ok(Delivery::First) => {}
            Ok(Delivery::Repeat) => {
                self.metrics.ignored(&trigger, "replayed");
                return body::json(
                    StatusCode::OK,
                    &json!({"status": "duplicate", "event_id": hr.event_id}),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a webhook's event_id");
                return refused(
                    503,
                    "unavailable",
                    "the cluster state cannot be reached; retry",
                );
            }
        }
        let req = RevokeRequest {
            scope: hr.scope,
            target: hr.target,
            reason: if hr.reason.is_empty() {
                format!("hook:{name}")
            } else {
                hr.reason
            },
            actor: trigger.clone(),
            external_id: Some(hr.event_id.clone()),
        };
        match self.engine.revoke_batch(vec![req], "hook_revoke").await {
            Ok(mut out) => {
                self.metrics.applied(&trigger, 1);
                if let Err(e) = self.applied_once(&key, KEEP_EVENT_IDS).await {
                    tracing::warn!(error = %e, "cannot record a webhook event as applied");
                }
                let out = out.pop();
                body::json(
                    StatusCode::OK,
                    &json!({"status": "revoked", "revocation": out}),
                )
            }
            Err(RevokeError::Invalid(m)) => {
                self.metrics.refused(&trigger, "bad_body");
                refused(400, "bad_body", &m)
            }
            Err(RevokeError::Durability(m)) => {
                tracing::error!(error = %m, "cannot apply a webhook revocation");
                refused(
                    503,
                    "unavailable",
                    "the revocation could not be made durable; retry",
                )
            }
        }
    }

    fn hook_refused(&self, trigger: &str, e: &HookError) -> Response<Body> {
        tracing::warn!(trigger, error = %e, "webhook refused");
        self.metrics.refused(trigger, e.code());
        refused(e.status(), e.code(), &e.to_string())
    }
}
