//! Signing in with an OpenID Connect identity provider, on the auth domain:
//!
//! - `GET /oidc/<name>/start?return_to=` seals the sign-in (PKCE verifier, state, nonce,
//!   the page to return to) into a cookie and sends the browser to the IdP, asking for
//!   a fresh authentication when this browser's session was revoked;
//! - `GET /oidc/<name>/callback` opens that cookie, exchanges the code (the protocol
//!   is `crate::idp`), applies the sign-in rules (`Login::may_sign_in`), requires a
//!   fresh authentication when the user's sessions were revoked since the IdP last
//!   saw them (restarting once with `prompt=login`), and starts the global session;
//! - `POST /oidc/<name>/backchannel-logout` (see `backchannel`) and the RP-initiated
//!   logout (see `logout`).
//!
//! Anything that goes wrong shows a page saying what, with a way to start again: never
//! a 500 for the IdP's or the browser's mistakes, and never a redirect loop (a sign-in
//! restarts at most once, from a sign-in that did not force re-authentication).

mod backchannel;
mod logout;
mod reauth;
mod state;

pub use state::{IdpLink, LINK_COOKIE, PENDING_COOKIE, PendingSignIn};

use super::Login;
use super::admission::Refusal;
use super::pages::{self, IdpButton};
use super::signin::{IdpSession, NewSession, admin_return_path, validate_return_to};
use crate::clock::Micros;
use crate::error::GatewayError;
use crate::idp::{Callback, IdpError, IdpIdentity, IdpSlot, PENDING_MAX_AGE, Provider, Reauth};
use crate::runtime::Runtime;
use crate::web::body::{self, Body};
use crate::web::cookie::{CookieSpec, SameSite, append_cookie, set_cookie};
use crate::web::ctx::ReqCtx;
use crate::web::html::html;
use crate::web::query;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use url::Url;

/// Why an IdP sign-in did not finish.
#[derive(Debug)]
enum Failure {
    Idp(IdpError),
    /// The browser has no (or no usable) sealed sign-in for this IdP.
    NoPending,
    /// This sign-in response was used already (a replayed callback).
    Replayed,
    /// The user was identified but may not sign in now.
    Refused(Refusal),
    /// Ours, not the IdP's or the browser's.
    Gateway(GatewayError),
}

impl From<IdpError> for Failure {
    fn from(e: IdpError) -> Self {
        Failure::Idp(e)
    }
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Gateway(e)
    }
}

/// The status and title of the page an IdP error gets.
fn idp_error_page(e: &IdpError) -> (StatusCode, &'static str) {
    match e {
        IdpError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "Sign-in unavailable"),
        IdpError::Denied { .. } => (StatusCode::FORBIDDEN, "Sign-in refused"),
        IdpError::BadState
        | IdpError::PendingExpired
        | IdpError::BadCallback(_)
        | IdpError::CodeRejected { .. }
        | IdpError::LogoutTokenRefused(_) => (StatusCode::BAD_REQUEST, "Sign-in failed"),
        IdpError::TokenRefused(_) | IdpError::IdentityRefused(_) => {
            (StatusCode::FORBIDDEN, "Sign-in refused")
        }
        IdpError::ReauthRequired { .. } | IdpError::AcrNotSatisfied { .. } => {
            (StatusCode::FORBIDDEN, "Fresh sign-in required")
        }
        IdpError::Exchange(_) | IdpError::Setup(_) => (StatusCode::BAD_GATEWAY, "Sign-in failed"),
    }
}

/// `return_to` as carried through the IdP: only a configured app's URL or a page of
/// the admin console, bounded.
fn clean_return_to(rt: &Runtime, return_to: Option<String>) -> String {
    let usable = |r: &str| {
        validate_return_to(rt, r).is_some()
            || admin_return_path(&rt.config.auth_domain, r).is_some()
    };
    return_to
        .filter(|r| r.len() <= state::MAX_RETURN_TO && usable(r))
        .unwrap_or_default()
}

/// The auth domain's sign-in page again, keeping the page to return to.
fn login_again(return_to: &str) -> String {
    if return_to.is_empty() {
        "/login".into()
    } else {
        format!("/login?{}", query::encode(&[("return_to", return_to)]))
    }
}

fn pending_path(idp: &str) -> String {
    format!("/oidc/{idp}/")
}

/// Deletes the pending sign-in cookie (it lives under the IdP's path).
fn clear_pending(h: &mut HeaderMap, idp: &str) {
    append_cookie(
        h,
        &set_cookie(&CookieSpec {
            name: PENDING_COOKIE,
            value: "",
            max_age: Some(Duration::ZERO),
            http_only: true,
            same_site: SameSite::Lax,
            path: &pending_path(idp),
        }),
    );
}

impl Login {
    /// The sign-in buttons: one per IdP, saying so when it cannot be reached; with
    /// `reauth`, each asks its IdP for a fresh authentication.
    pub(super) fn idp_buttons(&self, return_to: &str, reauth: bool) -> Vec<IdpButton> {
        self.idps
            .all()
            .iter()
            .map(|slot| {
                let cfg = slot.config();
                IdpButton {
                    label: cfg.display_name.clone(),
                    href: start_url(&cfg.name, return_to, reauth),
                    available: slot.provider().is_ok(),
                }
            })
            .collect()
    }

    /// With exactly one IdP, reachable, and no built-in users, `/login` goes straight
    /// to it.
    pub(super) fn only_idp(
        &self,
        rt: &Runtime,
        return_to: &str,
        reauth: bool,
    ) -> Option<Response<Body>> {
        let slots = self.idps.all();
        let [slot] = slots.as_slice() else {
            return None;
        };
        if !rt.users.is_empty() || slot.provider().is_err() {
            return None;
        }
        let to = start_url(&slot.config().name, return_to, reauth);
        Some(body::redirect(StatusCode::FOUND, &to))
    }

    /// `GET /oidc/<name>/start`: to the IdP.
    pub(super) fn oidc_start(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        h: &HeaderMap,
        name: &str,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let slot = self.idps.get(name).ok_or(GatewayError::NotFound)?;
        let return_to = clean_return_to(rt, query::param(q, "return_to"));
        let provider = match slot.provider() {
            Ok(p) => p,
            Err(e) => return Ok(self.failure_page(&slot, &return_to, Failure::Idp(e))),
        };
        // `reauth=1`: the admin console wants proof the user is at the keyboard now.
        let asked = query::param(q, "reauth").as_deref() == Some("1");
        let reauth_after = match provider.config().reauth {
            Reauth::Require => {
                let revoked = self.browser_revoked_at(rt, h);
                if let Some(t) = revoked {
                    tracing::info!(idp = %name, revoked_at = t, "this browser's session was revoked: asking the IdP for a fresh sign-in");
                }
                revoked.max(asked.then(|| self.auth.now_us()))
            }
            Reauth::Off => None,
        };
        self.to_idp(rt, ctx, &provider, return_to, reauth_after)
    }

    /// Seals a new sign-in into the pending cookie and sends the browser to the IdP;
    /// with `reauth_after`, the IdP is asked for a fresh authentication.
    fn to_idp(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        provider: &Provider,
        return_to: String,
        reauth_after: Option<Micros>,
    ) -> Result<Response<Body>, GatewayError> {
        let name = &provider.config().name;
        let origin = ctx.origin_for(&rt.config.auth_domain);
        let redirect_uri = Url::parse(&format!("{origin}/oidc/{name}/callback"))
            .map_err(|e| GatewayError::Internal(format!("redirect URI: {e}")))?;
        let now = self.auth.now_us();
        let (url, auth) = provider.authorization_url(&redirect_uri, reauth_after.is_some(), now);
        let pending = PendingSignIn {
            auth,
            return_to,
            redirect_uri: redirect_uri.to_string(),
            reauth_after,
        };
        let sealed = pending
            .seal(self.auth.keys().sealer())
            .ok_or_else(|| GatewayError::Internal("cannot seal the sign-in state".into()))?;
        let mut resp = body::redirect(StatusCode::FOUND, url.as_str());
        append_cookie(
            resp.headers_mut(),
            &set_cookie(&CookieSpec {
                name: PENDING_COOKIE,
                value: &sealed,
                max_age: Some(PENDING_MAX_AGE),
                http_only: true,
                // The callback is a cross-site top-level GET: Lax goes along, Strict not.
                same_site: SameSite::Lax,
                path: &pending_path(name),
            }),
        );
        Ok(resp)
    }

    /// `GET /oidc/<name>/callback`: finishes the sign-in, or says why not.
    pub(super) async fn oidc_callback(
        &self,
        rt: &Arc<Runtime>,
        ctx: &ReqCtx,
        h: &HeaderMap,
        name: &str,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let slot = self.idps.get(name).ok_or(GatewayError::NotFound)?;
        let pending = PendingSignIn::find(self.auth.keys().sealer(), h, name);
        let return_to = pending
            .as_ref()
            .map(|p| p.return_to.clone())
            .unwrap_or_default();
        let mut resp = match self.finish(rt, ctx, h, &slot, pending, q).await {
            Ok(Step::Restarted(resp)) => return Ok(resp), // a new pending cookie is set
            Ok(Step::Done(resp)) => resp,
            Err(Failure::Gateway(e)) => return Err(e),
            Err(f) => self.failure_page(&slot, &return_to, f),
        };
        clear_pending(resp.headers_mut(), name);
        Ok(resp)
    }

    async fn finish(
        &self,
        rt: &Arc<Runtime>,
        ctx: &ReqCtx,
        h: &HeaderMap,
        slot: &IdpSlot,
        pending: Option<PendingSignIn>,
        q: Option<&str>,
    ) -> Result<Step, Failure> {
        let name = slot.config().name.as_str();
        let cb = Callback::from_query(q.unwrap_or(""))?;
        let pending = pending.ok_or(Failure::NoPending)?;
        let provider = slot.provider()?;
        let now = self.auth.now_us();
        pending.auth.check(name, &cb.state, now)?;
        self.claim_state(name, &pending.auth.state).await?;
        let redirect_uri = Url::parse(&pending.redirect_uri)
            .map_err(|e| IdpError::BadCallback(format!("redirect URI: {e}")))?;
        let exchanged = provider
            .exchange(&cb, &pending.auth, &redirect_uri, pending.reauth_after, now)
            .await;
        let identity = match exchanged {
            Err(e) if e.needs_reauth() && !pending.auth.force_reauth => {
                let after = pending.reauth_after.unwrap_or(now);
                return self.restart(rt, ctx, &provider, pending, after, &e);
            }
            other => other?,
        };
        self.may_sign_in(rt, &identity.email)
            .map_err(Failure::Refused)?;
        let required = match provider.config().reauth {
            Reauth::Require => self.reauth_required(rt, &identity, now).await,
            Reauth::Off => None,
        };
        let required = required.max(pending.reauth_after);
        if let Err(e) = identity.check_fresh(&pending.auth, required) {
            return match required {
                Some(after) if e.needs_reauth() && !pending.auth.force_reauth => {
                    self.restart(rt, ctx, &provider, pending, after, &e)
                }
                _ => Err(e.into()),
            };
        }
        let ua = h
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // When the user authenticated: the IdP's word; an IdP configured not to be
        // asked for fresh sign-ins (`reauth = "off"`) is trusted as of now.
        let authenticated_us = match provider.config().reauth {
            Reauth::Require => identity.auth_time,
            Reauth::Off => Some(now),
        };
        let to = (pending.return_to.as_str(), authenticated_us);
        Ok(Step::Done(self.signed_in_with(rt, ctx, &identity, ua, to)?))
    }

    /// Marks the sign-in's `state` as used across the cluster: a callback works once,
    /// whatever the IdP does with a code it sees again.
    async fn claim_state(&self, idp: &str, state: &str) -> Result<(), Failure> {
        match self
            .shared
            .claim_once(&format!("oidc-state:{idp}:{state}"), PENDING_MAX_AGE)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::Replayed),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check that a sign-in response is unused");
                Err(Failure::Gateway(GatewayError::Unavailable(
                    "sign-in is unavailable: the cluster state cannot be reached".into(),
                )))
            }
        }
    }

    /// Starts the sign-in again, this time asking the IdP for a fresh authentication.
    fn restart(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        provider: &Provider,
        pending: PendingSignIn,
        after: Micros,
        why: &IdpError,
    ) -> Result<Step, Failure> {
        tracing::info!(idp = %provider.config().name, reason = %why, required_after = after, "the IdP's sign-in is older than a revocation: asking it to authenticate the user again");
        let resp = self.to_idp(rt, ctx, provider, pending.return_to, Some(after))?;
        Ok(Step::Restarted(resp))
    }

    /// The global session for `identity`, the link to its IdP session, and on to the
    /// page first asked for; `to` is that page and when the user authenticated.
    fn signed_in_with(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        identity: &IdpIdentity,
        user_agent: &str,
        to: (&str, Option<Micros>),
    ) -> Result<Response<Body>, GatewayError> {
        let (return_to, authenticated_us) = to;
        let who = NewSession {
            authenticated_us,
            email: &identity.email,
            groups: &identity.groups,
            idp: Some(IdpSession {
                idp: &identity.idp,
                sub: &identity.sub,
                sid: identity.sid.as_deref(),
            }),
        };
        let (mut resp, claims) = self.start_session(rt, ctx, &who, user_agent, return_to)?;
        tracing::info!(idp = %identity.idp, email = %identity.email, sid = %claims.sid, idp_sid = ?identity.sid, "signed in through an identity provider");
        let link = IdpLink {
            idp: identity.idp.clone(),
            sid: claims.sid.clone(),
            id_token: Some(identity.id_token.clone()),
        };
        if let Some(sealed) = link.seal(self.auth.keys().sealer()) {
            append_cookie(
                resp.headers_mut(),
                &set_cookie(&CookieSpec {
                    name: LINK_COOKIE,
                    value: &sealed,
                    max_age: Some(rt.config.session.global_duration),
                    http_only: true,
                    same_site: SameSite::Lax,
                    path: "/",
                }),
            );
        }
        Ok(resp)
    }

    /// The page for a sign-in that did not finish, with a link to start again.
    fn failure_page(&self, slot: &IdpSlot, return_to: &str, f: Failure) -> Response<Body> {
        let idp = &slot.config().display_name;
        if !matches!(f, Failure::Gateway(_)) {
            self.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
        }
        let (status, title, message, retry_after) = match f {
            Failure::Idp(e) => {
                let (status, title) = idp_error_page(&e);
                tracing::info!(idp = %slot.config().name, error = %e, "IdP sign-in failed");
                let message = match &e {
                    IdpError::Unavailable { .. } => {
                        format!("{idp} cannot be reached right now. Please try again in a moment.")
                    }
                    other => format!("{other}."),
                };
                (status, title, message, None)
            }
            Failure::NoPending => (
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                format!(
                    "This browser has no sign-in with {idp} in progress: it expired, finished already, or was started in another browser."
                ),
                None,
            ),
            Failure::Replayed => (
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "This sign-in response was used already.".to_string(),
                None,
            ),
            Failure::Refused(r) => (r.status, "Sign-in refused", r.message, r.retry_after),
            Failure::Gateway(e) => (e.status(), "Sign-in failed", e.to_string(), None),
        };
        let mut resp = html(
            status,
            pages::idp_error(title, &message, &login_again(return_to)),
        );
        if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// What a callback led to.
enum Step {
    /// Signed in: the response sends the browser on.
    Done(Response<Body>),
    /// Sent back to the IdP for a fresh authentication (a new pending cookie is set).
    Restarted(Response<Body>),
}

/// `/oidc/<idp>/start`, with the page to return to and whether a fresh authentication
/// is asked for (`reauth=1`: the admin console's "sign in again").
fn start_url(idp: &str, return_to: &str, reauth: bool) -> String {
    let mut pairs = Vec::new();
    if !return_to.is_empty() {
        pairs.push(("return_to", return_to));
    }
    if reauth {
        pairs.push(("reauth", "1"));
    }
    if pairs.is_empty() {
        format!("/oidc/{idp}/start")
    } else {
        format!("/oidc/{idp}/start?{}", query::encode(&pairs))
    }
}
