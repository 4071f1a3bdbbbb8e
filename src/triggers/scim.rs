//! The SCIM endpoint: bearer token (constant time) → the SCIM service over the
//! cluster's documents → the documents it wrote published to every node → its effects
//! applied through the revocation engine → the answer. The answer goes out only after
//! all of that, so an identity provider that saw a 2xx knows every node refuses what
//! the change revoked.

use super::Signals;
use super::apply::Cause;
use crate::config::ScimConfig;
use crate::revocation::{Scope, member_target};
use crate::runtime::Runtime;
use crate::secrets::ct_eq;
use crate::signals::scim::{
    CONTENT_TYPE, Effect, Scim, ScimError, ScimOutcome, ScimRequest, ScimSettings,
};
use crate::web::body::{self, Body};
use crate::web::ctx::ReqCtx;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

/// Largest SCIM request body (a full member list of a large group fits).
const MAX_BODY: usize = 8 * 1024 * 1024;

fn respond(o: &ScimOutcome) -> Response<Body> {
    let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let b = match &o.body {
        Some(v) => body::full(serde_json::to_vec(v).unwrap_or_default()),
        None => body::empty(),
    };
    let mut r = body::with_type(status, CONTENT_TYPE, b);
    let h = r.headers_mut();
    if o.body.is_none() {
        h.remove(header::CONTENT_TYPE);
    }
    for (name, v) in [(header::LOCATION, &o.location), (header::ETAG, &o.etag)] {
        if let Some(v) = v.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    r
}

fn error(e: ScimError) -> Response<Body> {
    let mut r = respond(&ScimOutcome::from(e.clone()));
    if e.status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"scim\""),
        );
    }
    r
}

/// The bearer token's hash against the configured one, in constant time.
fn authorized(h: &HeaderMap, cfg: &ScimConfig) -> bool {
    let Some(v) = h.get(header::AUTHORIZATION).map(HeaderValue::as_bytes) else {
        return false;
    };
    let Some(token) = v
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
        .map(|_| v[7..].trim_ascii())
    else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(token).into();
    ct_eq(&digest, &cfg.token_sha256)
}

/// The metrics reason of a refused request.
fn refusal_reason(o: &ScimOutcome) -> String {
    let scim_type = o
        .body
        .as_ref()
        .and_then(|b| b.get("scimType"))
        .and_then(|t| t.as_str());
    match (o.status, scim_type) {
        (_, Some(t)) => t.to_string(),
        (404, _) => "not_found".into(),
        (s, _) => format!("http_{s}"),
    }
}

impl Signals {
    pub(super) async fn scim(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let Some(cfg) = rt.config.scim.clone() else {
            return error(ScimError::not_found("SCIM is not enabled on this gateway"));
        };
        let trigger = format!("scim:{}", cfg.name);
        self.metrics.received(&trigger);
        if !authorized(req.headers(), &cfg) {
            self.metrics.refused(&trigger, "unauthorized");
            return error(ScimError::unauthorized("missing or wrong bearer token"));
        }
        let (parts, incoming) = req.into_parts();
        let bytes = match Limited::new(incoming, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                self.metrics.refused(&trigger, "too_large");
                return error(ScimError::too_large(format!(
                    "the body is larger than {MAX_BODY} bytes"
                )));
            }
        };
        let path = parts
            .uri
            .path()
            .strip_prefix(super::SCIM_PREFIX)
            .unwrap_or("");
        let base_url = format!(
            "{}{}",
            ctx.origin_for(&rt.config.auth_domain),
            super::SCIM_PREFIX
        );
        let call = Call {
            method: parts.method,
            path: path.to_string(),
            query: parts.uri.query().map(str::to_string),
            body: bytes,
            base_url,
        };
        let outcome = match self.run_scim(call).await {
            Ok(o) => o,
            Err(e) => {
                self.metrics.refused(&trigger, "unavailable");
                return error(e);
            }
        };
        if outcome.status >= 400 {
            self.metrics.refused(&trigger, &refusal_reason(&outcome));
            return respond(&outcome);
        }
        if let Err(e) = self.apply_effects(&trigger, &outcome.effects).await {
            tracing::error!(error = %e, "a SCIM change is saved but its revocations could not be made durable");
            self.metrics.refused(&trigger, "unavailable");
            return error(ScimError::unavailable(
                "the change is saved but could not be enforced yet; retry",
            ));
        }
        respond(&outcome)
    }

    /// The SCIM service on a blocking thread (its writes fsync) over documents that
    /// include every write another node finished, then the documents it wrote published
    /// to the other nodes.
    async fn run_scim(&self, call: Call) -> Result<ScimOutcome, ScimError> {
        // The identity provider's previous request may have reached another node.
        self.docs.catch_up().await;
        let docs = self.accounts.clone();
        let run = tokio::task::spawn_blocking(move || {
            let store = docs.scim();
            let scim = Scim::new(ScimSettings {
                base_url: call.base_url,
                ..ScimSettings::default()
            });
            let req = ScimRequest {
                method: call.method,
                path: &call.path,
                query: call.query.as_deref(),
                body: &call.body,
            };
            let now = docs.store().next_version();
            let outcome = scim.handle(&store, &req, now);
            (outcome, store.take_written())
        });
        let (outcome, written) = run
            .await
            .map_err(|e| ScimError::unavailable(format!("the SCIM service failed: {e}")))?;
        if !written.is_empty() {
            let sent = self.docs.publish(&written).await;
            tracing::debug!(
                docs = written.len(),
                acked = sent.acked,
                peers = sent.peers,
                "SCIM change published"
            );
        }
        Ok(outcome)
    }

    /// Deactivation and deletion revoke the user (every address); leaving a group
    /// revokes the user's app tokens carrying it; reactivation is written to the audit
    /// log; joining a group shows in the next token.
    async fn apply_effects(
        &self,
        trigger: &str,
        effects: &[Effect],
    ) -> Result<(), crate::revocation::engine::RevokeError> {
        for e in effects {
            let addresses = addresses(e);
            let n = match e {
                Effect::Deactivated { user_id, .. } | Effect::Deleted { user_id, .. } => {
                    let why = if matches!(e, Effect::Deleted { .. }) {
                        "scim: user deleted"
                    } else {
                        "scim: user deactivated"
                    };
                    let cause = Cause::new(trigger.to_string(), Some(user_id), why);
                    self.revoke(Scope::User, addresses, &cause, "scim_deactivate")
                        .await?
                }
                Effect::LeftGroup { user_id, group, .. } => {
                    let why = format!("scim: removed from group {group}");
                    let cause = Cause::new(trigger.to_string(), Some(user_id), &why);
                    let targets = addresses.iter().map(|a| member_target(a, group));
                    self.revoke(Scope::Member, targets, &cause, "scim_leave_group")
                        .await?
                }
                Effect::Reactivated { user_id, email, .. } => {
                    let cause =
                        Cause::new(trigger.to_string(), Some(user_id), "scim: user reactivated");
                    self.note("scim_reactivate", email, &cause).await;
                    1
                }
                Effect::JoinedGroup { email, group, .. } => {
                    tracing::info!(%email, %group, trigger, "joined a group: tokens issued from now on carry it");
                    0
                }
            };
            tracing::info!(
                effect = e.kind(),
                email = e.email(),
                user_id = e.user_id(),
                trigger,
                "SCIM change applied"
            );
            self.metrics.applied(trigger, n);
        }
        Ok(())
    }
}

/// Every email address of the user an effect is about (tokens name people by email).
fn addresses(e: &Effect) -> Vec<String> {
    let (email, aliases) = match e {
        Effect::Deactivated { email, aliases, .. }
        | Effect::Deleted { email, aliases, .. }
        | Effect::Reactivated { email, aliases, .. }
        | Effect::LeftGroup { email, aliases, .. }
        | Effect::JoinedGroup { email, aliases, .. } => (email, aliases),
    };
    std::iter::once(email.clone())
        .chain(aliases.iter().cloned())
        .filter(|a| a.contains('@') && !a.contains(char::is_whitespace))
        .collect()
}

/// One SCIM request, owned, for the blocking thread.
struct Call {
    method: Method,
    path: String,
    query: Option<String>,
    body: Bytes,
    base_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_compare_by_hash() {
        let cfg = ScimConfig {
            name: "okta".into(),
            token_sha256: Sha256::digest(b"s3cret").into(),
            token_file: None,
        };
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(authorized(&h("Bearer s3cret"), &cfg));
        assert!(authorized(&h("bearer  s3cret "), &cfg));
        assert!(!authorized(&h("Bearer s3cre"), &cfg));
        assert!(!authorized(&h("Basic s3cret"), &cfg));
        assert!(!authorized(&HeaderMap::new(), &cfg));
    }
}
