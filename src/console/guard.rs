//! What protects the console besides the admin check: its own session cookie, the
//! per-form CSRF tokens and the `Origin` check on every post.
//!
//! - `portcullis_console` (Secure, HttpOnly, SameSite=Strict, Path=/admin) holds the
//!   global session's sid, sealed. It only counts next to a valid global session with
//!   the same sid, so revoking that session (or the user, a group, everything) ends
//!   console access too. Being Strict, it never comes along on a request another site
//!   started: a post without it is refused.
//! - Each form carries a token sealed for its purpose: the session it was made for, the
//!   form it belongs to, what it acts on (a hash of scope and targets, or the word the
//!   admin must type), an expiry and an id. Tokens of acting forms are single-use across
//!   the cluster (`SharedState::claim_once`), so a resubmitted form does nothing twice.
//! - A post whose `Origin` is not the auth domain's own is refused before anything else.
//!
//! Sealing uses the cluster's shared keys, so any node opens what another made.

use crate::clock::Micros;
use crate::session::seal::{Purpose, Sealer};
use crate::web::cookie::{CookieSpec, SameSite, set_cookie};
use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "portcullis_console";
/// How long a form's token stays good.
pub const FORM_TTL_US: Micros = 3600 * 1_000_000;

#[derive(Serialize, Deserialize)]
struct ConsoleSession {
    sid: String,
    email: String,
    issued_us: Micros,
}

/// The `portcullis_console` value for the global session `sid`.
pub fn seal_session(sealer: &Sealer, sid: &str, email: &str, now: Micros) -> Option<String> {
    let s = ConsoleSession {
        sid: sid.to_string(),
        email: email.to_string(),
        issued_us: now,
    };
    sealer.seal(Purpose::ConsoleSession, &serde_json::to_vec(&s).ok()?)
}

/// The sid a `portcullis_console` value was made for, if this cluster made it.
pub fn open_session(sealer: &Sealer, value: &str) -> Option<String> {
    let plain = sealer.open(Purpose::ConsoleSession, value)?;
    serde_json::from_slice::<ConsoleSession>(&plain)
        .ok()
        .map(|s| s.sid)
}

/// The Set-Cookie value for the console session.
pub fn session_cookie(value: &str) -> String {
    set_cookie(&CookieSpec {
        name: COOKIE,
        value,
        max_age: None,
        http_only: true,
        same_site: SameSite::Strict,
        path: "/admin",
    })
}

/// The one `portcullis_console` cookie of the request (none when absent or repeated).
pub fn session_value(h: &HeaderMap) -> Option<&str> {
    crate::session::authn::one_cookie(h, COOKIE)
}

/// What a form token says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FormToken {
    pub sid: String,
    pub form: String,
    /// Hex SHA-256 of what the form acts on (see [`binding`]); empty when nothing.
    #[serde(default)]
    pub bind: String,
    /// The word the admin must type (the emergency form).
    #[serde(default)]
    pub word: String,
    pub exp_us: Micros,
    pub id: String,
}

/// Hex SHA-256 of a scope and its targets, to bind a token to them.
pub fn binding(scope: &str, targets: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    for t in targets {
        h.update([0u8]);
        h.update(t.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A fresh token for `form` in session `sid`.
pub fn issue_form(
    sealer: &Sealer,
    sid: &str,
    form: &str,
    bind: String,
    word: String,
    now: Micros,
) -> String {
    let t = FormToken {
        sid: sid.to_string(),
        form: form.to_string(),
        bind,
        word,
        exp_us: now + FORM_TTL_US,
        id: crate::secrets::random_b64(12),
    };
    serde_json::to_vec(&t)
        .ok()
        .and_then(|b| sealer.seal(Purpose::ConsoleForm, &b))
        .unwrap_or_default()
}

/// Why a form's token does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the form has no valid token (it was not made by this console)")]
    Invalid,
    #[error("the form was made for another session or another form")]
    Mismatch,
    #[error("the form has expired; reload the page")]
    Expired,
}

/// Opens and checks a token for `form` in session `sid`.
pub fn check_form(
    sealer: &Sealer,
    token: &str,
    sid: &str,
    form: &str,
    now: Micros,
) -> Result<FormToken, FormError> {
    let plain = sealer
        .open(Purpose::ConsoleForm, token)
        .ok_or(FormError::Invalid)?;
    let t: FormToken = serde_json::from_slice(&plain).map_err(|_| FormError::Invalid)?;
    if !crate::secrets::ct_eq(t.sid.as_bytes(), sid.as_bytes()) || t.form != form {
        return Err(FormError::Mismatch);
    }
    if now >= t.exp_us {
        return Err(FormError::Expired);
    }
    Ok(t)
}

/// Whether a post's `Origin` is the console's own (`scheme://auth_domain[:port]` as the
/// client reaches it). A missing or `null` Origin is not.
pub fn same_origin(h: &HeaderMap, own: &str) -> bool {
    let mut all = h.get_all(header::ORIGIN).iter();
    match (all.next(), all.next()) {
        (Some(o), None) => o.as_bytes().eq_ignore_ascii_case(own.as_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn sealer(secret: &[u8]) -> Sealer {
        Sealer::new("k1", [("k1", secret)])
    }

    #[test]
    fn console_session_round_trip_and_cookie() {
        let s = sealer(b"one");
        let v = seal_session(&s, "sid1", "a@x.com", 5).unwrap();
        assert_eq!(open_session(&s, &v).as_deref(), Some("sid1"));
        assert!(open_session(&sealer(b"two"), &v).is_none());
        let c = session_cookie(&v);
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/admin"] {
            assert!(c.contains(attr), "{c}");
        }
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; portcullis_console=xyz"),
        );
        assert_eq!(session_value(&h), Some("xyz"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("portcullis_console=abc"),
        );
        assert_eq!(session_value(&h), None, "a repeated cookie counts as none");
    }

    #[test]
    fn form_tokens_are_bound_and_expire() {
        let s = sealer(b"one");
        let b = binding("user", &["a@x.com".into()]);
        let t = issue_form(&s, "sid1", "revoke", b.clone(), String::new(), 100);
        let ok = check_form(&s, &t, "sid1", "revoke", 200).unwrap();
        assert_eq!(ok.bind, b);
        assert_ne!(b, binding("user", &["b@x.com".into()]));
        assert_ne!(
            binding("user", &["ab".into()]),
            binding("user", &["a".into(), "b".into()])
        );
        assert_eq!(
            check_form(&s, &t, "sid2", "revoke", 200),
            Err(FormError::Mismatch)
        );
        assert_eq!(
            check_form(&s, &t, "sid1", "bulk", 200),
            Err(FormError::Mismatch)
        );
        assert_eq!(
            check_form(&s, &t, "sid1", "revoke", 100 + FORM_TTL_US),
            Err(FormError::Expired)
        );
        assert_eq!(
            check_form(&s, "junk", "sid1", "revoke", 200),
            Err(FormError::Invalid)
        );
        // A console session value is no form token.
        let v = seal_session(&s, "sid1", "a@x.com", 5).unwrap();
        assert_eq!(
            check_form(&s, &v, "sid1", "revoke", 200),
            Err(FormError::Invalid)
        );
    }

    #[test]
    fn origin_must_be_ours() {
        let own = "https://auth.localhost:8443";
        let mut h = HeaderMap::new();
        assert!(!same_origin(&h, own));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, own));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://echo.localhost:8443"),
        );
        assert!(!same_origin(&h, own));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://auth.localhost:8443"),
        );
        assert!(same_origin(&h, own));
    }
}
