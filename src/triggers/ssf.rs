//! The Shared Signals push endpoint (`POST /ssf/<name>/events`, RFC 8935): the
//! stream's receiver verifies the SET, its `jti` is claimed once across the cluster
//! (a retransmission is acknowledged and not applied again), each event's action is
//! applied, then 202 with an empty body. Refusals are 400 (401 for a wrong
//! `Authorization`) with RFC 8935's `{"err", "description"}`.

use super::Signals;
use super::apply::Cause;
use super::dedup::Delivery;
use crate::error::GatewayError;
use crate::revocation::engine::RevokeError;
use crate::revocation::{ANY_GROUP, Scope, member_target};
use crate::runtime::Runtime;
use crate::signals::ssf::{
    Receiver, ReceiverPolicy, SsfAction, SsfEvent, SsfRequest, SsfUser, VerifiedSet,
};
use crate::web::body::{self, Body};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// Largest pushed body read (the receiver refuses SETs above 64 KiB itself).
const MAX_BODY: usize = 128 * 1024;

/// The receivers of one config generation (each keeps its transmitter's keys).
pub(super) struct Receivers {
    generation: u64,
    by_name: HashMap<String, Arc<Receiver>>,
}

/// What one event did.
enum Done {
    Applied(u64),
    Ignored(&'static str),
}

fn set_error(status: StatusCode, err: &str, description: &str) -> Response<Body> {
    body::json(status, &json!({"err": err, "description": description}))
}

impl Signals {
    fn receivers(&self, rt: &Runtime) -> Arc<Receivers> {
        let mut slot = self
            .receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = slot.as_ref().filter(|r| r.generation == rt.generation) {
            return r.clone();
        }
        let mut by_name = HashMap::new();
        for cfg in &rt.config.signals.ssf {
            match Receiver::new(cfg.clone(), ReceiverPolicy::default()) {
                Ok(r) => {
                    by_name.insert(cfg.name.clone(), Arc::new(r));
                }
                Err(e) => {
                    tracing::error!(stream = %cfg.name, error = %e, "cannot build the SSF receiver")
                }
            }
        }
        let r = Arc::new(Receivers {
            generation: rt.generation,
            by_name,
        });
        *slot = Some(r.clone());
        r
    }

    pub(super) async fn ssf(
        &self,
        rt: &Runtime,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let path = req.uri().path();
        let name = path
            .strip_prefix(super::SSF_PREFIX)
            .and_then(|p| p.strip_suffix("/events"))
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(str::to_string);
        let receiver = name
            .as_ref()
            .and_then(|n| self.receivers(rt).by_name.get(n).cloned());
        let (Some(name), Some(receiver)) = (name, receiver) else {
            return Err(GatewayError::NotFound);
        };
        if req.method() != http::Method::POST {
            return Err(GatewayError::MethodNotAllowed(vec![http::Method::POST]));
        }
        let trigger = format!("ssf:{name}");
        self.metrics.received(&trigger);
        let header_of = |h: header::HeaderName| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (authorization, content_type) = (
            header_of(header::AUTHORIZATION),
            header_of(header::CONTENT_TYPE),
        );
        let Ok(bytes) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
            self.metrics.refused(&trigger, "invalid_request");
            return Ok(set_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body is too large",
            ));
        };
        let bytes = bytes.to_bytes();
        let delivery = SsfRequest {
            authorization: authorization.as_deref(),
            content_type: content_type.as_deref(),
            body: &bytes,
        };
        let set = match receiver.receive(&delivery, self.engine.now_us()).await {
            Ok(set) => set,
            Err(e) => {
                tracing::info!(stream = %name, error = %e, "SET refused");
                self.metrics.refused(&trigger, e.code.as_str());
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                return Ok(body::json(status, &e.body()));
            }
        };
        Ok(self.accept_set(rt, &trigger, &set).await)
    }

    /// Applies a verified SET once across the cluster; 202 when done or seen before.
    async fn accept_set(&self, rt: &Runtime, trigger: &str, set: &VerifiedSet) -> Response<Body> {
        let key = format!("{trigger}:{}", set.jti);
        let unavailable = || {
            set_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the gateway cannot record this event now; retry",
            )
        };
        match self.begin_once(&key).await {
            Ok(Delivery::First) => {}
            Ok(Delivery::Repeat) => {
                tracing::info!(trigger, jti = %set.jti, "SET seen before: acknowledged, not applied again");
                self.metrics.ignored(trigger, "replayed");
                return accepted();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a SET's jti");
                return unavailable();
            }
        }
        for ev in &set.events {
            match self.apply_event(rt, trigger, &set.jti, ev).await {
                Ok(Done::Applied(n)) => self.metrics.applied(trigger, n),
                Ok(Done::Ignored(why)) => {
                    tracing::info!(trigger, jti = %set.jti, event = %ev.event_type, why, "SET event acknowledged, not applied");
                    self.metrics.ignored(trigger, why);
                }
                Err(e) => {
                    tracing::error!(error = %e, trigger, jti = %set.jti, "cannot apply a SET");
                    return unavailable();
                }
            }
        }
        // Transmitters retry for a while; SETs older than a day are refused anyway.
        let keep = ReceiverPolicy::default().max_age + Duration::from_secs(3600);
        if let Err(e) = self.applied_once(&key, keep).await {
            tracing::warn!(error = %e, trigger, jti = %set.jti, "cannot record a SET as applied");
        }
        accepted()
    }

    async fn apply_event(
        &self,
        rt: &Runtime,
        trigger: &str,
        jti: &str,
        ev: &SsfEvent,
    ) -> Result<Done, RevokeError> {
        let short = ev.event_type.rsplit('/').next().unwrap_or(&ev.event_type);
        let why = match &ev.reason {
            Some(r) => format!("ssf: {short}: {r}"),
            None => format!("ssf: {short}"),
        };
        let cause = Cause::new(trigger.to_string(), Some(jti), &why);
        match &ev.action {
            SsfAction::Verify { state } => {
                tracing::info!(trigger, state = ?state, "SSF verification event received");
                Ok(Done::Ignored("verification"))
            }
            SsfAction::Ignore { why } if why.starts_with("event type") => {
                Ok(Done::Ignored("unknown_event"))
            }
            SsfAction::Ignore { .. } => Ok(Done::Ignored("unknown_subject")),
            SsfAction::EndSession { session, user } => {
                let sids = self.sessions_named(rt, session).await;
                if !sids.is_empty() {
                    return Ok(Done::Applied(
                        self.revoke(Scope::Session, sids, &cause, "ssf_session_revoked")
                            .await?,
                    ));
                }
                // The session is not known here (the IdP gave no sid at sign-in): end
                // all of the user's sessions rather than none.
                match user {
                    Some(u) => {
                        self.for_user(rt, u, Scope::User, &cause, "ssf_session_revoked")
                            .await
                    }
                    None => Ok(Done::Ignored("unknown_session")),
                }
            }
            SsfAction::EndAllSessions { user } => {
                self.for_user(rt, user, Scope::User, &cause, "ssf_revoke")
                    .await
            }
            SsfAction::EndAppTokens { user } => {
                self.for_user(rt, user, Scope::Member, &cause, "ssf_claims_change")
                    .await
            }
            SsfAction::Disable { user } => self.disable(rt, user, true, &cause).await,
            SsfAction::Enable { user } => self.disable(rt, user, false, &cause).await,
            SsfAction::Purge { user } => self.purge(rt, user, &cause).await,
        }
    }

    /// Revokes every address `user` names: `user` scope, or `member` with every group
    /// (the user's app tokens; the global session stays).
    async fn for_user(
        &self,
        rt: &Runtime,
        user: &SsfUser,
        scope: Scope,
        cause: &Cause,
        action: &'static str,
    ) -> Result<Done, RevokeError> {
        let emails = self.users_named(rt, user).await;
        if emails.is_empty() {
            return Ok(Done::Ignored("unknown_subject"));
        }
        let targets: Vec<String> = match scope {
            Scope::Member => emails.iter().map(|e| member_target(e, ANY_GROUP)).collect(),
            _ => emails,
        };
        Ok(Done::Applied(
            self.revoke(scope, targets, cause, action).await?,
        ))
    }

    /// `account-disabled`: the flag on every node, then every session and token ended.
    /// `account-enabled`: the flag cleared.
    async fn disable(
        &self,
        rt: &Runtime,
        user: &SsfUser,
        disabled: bool,
        cause: &Cause,
    ) -> Result<Done, RevokeError> {
        let emails = self.users_named(rt, user).await;
        if emails.is_empty() {
            return Ok(Done::Ignored("unknown_subject"));
        }
        for e in &emails {
            self.accounts
                .set_disabled(e, disabled, &cause.actor, &cause.reason)
                .await
                .map_err(|e| RevokeError::Durability(e.to_string()))?;
        }
        if !disabled {
            for e in &emails {
                self.note("ssf_account_enabled", e, cause).await;
            }
            return Ok(Done::Applied(emails.len() as u64));
        }
        let n = self
            .revoke(Scope::User, emails, cause, "ssf_account_disabled")
            .await?;
        Ok(Done::Applied(n))
    }

    /// `account-purged`: every session and token ended, and what this gateway holds
    /// about the account from signals forgotten (its disabled flag).
    async fn purge(
        &self,
        rt: &Runtime,
        user: &SsfUser,
        cause: &Cause,
    ) -> Result<Done, RevokeError> {
        let emails = self.users_named(rt, user).await;
        if emails.is_empty() {
            return Ok(Done::Ignored("unknown_subject"));
        }
        let n = self
            .revoke(Scope::User, emails.clone(), cause, "ssf_account_purged")
            .await?;
        for e in &emails {
            if self.accounts.disabled_by(e).is_some() {
                self.accounts
                    .set_disabled(e, false, &cause.actor, &cause.reason)
                    .await
                    .map_err(|e| RevokeError::Durability(e.to_string()))?;
            }
        }
        Ok(Done::Applied(n))
    }
}

fn accepted() -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}
