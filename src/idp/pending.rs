//! The state of one sign-in between the redirect to the IdP and its callback, and the
//! parsing of that callback. [`PendingAuth`] holds secrets (PKCE verifier, nonce): the
//! login flow seals it into an encrypted, short-lived cookie so the callback can land
//! on any node.

use super::{IdpError, micros};
use crate::clock::Micros;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A sign-in older than this is refused at the callback.
pub const PENDING_MAX_AGE: Duration = Duration::from_secs(600);

/// What the callback needs to finish a sign-in started by `Provider::authorization_url`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuth {
    /// The `[[idp]]` name the sign-in went to.
    pub idp: String,
    /// The `state` sent; the callback must bring it back.
    pub state: String,
    /// The `nonce` sent; the ID token must carry it.
    pub nonce: String,
    /// The PKCE S256 code verifier.
    pub pkce_verifier: String,
    /// When the sign-in started (µs).
    pub created: Micros,
    /// Whether `prompt=login` and `max_age=0` were sent.
    pub force_reauth: bool,
    /// The `acr_values` sent (empty: none); the ID token's `acr` must be one of them.
    #[serde(default)]
    pub acr_values: Vec<String>,
}

impl std::fmt::Debug for PendingAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuth")
            .field("idp", &self.idp)
            .field("created", &self.created)
            .field("force_reauth", &self.force_reauth)
            .field("acr_values", &self.acr_values)
            .finish_non_exhaustive()
    }
}

impl PendingAuth {
    /// The callback's own checks: it is for this IdP, carries our `state` (compared in
    /// constant time), and is not too old.
    pub fn check(&self, idp: &str, state: &str, now: Micros) -> Result<(), IdpError> {
        if self.idp != idp || !crate::secrets::ct_eq(self.state.as_bytes(), state.as_bytes()) {
            return Err(IdpError::BadState);
        }
        if now - self.created > micros(PENDING_MAX_AGE)
            || now < self.created - micros(super::CLOCK_SKEW)
        {
            return Err(IdpError::PendingExpired);
        }
        Ok(())
    }
}

/// The authorization response (the query of the redirect to the callback URI).
#[derive(Clone, PartialEq, Eq)]
pub struct Callback {
    pub code: String,
    pub state: String,
    /// RFC 9207 `iss`, when the IdP sends it (checked against the issuer).
    pub iss: Option<String>,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

const MAX_ERROR_TEXT: usize = 200;

impl Callback {
    /// Parses the callback query. An `error` from the IdP becomes [`IdpError::Denied`];
    /// a missing `code` or `state`, or a repeated parameter, [`IdpError::BadCallback`].
    pub fn from_query(query: &str) -> Result<Callback, IdpError> {
        let mut code = None;
        let mut state = None;
        let mut iss = None;
        let mut error = None;
        let mut description = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*k {
                "code" => &mut code,
                "state" => &mut state,
                "iss" => &mut iss,
                "error" => &mut error,
                "error_description" => &mut description,
                _ => continue,
            };
            if slot.replace(v.into_owned()).is_some() {
                return Err(IdpError::BadCallback(format!(
                    "parameter {k} appears twice"
                )));
            }
        }
        if let Some(error) = error {
            return Err(IdpError::Denied {
                error: clip(&error),
                description: description.as_deref().map(clip),
            });
        }
        match (code, state) {
            (Some(code), Some(state)) if !code.is_empty() && !state.is_empty() => {
                Ok(Callback { code, state, iss })
            }
            (Some(code), _) if !code.is_empty() => Err(IdpError::BadCallback("no state".into())),
            _ => Err(IdpError::BadCallback("no authorization code".into())),
        }
    }
}

/// IdP-supplied text shown to users: printable, bounded.
fn clip(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_TEXT)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> PendingAuth {
        PendingAuth {
            idp: "corp".into(),
            state: "s-123".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            created: 1_000_000_000,
            force_reauth: false,
            acr_values: vec![],
        }
    }

    #[test]
    fn callback_parses_and_refuses() {
        let cb =
            Callback::from_query("code=abc&state=s-123&iss=http%3A%2F%2F127.0.0.1%3A1").unwrap();
        assert_eq!(cb.code, "abc");
        assert_eq!(cb.iss.as_deref(), Some("http://127.0.0.1:1"));
        let denied =
            Callback::from_query("error=access_denied&error_description=End-User+aborted&state=x");
        assert_eq!(
            denied,
            Err(IdpError::Denied {
                error: "access_denied".into(),
                description: Some("End-User aborted".into())
            })
        );
        assert!(matches!(
            Callback::from_query("state=x"),
            Err(IdpError::BadCallback(_))
        ));
        assert!(matches!(
            Callback::from_query("code=x"),
            Err(IdpError::BadCallback(_))
        ));
        assert!(matches!(
            Callback::from_query("code=x&code=y&state=s"),
            Err(IdpError::BadCallback(_))
        ));
    }

    #[test]
    fn pending_checks_idp_state_and_age() {
        let p = pending();
        let t = p.created + 1_000_000;
        assert_eq!(p.check("corp", "s-123", t), Ok(()));
        assert_eq!(p.check("other", "s-123", t), Err(IdpError::BadState));
        assert_eq!(p.check("corp", "s-124", t), Err(IdpError::BadState));
        assert_eq!(p.check("corp", "", t), Err(IdpError::BadState));
        let late = p.created + micros(PENDING_MAX_AGE) + 1;
        assert_eq!(
            p.check("corp", "s-123", late),
            Err(IdpError::PendingExpired)
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PendingAuth>(&json).unwrap(), p);
        assert!(!format!("{p:?}").contains("s-123"), "Debug hides the state");
    }
}
