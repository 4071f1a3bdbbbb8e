//! Whether a user, once identified (by password or by an identity provider), may start
//! a global session now. The one hook both sign-in paths call ([`Login::may_sign_in`]),
//! so every rule added here holds for every way in: the organisation's directory (an
//! account SCIM deactivated or deleted, or a Shared Signals `account-disabled`) and the
//! relogin lockout after a user revocation.

use super::Login;
use crate::revocation::Scope;
use crate::runtime::Runtime;
use http::StatusCode;
use std::sync::atomic::Ordering;

/// Why a sign-in is refused: the status, the message for the user, and how long to
/// wait when waiting helps (seconds, for Retry-After).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl Login {
    /// Refuses a sign-in of `email` that must not happen now; every sign-in path calls
    /// it after identifying the user and before minting a session.
    pub fn may_sign_in(&self, rt: &Runtime, email: &str) -> Result<(), Refusal> {
        self.directory_admits(email)?;
        self.relogin_lockout(rt, email)
    }

    /// What the directory says: an account that is inactive, deleted or disabled there
    /// gets neither a session nor an app token (also asked when a token is re-issued
    /// from an existing session).
    pub(super) fn directory_admits(&self, email: &str) -> Result<(), Refusal> {
        let Some(r) = self.accounts.sign_in_refusal(email) else {
            return Ok(());
        };
        tracing::info!(%email, why = r.code(), "sign-in refused by the directory");
        self.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
        Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: r.message().to_string(),
            retry_after: None,
        })
    }

    /// After a user revocation, sign-ins are refused for `relogin_lockout`.
    pub(super) fn relogin_lockout(&self, rt: &Runtime, email: &str) -> Result<(), Refusal> {
        let now = self.auth.now_us();
        let Some(revoked_at) = self.auth.revocations().get(Scope::User, email) else {
            return Ok(());
        };
        let until = revoked_at + rt.config.session.relogin_lockout.as_micros() as i64;
        if now >= until {
            return Ok(());
        }
        self.metrics.login_throttled.fetch_add(1, Ordering::Relaxed);
        let secs = (((until - now) as f64 / 1e6).round() as u64).max(1);
        Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "Access for this account was revoked by an administrator. Signing in is blocked for {secs} more seconds."
            ),
            retry_after: Some(secs),
        })
    }
}
