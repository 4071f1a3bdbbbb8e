//! What the organisation's directory says about a person, asked at every step that lets
//! them in: the built-in form's password step, the authorize step (silent re-issue) and
//! the callback that mints app tokens. SCIM (an inactive or deleted account) and Shared
//! Signals (`account-disabled`) refuse; where SCIM knows the person, its groups are the
//! ones tokens carry (the global session's groups are a snapshot from sign-in).

use super::Login;
use crate::cluster::accounts::Refusal;
use crate::session::token::Claims;
use crate::web::body::Body;
use crate::web::html::{self, html};
use http::{Response, StatusCode};

impl Login {
    /// Whether `email` may sign in, or be given a token, now. Any sign-in path (the
    /// built-in form, an identity provider) asks this before it lets someone in.
    pub fn may_sign_in(&self, email: &str) -> Result<(), Refusal> {
        match self.accounts.sign_in_refusal(email) {
            None => Ok(()),
            Some(r) => {
                tracing::info!(%email, why = r.code(), "sign-in refused by the directory");
                Err(r)
            }
        }
    }

    /// The groups tokens for `email` carry now: the directory's when it knows the
    /// person, else `snapshot` (the identity provider's groups at sign-in).
    pub(super) fn current_groups(&self, email: &str, snapshot: &[String]) -> Vec<String> {
        self.accounts
            .current_groups(email)
            .unwrap_or_else(|| snapshot.to_vec())
    }

    /// A global session's claims with the person's current groups, for the policy
    /// check and app token minting.
    pub(super) fn with_current_groups(&self, session: &Claims) -> Claims {
        let mut c = session.clone();
        c.groups = self.current_groups(&c.email, &session.groups);
        c
    }
}

/// The page shown when the directory refuses a person who holds a valid session.
pub(super) fn refused_page(r: &Refusal) -> Response<Body> {
    html(
        StatusCode::FORBIDDEN,
        html::error("Access refused", r.message()),
    )
}
