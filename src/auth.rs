//! The authenticate step and token minting: [`Authenticator`] holds the signing keys,
//! the token cache and the revocation set, and nothing else. It turns the request's
//! gateway cookies into verified claims (or says why not) and mints global sessions and
//! app tokens.

use crate::clock::{Micros, Ticker};
use crate::config::App;
use crate::metrics::Metrics;
use crate::revocation::Scope;
use crate::revocation::set::RevocationSet;
use crate::runtime::Runtime;
use crate::session::cookies::{CookieError, GatewayCookies};
use crate::session::keys::KeyRing;
use crate::session::token::{self, Claims, TokenError, Verified, Verifier};
use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

/// Who a new global session is for.
pub struct Identity<'a> {
    pub email: &'a str,
    pub groups: &'a [String],
}

pub struct AppToken {
    pub token: String,
    pub binding: Option<String>,
    pub claims: Claims,
}

pub struct Authenticator {
    keys: ArcSwap<KeyRing>,
    verifier: Verifier,
    revocations: Arc<RevocationSet>,
    ticker: Arc<Ticker>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    pub fn new(
        keys: KeyRing,
        cache_capacity: u64,
        revocations: Arc<RevocationSet>,
        ticker: Arc<Ticker>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            keys: ArcSwap::from_pointee(keys),
            verifier: Verifier::new(cache_capacity),
            revocations,
            ticker,
            metrics,
        }
    }

    pub fn keys(&self) -> Guard<Arc<KeyRing>> {
        self.keys.load()
    }

    /// Installs a reloaded key ring; when a key left the ring, cached verifications
    /// made with it go too.
    pub fn replace_keys(&self, keys: KeyRing) {
        let old = self.keys.load();
        let same = keys.kids().count() == old.kids().count()
            && keys.kids().all(|k| old.kids().any(|o| o == k));
        if !same {
            self.verifier.clear();
        }
        self.keys.store(Arc::new(keys));
    }

    pub fn revocations(&self) -> &RevocationSet {
        &self.revocations
    }

    pub fn now_us(&self) -> Micros {
        self.ticker.now_us()
    }

    pub fn cached_tokens(&self) -> u64 {
        self.verifier.entry_count()
    }

    /// Signature (via the cache), times, audience and issuer of `token`; no binding or
    /// revocation check.
    pub fn verify(&self, token: &str, aud: &str, iss: &str) -> Result<Arc<Verified>, TokenError> {
        let (v, hit) = self
            .verifier
            .verify(&self.keys.load(), token, aud, iss, self.now_us())?;
        self.metrics.cache(hit);
        Ok(v)
    }

    /// Checks the app token (signature via the cache, times, audience, binding cookie,
    /// revocation set) for `app`.
    pub fn check_app(
        &self,
        rt: &Runtime,
        app: &App,
        cookies: &GatewayCookies<'_>,
    ) -> Result<Arc<Verified>, AuthFailure> {
        let token = cookies.app.ok_or(TokenError::Missing)?;
        let v = self.verify(token, &app.name, &rt.config.issuer)?;
        if app.binding_cookie && !v.binding_matches(cookies.binding) {
            return Err(TokenError::Binding.into());
        }
        self.revocation_check(&v, true)?;
        Ok(v)
    }

    /// Checks the global session cookie on the auth domain.
    pub fn check_session(
        &self,
        rt: &Runtime,
        cookies: &GatewayCookies<'_>,
    ) -> Result<Arc<Verified>, AuthFailure> {
        let token = cookies.session.ok_or(TokenError::Missing)?;
        let iss = &rt.config.issuer;
        let v = self.verify(token, iss, iss)?;
        self.revocation_check(&v, false)?;
        Ok(v)
    }

    /// The revocation check, skipped while the set has not changed since this token last
    /// passed it (the version is read before the lookups, so a concurrent revocation is
    /// never missed: it moves the version after its entry is in place).
    fn revocation_check(&self, v: &Verified, app: bool) -> Result<(), AuthFailure> {
        let version = self.revocations.version() + 1;
        if v.not_revoked_at.load(Ordering::Acquire) == version {
            return Ok(());
        }
        if let Some(scope) = self.revocations.check(&v.claims, app) {
            return Err(AuthFailure::Revoked(scope));
        }
        v.not_revoked_at.store(version, Ordering::Release);
        Ok(())
    }

    /// Signs `claims` with the active key.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        token::sign(&self.keys.load(), claims)
    }

    /// A fresh issue instant, later than every one this node handed out before.
    pub fn tick(&self) -> Micros {
        self.ticker.tick()
    }

    /// A new global session for `who`: the signed cookie value and its claims.
    pub fn mint_session(
        &self,
        rt: &Runtime,
        who: &Identity<'_>,
    ) -> Result<(String, Claims), TokenError> {
        let iat_us = self.tick();
        let iat = crate::clock::secs(iat_us);
        let claims = Claims {
            iss: rt.config.issuer.clone(),
            aud: rt.config.issuer.clone(),
            sub: who.email.to_string(),
            email: who.email.to_string(),
            groups: who.groups.to_vec(),
            sid: crate::secrets::random_b64(16),
            jti: crate::secrets::random_b64(12),
            iat,
            exp: iat + rt.config.session.global_duration.as_secs() as i64,
            nbf: None,
            iat_us,
            bnd: None,
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// An app token for the holder of global session `session`: never outlives it.
    pub fn mint_app_token(
        &self,
        rt: &Runtime,
        app: &App,
        session: &Claims,
    ) -> Result<AppToken, TokenError> {
        let iat_us = self.tick();
        let iat = crate::clock::secs(iat_us);
        let exp = (iat + app.session_duration.as_secs() as i64).min(session.exp);
        if exp <= iat {
            return Err(TokenError::Expired);
        }
        let binding = app.binding_cookie.then(|| crate::secrets::random_b64(32));
        let claims = Claims {
            iss: rt.config.issuer.clone(),
            aud: app.name.clone(),
            sub: session.sub.clone(),
            email: session.email.clone(),
            groups: session.groups.clone(),
            sid: session.sid.clone(),
            jti: crate::secrets::random_b64(12),
            iat,
            exp,
            nbf: None,
            iat_us,
            bnd: binding.as_deref().map(token::binding_claim),
        };
        Ok(AppToken {
            token: self.sign(&claims)?,
            binding,
            claims,
        })
    }
}
