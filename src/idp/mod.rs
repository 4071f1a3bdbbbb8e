//! OpenID Connect identity providers: the protocol layer of "sign in with the company's
//! IdP" and of OpenID Connect Back-Channel Logout 1.0.
//!
//! It knows no HTTP routes, cookies or sessions: the login flow asks it for an
//! authorization URL (and seals the returned [`PendingAuth`] into a cookie), hands the
//! callback back to [`Provider::exchange`], and gets a verified [`IdpIdentity`]. The
//! back-channel logout route hands the `logout_token` to
//! [`Provider::verify_logout_token`] and gets the `sid`/`sub` to end and the `jti` to
//! remember. Time is always a parameter (`now: Micros`), so expiry is testable exactly.
//!
//! The protocol itself is the `openidconnect` crate (discovery, PKCE, the ID token
//! checks); logout tokens, which it does not model, are checked with `jsonwebtoken`
//! against the same JWKS cache.

mod error;
mod http;
mod keys;
mod logout;
mod pending;
mod provider;
mod slot;
mod token;

pub use error::IdpError;
pub use http::http_client;
pub use logout::{BACKCHANNEL_LOGOUT_EVENT, LOGOUT_TOKEN_MAX_AGE, LogoutToken};
pub use pending::{Callback, PENDING_MAX_AGE, PendingAuth};
pub use provider::Provider;
pub use slot::{IdpSlot, IdpStatus};
pub use token::IdpIdentity;

use std::time::Duration;

// The validated `[[idp]]` file tables and their rules live with the rest of the config.
// Until the config module declares it, it is compiled here so its unit tests run.
// (Remove this line when `pub mod idp;` is added to src/config/mod.rs.)
#[cfg(test)]
#[path = "../config/idp.rs"]
mod config_idp;

/// How far the IdP's clock may be from ours for `exp`, `iat` and logout-token times.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// An ID token's `iat` must be at most this old when it reaches us (it comes straight
/// from the token endpoint, so anything older is a replay or a badly broken clock).
pub const ID_TOKEN_MAX_AGE: Duration = Duration::from_secs(600);

/// Unknown signing keys trigger a JWKS refetch at most this often (per IdP).
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// One validated `[[idp]]` table.
#[derive(Clone, PartialEq, Eq)]
pub struct IdpConfig {
    /// Slug used in URLs (`/oidc/<name>/callback`) and audit actors (`idp:<name>`).
    pub name: String,
    /// Text of the sign-in button.
    pub display_name: String,
    /// The issuer exactly as the IdP writes it in `iss`; discovery is fetched from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for; `openid` is always sent.
    pub scopes: Vec<String>,
    /// The ID token claim holding the user's groups.
    pub groups_claim: String,
    /// Send the browser to the IdP's `end_session_endpoint` on logout.
    pub end_session: bool,
    /// `acr_values` asked for when re-authentication is forced; the ID token's `acr`
    /// must then be one of them.
    pub mfa_acr_values: Vec<String>,
}

impl std::fmt::Debug for IdpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("end_session", &self.end_session)
            .field("mfa_acr_values", &self.mfa_acr_values)
            .finish()
    }
}

fn micros(d: Duration) -> crate::clock::Micros {
    d.as_micros() as crate::clock::Micros
}
