//! One discovered IdP: its metadata, its keys, and the three things the login flow asks
//! of it: an authorization URL, a code exchange, and an end-session URL.

use super::keys::KeyCache;
use super::pending::{Callback, PendingAuth};
use super::token::{self, IdpIdentity};
use super::{IdpConfig, IdpError};
use crate::clock::Micros;
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreErrorResponseType,
};
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl, RequestTokenError, Scope,
    TokenResponse,
};
use std::time::Duration;
use url::Url;

/// The client type `from_provider_metadata` gives: authorization endpoint set, token and
/// userinfo endpoints as discovered.
type DiscoveredClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovered IdP, ready for sign-ins and logout tokens.
pub struct Provider {
    cfg: IdpConfig,
    http: reqwest::Client,
    client: DiscoveredClient,
    end_session_endpoint: Option<Url>,
    pub(crate) keys: KeyCache,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Fetches `<issuer>/.well-known/openid-configuration` and the JWKS it names.
    /// Fails with [`IdpError::Unavailable`] (saying why) when either cannot be had or
    /// the document's `issuer` is not the configured one.
    pub async fn discover(cfg: IdpConfig, http: &reqwest::Client) -> Result<Provider, IdpError> {
        let unavailable = |reason: String| IdpError::Unavailable {
            idp: cfg.name.clone(),
            reason,
        };
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| unavailable(format!("bad issuer URL: {e}")))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, http)
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if metadata.token_endpoint().is_none() {
            return Err(unavailable("discovery has no token_endpoint".into()));
        }
        let keys = KeyCache::new(metadata.jwks_uri().clone(), metadata.jwks().clone());
        let end_session_endpoint = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .map(|u| u.url().clone());
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(cfg.client_id.clone()),
            Some(ClientSecret::new(cfg.client_secret.clone())),
        );
        Ok(Provider {
            cfg,
            http: http.clone(),
            client,
            end_session_endpoint,
            keys,
        })
    }

    pub fn config(&self) -> &IdpConfig {
        &self.cfg
    }

    /// The URL to send the browser to, and what the callback will need. Always PKCE
    /// S256, `state` and `nonce`; with `force_reauth` also `prompt=login`, `max_age=0`
    /// and the configured `acr_values`, so the IdP's own session cannot complete the
    /// sign-in silently.
    pub fn authorization_url(
        &self,
        redirect_uri: &Url,
        force_reauth: bool,
        now: Micros,
    ) -> (Url, PendingAuth) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_redirect_uri(std::borrow::Cow::Owned(RedirectUrl::from_url(
                redirect_uri.clone(),
            )))
            .set_pkce_challenge(challenge);
        for s in self.cfg.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let mut acr_values = Vec::new();
        if force_reauth {
            req = req
                .add_prompt(CoreAuthPrompt::Login)
                .set_max_age(Duration::ZERO);
            for acr in &self.cfg.mfa_acr_values {
                req = req.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
            }
            acr_values = self.cfg.mfa_acr_values.clone();
        }
        let (url, state, nonce) = req.url();
        let pending = PendingAuth {
            idp: self.cfg.name.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            created: now,
            force_reauth,
            acr_values,
        };
        (url, pending)
    }

    /// Finishes a sign-in: checks the callback against `pending` (IdP, `state`, age,
    /// RFC 9207 `iss`), exchanges the code with the PKCE verifier, and verifies the ID
    /// token (see [`Provider::verify_id_token`]).
    pub async fn exchange(
        &self,
        callback: &Callback,
        pending: &PendingAuth,
        redirect_uri: &Url,
        reauth_after: Option<Micros>,
        now: Micros,
    ) -> Result<IdpIdentity, IdpError> {
        pending.check(&self.cfg.name, &callback.state, now)?;
        if callback
            .iss
            .as_deref()
            .is_some_and(|iss| iss != self.cfg.issuer)
        {
            return Err(IdpError::BadState); // a mix-up: the answer comes from another IdP
        }
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(callback.code.clone()))
            .map_err(|e| IdpError::Exchange(e.to_string()))?
            .set_redirect_uri(std::borrow::Cow::Owned(RedirectUrl::from_url(
                redirect_uri.clone(),
            )))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = response
            .id_token()
            .ok_or_else(|| IdpError::TokenRefused("the token response has no id_token".into()))?
            .to_string();
        self.verify_id_token(&id_token, pending, reauth_after, now)
            .await
    }

    /// Verifies an ID token issued for the sign-in `pending` describes: signature
    /// (JWKS, refetched once on an unknown `kid`), `iss`, `aud`, `azp`, `exp` and `iat`
    /// (with `CLOCK_SKEW`), `nonce`; then email (required, not `email_verified=false`),
    /// groups, and freshness: `auth_time` ≥ `reauth_after` when given, `acr` among the
    /// `acr_values` asked for.
    pub async fn verify_id_token(
        &self,
        id_token: &str,
        pending: &PendingAuth,
        reauth_after: Option<Micros>,
        now: Micros,
    ) -> Result<IdpIdentity, IdpError> {
        let claims = token::verify(self, id_token, &pending.nonce, now).await?;
        let identity = token::identity(&self.cfg, &claims, id_token)?;
        identity.check_fresh(pending, reauth_after)?;
        Ok(identity)
    }

    /// Where to send the browser to end its IdP session too (RP-initiated logout), when
    /// the IdP has an `end_session_endpoint` and `end_session` is on. Without an
    /// `id_token_hint` (the ID token was too large to keep), `client_id` alone says who
    /// asks; IdPs then usually ask the user to confirm.
    pub fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect_uri: &Url,
    ) -> Option<Url> {
        if !self.cfg.end_session {
            return None;
        }
        let mut url = self.end_session_endpoint.clone()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = id_token_hint {
                q.append_pair("id_token_hint", hint);
            }
            q.append_pair(
                "post_logout_redirect_uri",
                post_logout_redirect_uri.as_str(),
            )
            .append_pair("client_id", &self.cfg.client_id);
        }
        Some(url)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

type TokenError = RequestTokenError<
    openidconnect::HttpClientError<reqwest::Error>,
    openidconnect::StandardErrorResponse<CoreErrorResponseType>,
>;

fn token_error(e: TokenError) -> IdpError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let error = r.error().as_ref().to_string();
            let description = r.error_description().cloned();
            match r.error() {
                CoreErrorResponseType::InvalidGrant => {
                    IdpError::CodeRejected { error, description }
                }
                _ => IdpError::Exchange(format!(
                    "{error}{}",
                    description.map(|d| format!(": {d}")).unwrap_or_default()
                )),
            }
        }
        other => IdpError::Exchange(error_chain(&other)),
    }
}

/// An error and its sources on one line (libraries hide the useful part in `source`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
