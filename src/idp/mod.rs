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

/// How far the IdP's clock may be from ours for `exp`, `iat` and logout-token times.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// An ID token's `iat` must be at most this old when it reaches us (it comes straight
/// from the token endpoint, so anything older is a replay or a badly broken clock).
pub const ID_TOKEN_MAX_AGE: Duration = Duration::from_secs(600);

/// Unknown signing keys trigger a JWKS refetch at most this often (per IdP).
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

pub use crate::config::idp::{IdpConfig, Reauth};

fn micros(d: Duration) -> crate::clock::Micros {
    d.as_micros() as crate::clock::Micros
}
