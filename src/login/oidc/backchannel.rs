//! OpenID Connect Back-Channel Logout 1.0, the receiving end:
//! `POST /oidc/<name>/backchannel-logout` with the form field `logout_token`. The IdP
//! calls it server to server (no cookies, no CSRF token). The token is verified by the
//! protocol layer (`Provider::verify_logout_token`), its `jti` is claimed once across
//! the cluster, and the gateway sessions started from that IdP session (`sid`), or from
//! that IdP user (`sub` alone), are found in the cluster-wide session list and revoked
//! like the control API revokes a session: durable, enforced, pushed to every node,
//! audited with actor `idp:<name>`, reason `backchannel_logout` and the token's `jti`.
//! The answer is 200, or 400 with `error` and `error_description` (§2.8).

use super::Login;
use crate::error::GatewayError;
use crate::idp::LogoutToken;
use crate::revocation::Scope;
use crate::revocation::engine::{RevokeRequest, normalize_external_id};
use crate::session::registry::SessionInfo;
use crate::web::body::{self, Body};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use std::time::Duration;

/// Logout tokens are small JWTs; anything bigger is not one.
const MAX_BODY: usize = 64 * 1024;

fn refused(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    body::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn bad_request(description: &str) -> Response<Body> {
    refused(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Whether the gateway session `info` was started from the IdP session or user the
/// token names. With a `sid`, that IdP session (and, when the token also names a
/// `sub`, that user); with only a `sub`, every session of that user from this IdP.
fn started_from(info: &SessionInfo, idp: &str, t: &LogoutToken) -> bool {
    if info.idp.is_empty() || info.idp != idp {
        return false;
    }
    let sub_matches = |sub: &String| info.idp_sub == *sub;
    match &t.sid {
        Some(sid) => {
            !sid.is_empty() && info.idp_sid == *sid && t.sub.as_ref().is_none_or(sub_matches)
        }
        None => t
            .sub
            .as_ref()
            .is_some_and(|s| !s.is_empty() && sub_matches(s)),
    }
}

impl Login {
    pub(in crate::login) async fn oidc_backchannel(
        &self,
        name: &str,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let Some(slot) = self.idps.get(name) else {
            return Ok(bad_request("no identity provider of that name"));
        };
        let Ok(bytes) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
            return Ok(bad_request("the request body is too large or unreadable"));
        };
        let bytes = bytes.to_bytes();
        let token = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(bad_request("no logout_token"));
        };
        let provider = match slot.provider() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(idp = %name, error = %e, "back-channel logout while the IdP is unavailable");
                return Ok(refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the identity provider's keys are not available yet",
                ));
            }
        };
        let now = self.auth.now_us();
        let lt = match provider.verify_logout_token(&token, now).await {
            Ok(lt) => lt,
            Err(e) => {
                tracing::warn!(idp = %name, error = %e, "back-channel logout token refused");
                return Ok(bad_request(&e.to_string()));
            }
        };
        let ttl = Duration::from_micros((lt.remember_until - now).max(1) as u64);
        match self
            .shared
            .claim_once(&format!("logout:{name}:{}", lt.jti), ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(idp = %name, jti = %lt.jti, "replayed back-channel logout token refused");
                return Ok(bad_request(
                    "logout token refused: jti seen before (a replay)",
                ));
            }
            Err(e) => {
                tracing::warn!(idp = %name, error = %e, "cannot check a logout token's jti");
                return Ok(refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the cluster state cannot be reached",
                ));
            }
        }
        let ended = self.end_idp_sessions(name, &lt).await?;
        Ok(body::json(
            StatusCode::OK,
            &json!({"sessions_revoked": ended}),
        ))
    }

    /// Revokes every live gateway session the token names, across the cluster.
    async fn end_idp_sessions(&self, idp: &str, lt: &LogoutToken) -> Result<u64, GatewayError> {
        let dir = self.directory.live(None).await;
        if !dir.missing.is_empty() {
            tracing::warn!(idp, missing = ?dir.missing, "back-channel logout: some nodes did not list their sessions; sessions known only to them are not ended");
        }
        let reqs: Vec<RevokeRequest> = dir
            .sessions
            .iter()
            .filter(|s| started_from(&s.info, idp, lt))
            .map(|s| RevokeRequest {
                scope: Scope::Session,
                target: s.info.sid.clone(),
                reason: "backchannel_logout".into(),
                actor: format!("idp:{idp}"),
                // A jti the record cannot keep (too long, control characters) is left
                // out rather than failing the logout.
                external_id: normalize_external_id(Some(&lt.jti)).ok().flatten(),
            })
            .collect();
        if reqs.is_empty() {
            tracing::info!(idp, jti = %lt.jti, sid = ?lt.sid, sub = ?lt.sub, "back-channel logout: no live session to end");
            return Ok(0);
        }
        let n = reqs.len() as u64;
        self.engine
            .revoke_batch(reqs, "revoke")
            .await
            .map_err(|e| GatewayError::Unavailable(format!("back-channel logout: {e}")))?;
        tracing::info!(idp, jti = %lt.jti, sid = ?lt.sid, sub = ?lt.sub, sessions = n, "back-channel logout ended sessions");
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(idp: &str, sub: &str, sid: &str) -> SessionInfo {
        SessionInfo {
            idp: idp.into(),
            idp_sub: sub.into(),
            idp_sid: sid.into(),
            ..Default::default()
        }
    }

    fn token(sub: Option<&str>, sid: Option<&str>) -> LogoutToken {
        LogoutToken {
            sub: sub.map(str::to_string),
            sid: sid.map(str::to_string),
            jti: "j".into(),
            iat: 0,
            remember_until: 0,
        }
    }

    #[test]
    fn which_sessions_a_logout_token_names() {
        let s = info("corp", "u1", "op-s1");
        assert!(started_from(&s, "corp", &token(None, Some("op-s1"))));
        assert!(started_from(&s, "corp", &token(Some("u1"), Some("op-s1"))));
        assert!(!started_from(&s, "corp", &token(Some("u2"), Some("op-s1"))));
        assert!(!started_from(&s, "corp", &token(None, Some("op-s2"))));
        assert!(started_from(&s, "corp", &token(Some("u1"), None)));
        assert!(!started_from(&s, "other", &token(Some("u1"), None)));
        // Built-in users' sessions (no IdP) are never named.
        assert!(!started_from(&info("", "", ""), "", &token(None, Some(""))));
        let no_sid = info("corp", "u1", "");
        assert!(!started_from(&no_sid, "corp", &token(None, Some("op-s1"))));
    }
}
