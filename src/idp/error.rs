//! What can go wrong when signing in with an IdP or taking a logout token from it, in
//! variants precise enough for the login flow to show the right page (and for the
//! back-channel route to answer 400 with a reason).

/// An IdP sign-in or logout-token failure. `Display` is safe to show to the user (it
/// never contains secrets, codes or tokens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpError {
    /// Discovery or the JWKS could not be fetched; the sign-in button says so.
    #[error("the identity provider {idp} is unavailable: {reason}")]
    Unavailable { idp: String, reason: String },
    /// The IdP answered the authorization request with an error (`access_denied`,
    /// `login_required`, ...).
    #[error("the identity provider refused the sign-in: {error}{}", describe(.description))]
    Denied {
        error: String,
        description: Option<String>,
    },
    /// The callback's `state` (or IdP, or issuer) is not the one this browser's sign-in
    /// started with: a forged, crossed or stale callback.
    #[error("this sign-in response does not belong to the sign-in started in this browser")]
    BadState,
    /// The sign-in started too long ago (see `PENDING_MAX_AGE`).
    #[error("the sign-in took too long; please start again")]
    PendingExpired,
    /// The callback lacks `code` or `state`, or is not a query string.
    #[error("malformed sign-in response: {0}")]
    BadCallback(String),
    /// The token endpoint refused the code: expired, already used (a replayed callback)
    /// or issued to another client or redirect URI.
    #[error("the identity provider refused the sign-in code ({error}){}", describe(.description))]
    CodeRejected {
        error: String,
        description: Option<String>,
    },
    /// The code exchange failed for another reason (network, bad client credentials,
    /// an unreadable answer).
    #[error("the code exchange with the identity provider failed: {0}")]
    Exchange(String),
    /// The ID token failed a check: signature, `iss`, `aud`, `azp`, `exp`, `iat`,
    /// `nonce`, or its shape.
    #[error("the identity provider's ID token was refused: {0}")]
    TokenRefused(String),
    /// The ID token is valid but names no usable identity: no email, an unverified
    /// email, groups that are not a list of strings.
    #[error("the identity provider's answer cannot be used: {0}")]
    IdentityRefused(String),
    /// `auth_time` is missing or older than the required re-authentication instant:
    /// start again with `force_reauth`.
    #[error("a fresh sign-in at the identity provider is required")]
    ReauthRequired {
        /// The ID token's `auth_time` (µs), if it had one.
        auth_time: Option<crate::clock::Micros>,
        /// The instant the sign-in had to be after (µs).
        required: crate::clock::Micros,
    },
    /// The ID token's `acr` is not one of the `acr_values` asked for (the second factor
    /// was skipped).
    #[error("the identity provider did not confirm the required second factor (acr {})", .acr.as_deref().unwrap_or("missing"))]
    AcrNotSatisfied {
        acr: Option<String>,
        wanted: Vec<String>,
    },
    /// A back-channel logout token failed a check of Back-Channel Logout 1.0 §2.6.
    #[error("logout token refused: {0}")]
    LogoutTokenRefused(String),
    /// Local setup failed (the HTTP client could not be built).
    #[error("identity provider client setup failed: {0}")]
    Setup(String),
}

impl IdpError {
    /// True when starting the sign-in again with `force_reauth` is the way out.
    pub fn needs_reauth(&self) -> bool {
        matches!(
            self,
            IdpError::ReauthRequired { .. } | IdpError::AcrNotSatisfied { .. }
        )
    }
}

fn describe(d: &Option<String>) -> String {
    d.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
}
