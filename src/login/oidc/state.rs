//! What the browser carries for an IdP sign-in, sealed (encrypted and authenticated
//! under the cluster's keys, so any node opens it and nobody else reads or forges it):
//!
//! - `portcullis_oidc` (path `/oidc/<name>/`, 10 minutes): the sign-in between the
//!   redirect to the IdP and its callback: the PKCE verifier, `state`, `nonce`, the
//!   page to return to, the redirect URI used, and the re-authentication instant when
//!   one was required. SameSite=Lax: the callback is a cross-site top-level GET.
//! - `portcullis_idp` (path `/`): which IdP session the global session came from, with
//!   the ID token for `id_token_hint` at logout (left out when it would make the cookie
//!   too large for browsers).
//!
//! Both are sealed for `Purpose::SignInState` and tagged with their kind, so one can
//! never be passed off as the other.

use crate::clock::Micros;
use crate::idp::PendingAuth;
use crate::session::seal::{Purpose, Sealer};
use http::HeaderMap;
use http::header::COOKIE;
use serde::{Deserialize, Serialize};

pub const PENDING_COOKIE: &str = "portcullis_oidc";
pub const LINK_COOKIE: &str = "portcullis_idp";
/// A return URL longer than this is not carried (the sign-in lands on the home page).
pub const MAX_RETURN_TO: usize = 2048;
/// Browsers keep cookies up to about 4096 bytes (name, value and attributes).
const MAX_COOKIE_VALUE: usize = 3800;

/// A sign-in waiting for the IdP's callback.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub auth: PendingAuth,
    /// Where to go after signing in (already checked to be a configured app's URL).
    pub return_to: String,
    /// The redirect URI sent to the IdP (the code exchange must repeat it exactly).
    pub redirect_uri: String,
    /// When set, the IdP sign-in must have happened at or after this instant (µs).
    pub reauth_after: Option<Micros>,
}

/// Which IdP session a global session came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdpLink {
    pub idp: String,
    /// The gateway's session id this link belongs to.
    pub sid: String,
    /// The IdP's ID token, for `id_token_hint` (None when too large for a cookie).
    pub id_token: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Sealed {
    Pending(PendingSignIn),
    Link(IdpLink),
}

fn seal(sealer: &Sealer, v: &Sealed) -> Option<String> {
    sealer.seal(Purpose::SignInState, &serde_json::to_vec(v).ok()?)
}

fn open(sealer: &Sealer, value: &str) -> Option<Sealed> {
    serde_json::from_slice(&sealer.open(Purpose::SignInState, value)?).ok()
}

impl PendingSignIn {
    pub fn seal(&self, sealer: &Sealer) -> Option<String> {
        seal(sealer, &Sealed::Pending(self.clone()))
    }

    /// The pending sign-in for `idp` among the values of the pending cookie.
    pub fn find(sealer: &Sealer, headers: &HeaderMap, idp: &str) -> Option<PendingSignIn> {
        cookie_values(headers, PENDING_COOKIE).find_map(|v| match open(sealer, v) {
            Some(Sealed::Pending(p)) if p.auth.idp == idp => Some(p),
            _ => None,
        })
    }
}

impl IdpLink {
    /// The sealed cookie value, without the ID token if it would not fit in a cookie.
    pub fn seal(&self, sealer: &Sealer) -> Option<String> {
        let full = seal(sealer, &Sealed::Link(self.clone()))?;
        if full.len() <= MAX_COOKIE_VALUE {
            return Some(full);
        }
        tracing::info!(idp = %self.idp, "the ID token is too large to keep for logout; logging out without id_token_hint");
        let slim = IdpLink {
            id_token: None,
            ..self.clone()
        };
        seal(sealer, &Sealed::Link(slim))
    }

    pub fn find(sealer: &Sealer, headers: &HeaderMap) -> Option<IdpLink> {
        cookie_values(headers, LINK_COOKIE).find_map(|v| match open(sealer, v) {
            Some(Sealed::Link(l)) => Some(l),
            _ => None,
        })
    }
}

/// Every value of cookie `name` in the request's Cookie header(s).
fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn sealer() -> Sealer {
        Sealer::new("k1", [("k1", b"a test signing secret".as_slice())])
    }

    fn pending(idp: &str) -> PendingSignIn {
        PendingSignIn {
            auth: PendingAuth {
                idp: idp.into(),
                state: "st".into(),
                nonce: "n".into(),
                pkce_verifier: "v".into(),
                created: 5,
                force_reauth: false,
                acr_values: vec![],
            },
            return_to: "https://echo.localhost/x".into(),
            redirect_uri: "https://auth.localhost/oidc/corp/callback".into(),
            reauth_after: None,
        }
    }

    fn cookies(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn pending_round_trips_by_idp_and_kinds_do_not_mix() {
        let s = sealer();
        let a = pending("corp").seal(&s).unwrap();
        let b = pending("other").seal(&s).unwrap();
        let h = cookies(&format!("x=1; {PENDING_COOKIE}={b}; {PENDING_COOKIE}={a}"));
        let p = PendingSignIn::find(&s, &h, "corp").unwrap();
        assert_eq!(p.auth.idp, "corp");
        assert_eq!(p.return_to, "https://echo.localhost/x");
        assert!(PendingSignIn::find(&s, &h, "third").is_none());
        // A link cookie's value under the pending cookie's name opens as nothing.
        let link = IdpLink {
            idp: "corp".into(),
            sid: "s".into(),
            id_token: Some("t".into()),
        };
        let l = link.seal(&s).unwrap();
        let h = cookies(&format!("{PENDING_COOKIE}={l}; {LINK_COOKIE}={l}"));
        assert!(PendingSignIn::find(&s, &h, "corp").is_none());
        assert_eq!(IdpLink::find(&s, &h), Some(link));
        // Forged or foreign values open as nothing.
        let h = cookies(&format!("{LINK_COOKIE}=k1.AAAA"));
        assert!(IdpLink::find(&s, &h).is_none());
    }

    #[test]
    fn a_large_id_token_is_left_out_of_the_link() {
        let s = sealer();
        let link = IdpLink {
            idp: "corp".into(),
            sid: "s".into(),
            id_token: Some("x".repeat(5000)),
        };
        let v = link.seal(&s).unwrap();
        assert!(v.len() <= MAX_COOKIE_VALUE);
        let back = IdpLink::find(&s, &cookies(&format!("{LINK_COOKIE}={v}"))).unwrap();
        assert_eq!((back.sid.as_str(), back.id_token), ("s", None));
    }
}
