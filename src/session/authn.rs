//! When the person behind a global session last proved who they are: the sign-in
//! marker cookie `portcullis_authn` (sealed, Path=/admin, HttpOnly, SameSite=Lax), set
//! by every sign-in next to the session cookie.
//!
//! A session's own issue time does not say this: a sign-in through an identity
//! provider can complete silently on the IdP's own session, minting a brand-new global
//! session for someone who authenticated hours ago (or for whoever holds that IdP
//! cookie). The marker records the authentication instant instead: the password check
//! for a built-in user, the ID token's `auth_time` for an IdP (whose sign-in is forced
//! with `prompt=login` when a fresh one is asked for). It is tied to the session's sid,
//! and a missing or foreign marker means "unknown", never "recent", so deleting it only
//! asks for another sign-in. The admin console reads it before entering and acting.

use crate::clock::Micros;
use crate::session::seal::{Purpose, Sealer};
use crate::web::cookie::{CookieSpec, SameSite, set_cookie};
use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const COOKIE: &str = "portcullis_authn";
/// The marker is only read under this path (the console).
const PATH: &str = "/admin";

#[derive(Serialize, Deserialize)]
struct Marker {
    sid: String,
    at_us: Micros,
}

/// The Set-Cookie value saying session `sid` was authenticated at `at_us`, kept for
/// `max_age` (the global session's lifetime).
pub fn set_marker(sealer: &Sealer, sid: &str, at_us: Micros, max_age: Duration) -> Option<String> {
    let m = Marker {
        sid: sid.to_string(),
        at_us,
    };
    let value = sealer.seal(Purpose::SignInTime, &serde_json::to_vec(&m).ok()?)?;
    Some(set_cookie(&CookieSpec {
        name: COOKIE,
        value: &value,
        max_age: Some(max_age),
        http_only: true,
        same_site: SameSite::Lax,
        path: PATH,
    }))
}

/// When session `sid` was authenticated, from the request's marker; None when it has
/// none, more than one, one this cluster did not seal, or one for another session.
pub fn authenticated_at(sealer: &Sealer, h: &HeaderMap, sid: &str) -> Option<Micros> {
    let plain = sealer.open(Purpose::SignInTime, one_cookie(h, COOKIE)?)?;
    let m: Marker = serde_json::from_slice(&plain).ok()?;
    crate::secrets::ct_eq(m.sid.as_bytes(), sid.as_bytes()).then_some(m.at_us)
}

/// The value of the one cookie called `name` (None when absent or repeated).
pub fn one_cookie<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = None;
    for v in h.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((n, value)) = pair.trim().split_once('=')
                && n.trim() == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(value.trim());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::keys::KeyRing;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn the_marker_counts_only_for_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let sealer = ring.sealer();
        let set = set_marker(sealer, "sid-1", 42, Duration::from_secs(60)).unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("Path=/admin"),
            "{set}"
        );
        let value = set
            .strip_prefix("portcullis_authn=")
            .and_then(|s| s.split(';').next())
            .unwrap();
        let h = headers(&format!("a=b; {COOKIE}={value}"));
        assert_eq!(authenticated_at(sealer, &h, "sid-1"), Some(42));
        assert_eq!(
            authenticated_at(sealer, &h, "sid-2"),
            None,
            "another session"
        );
        let twice = headers(&format!("{COOKIE}={value}; {COOKIE}={value}"));
        assert_eq!(authenticated_at(sealer, &twice, "sid-1"), None, "repeated");
        let forged = headers(&format!("{COOKIE}=x{value}"));
        assert_eq!(
            authenticated_at(sealer, &forged, "sid-1"),
            None,
            "not sealed here"
        );
        assert_eq!(authenticated_at(sealer, &HeaderMap::new(), "sid-1"), None);
    }
}
