//! The groups the organisation's directory gives a person now: where SCIM knows them,
//! its groups are the ones sessions and tokens carry (a global session's groups are a
//! snapshot from sign-in, so a role downgrade shows in the next token without a new
//! sign-in). The refusals themselves are in `admission`.

use super::Login;
use super::Refusal;
use crate::session::token::Claims;
use crate::web::body::Body;
use crate::web::html::{self, html};
use http::{Response, StatusCode};

impl Login {
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
        html::error("Access refused", &r.message),
    )
}
