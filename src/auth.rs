//! The authenticate step: turn the request's gateway cookies into verified claims, or
//! say why not. Also minting of global sessions and app tokens.

use crate::config::{App, User};
use crate::gateway::{Gateway, Runtime};
use crate::login::codes::Pending;
use crate::revocation::Scope;
use crate::session::cookies::{CookieError, GatewayCookies};
use crate::session::token::{self, Claims, TokenError, Verified};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("{0}")]
    Cookie(#[from] CookieError),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("session revoked ({})", .0.as_str())]
    Revoked(Scope),
}

impl AuthFailure {
    /// A short machine-readable code for the 401 body and logs.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Cookie(_) => "invalid_cookie",
            AuthFailure::Token(TokenError::Missing) => "no_session",
            AuthFailure::Token(TokenError::Expired) => "session_expired",
            AuthFailure::Token(TokenError::Binding) => "binding_mismatch",
            AuthFailure::Token(_) => "invalid_token",
            AuthFailure::Revoked(_) => "session_revoked",
        }
    }
}

/// Checks the app token (signature via the cache, times, audience, binding cookie,
/// revocation set) for `app`.
pub fn check_app(
    gw: &Gateway,
    rt: &Runtime,
    app: &App,
    cookies: &GatewayCookies<'_>,
) -> Result<Arc<Verified>, AuthFailure> {
    let token = cookies.app.ok_or(TokenError::Missing)?;
    let keys = gw.keys.load();
    let (v, hit) = gw
        .verifier
        .verify(&keys, token, &app.name, &rt.config.issuer, gw.now_us())?;
    gw.metrics.cache(hit);
    if app.binding_cookie && !v.binding_matches(cookies.binding) {
        return Err(TokenError::Binding.into());
    }
    revocation_check(gw, &v, true)?;
    Ok(v)
}

/// The revocation check, skipped while the set has not changed since this token last
/// passed it (the version is read before the lookups, so a concurrent revocation is
/// never missed: it moves the version after its entry is in place).
fn revocation_check(gw: &Gateway, v: &Verified, app: bool) -> Result<(), AuthFailure> {
    use std::sync::atomic::Ordering;
    let version = gw.revocations.version() + 1;
    if v.not_revoked_at.load(Ordering::Acquire) == version {
        return Ok(());
    }
    if let Some(scope) = gw.revocations.check(&v.claims, app) {
        return Err(AuthFailure::Revoked(scope));
    }
    v.not_revoked_at.store(version, Ordering::Release);
    Ok(())
}

/// Checks the global session cookie on the auth domain.
pub fn check_session(
    gw: &Gateway,
    rt: &Runtime,
    cookies: &GatewayCookies<'_>,
) -> Result<Arc<Verified>, AuthFailure> {
    let token = cookies.session.ok_or(TokenError::Missing)?;
    let keys = gw.keys.load();
    let iss = &rt.config.issuer;
    let (v, hit) = gw.verifier.verify(&keys, token, iss, iss, gw.now_us())?;
    gw.metrics.cache(hit);
    revocation_check(gw, &v, false)?;
    Ok(v)
}

fn secs(us: i64) -> i64 {
    crate::clock::secs(us)
}

/// A new global session for `user`: the signed cookie value and its claims.
pub fn mint_session(
    gw: &Gateway,
    rt: &Runtime,
    user: &User,
) -> Result<(String, Claims), TokenError> {
    let iat_us = gw.ticker.tick();
    let iat = secs(iat_us);
    let claims = Claims {
        iss: rt.config.issuer.clone(),
        aud: rt.config.issuer.clone(),
        sub: user.email.clone(),
        email: user.email.clone(),
        groups: user.groups.clone(),
        sid: crate::secrets::random_b64(16),
        jti: crate::secrets::random_b64(12),
        iat,
        exp: iat + rt.config.session.global_duration.as_secs() as i64,
        nbf: None,
        iat_us,
        bnd: None,
    };
    let keys = gw.keys.load();
    Ok((token::sign(&keys, &claims)?, claims))
}

pub struct AppToken {
    pub token: String,
    pub binding: Option<String>,
    pub claims: Claims,
}

/// An app token minted from a redeemed hand-off: never outlives the global session.
pub fn mint_app_token(
    gw: &Gateway,
    rt: &Runtime,
    app: &App,
    p: &Pending,
) -> Result<AppToken, TokenError> {
    let iat_us = gw.ticker.tick();
    let iat = secs(iat_us);
    let exp = (iat + app.session_duration.as_secs() as i64).min(p.session.exp);
    if exp <= iat {
        return Err(TokenError::Expired);
    }
    let binding = app.binding_cookie.then(|| crate::secrets::random_b64(32));
    let claims = Claims {
        iss: rt.config.issuer.clone(),
        aud: app.name.clone(),
        sub: p.session.sub.clone(),
        email: p.session.email.clone(),
        groups: p.session.groups.clone(),
        sid: p.session.sid.clone(),
        jti: crate::secrets::random_b64(12),
        iat,
        exp,
        nbf: None,
        iat_us,
        bnd: binding.as_deref().map(token::binding_claim),
    };
    let keys = gw.keys.load();
    Ok(AppToken {
        token: token::sign(&keys, &claims)?,
        binding,
        claims,
    })
}
