//! Gateway cookies: finding ours in the Cookie header(s), stripping them before the
//! origin, and writing Set-Cookie values with the app's attributes.

use crate::config::file::SameSite;
use http::HeaderMap;
use http::header::COOKIE;
use std::time::Duration;

pub const SESSION: &str = "portcullis_session";
pub const APP: &str = "portcullis_app";
pub const BINDING: &str = "portcullis_binding";
pub const CSRF: &str = "portcullis_csrf";
const PREFIX: &str = "portcullis_";

/// Why the gateway's cookies in a request cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("a gateway cookie appears more than once")]
    Duplicate,
    #[error("a gateway cookie is not valid")]
    Malformed,
}

/// The gateway cookies a request carries; values borrow from the request headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct GatewayCookies<'a> {
    pub session: Option<&'a str>,
    pub app: Option<&'a str>,
    pub binding: Option<&'a str>,
    pub csrf: Option<&'a str>,
    /// Whether any `portcullis_*` cookie is present (so the header needs rewriting).
    pub any: bool,
}

fn pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|&b| b == b';').filter_map(|p| {
        let p = p.trim_ascii();
        if p.is_empty() {
            return None;
        }
        match p.iter().position(|&b| b == b'=') {
            Some(i) => Some((p[..i].trim_ascii(), p[i + 1..].trim_ascii())),
            None => Some((p, &p[..0])),
        }
    })
}

/// Bytes of base64url and JWTs (`A-Z a-z 0-9 - _ .`), as a table so the check over a
/// ~700-byte token is one load per byte.
const TOKEN_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
        b += 1;
    }
    t
};

/// A cookie value we issue is base64url or JWT: anything else was not made by us.
fn token_chars(v: &[u8]) -> bool {
    v.iter().all(|&b| TOKEN_CHAR[b as usize])
}

impl<'a> GatewayCookies<'a> {
    /// Parses every Cookie header (HTTP/2 sends one per cookie). A duplicate or
    /// malformed gateway cookie makes the whole set unusable: two `portcullis_app`
    /// values could be chosen differently by the gateway and by an origin.
    pub fn parse(headers: &'a HeaderMap) -> Result<GatewayCookies<'a>, CookieError> {
        let mut out = GatewayCookies::default();
        for h in headers.get_all(COOKIE) {
            for (name, value) in pairs(h.as_bytes()) {
                if !name.starts_with(PREFIX.as_bytes()) {
                    continue;
                }
                out.any = true;
                let slot = match name {
                    b"portcullis_session" => &mut out.session,
                    b"portcullis_app" => &mut out.app,
                    b"portcullis_binding" => &mut out.binding,
                    b"portcullis_csrf" => &mut out.csrf,
                    _ => continue,
                };
                if slot.is_some() {
                    return Err(CookieError::Duplicate);
                }
                if !token_chars(value) {
                    return Err(CookieError::Malformed);
                }
                *slot = Some(std::str::from_utf8(value).map_err(|_| CookieError::Malformed)?);
            }
        }
        Ok(out)
    }
}

/// The Cookie header the origin sees: the binding cookie always removed, the other
/// gateway cookies removed unless the app asks for them. `None` when nothing is left.
pub fn strip_for_origin(headers: &HeaderMap, keep_gateway: bool) -> Option<String> {
    let mut out = String::new();
    for h in headers.get_all(COOKIE) {
        for (name, value) in pairs(h.as_bytes()) {
            let ours = name.starts_with(PREFIX.as_bytes());
            if ours && (!keep_gateway || name == BINDING.as_bytes() || name == CSRF.as_bytes()) {
                continue;
            }
            // Header bytes came from a valid HeaderValue; lossy only for obs-text.
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(&String::from_utf8_lossy(name));
            out.push('=');
            out.push_str(&String::from_utf8_lossy(value));
        }
    }
    (!out.is_empty()).then_some(out)
}

pub struct CookieSpec<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub max_age: Option<Duration>,
    pub http_only: bool,
    pub same_site: SameSite,
    pub path: &'a str,
}

/// Every gateway cookie is Secure, host-only (no Domain attribute).
pub fn set_cookie(spec: &CookieSpec<'_>) -> String {
    let mut s = format!("{}={}; Path={}; Secure", spec.name, spec.value, spec.path);
    if spec.http_only {
        s.push_str("; HttpOnly");
    }
    s.push_str(match spec.same_site {
        SameSite::None => "; SameSite=None",
        SameSite::Lax => "; SameSite=Lax",
        SameSite::Strict => "; SameSite=Strict",
    });
    if let Some(age) = spec.max_age {
        s.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    s
}

/// A Set-Cookie value that deletes `name`.
pub fn clear_cookie(name: &str, same_site: SameSite) -> String {
    set_cookie(&CookieSpec {
        name,
        value: "",
        max_age: Some(Duration::ZERO),
        http_only: true,
        same_site,
        path: "/",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hm(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn finds_ours_across_headers() {
        let h = hm(&[b"a=1; portcullis_app=x.y.z", b"portcullis_binding=abc"]);
        let c = GatewayCookies::parse(&h).unwrap();
        assert_eq!(c.app, Some("x.y.z"));
        assert_eq!(c.binding, Some("abc"));
        assert!(c.any);
    }

    #[test]
    fn duplicates_and_garbage_refused() {
        let h = hm(&[b"portcullis_app=a; portcullis_app=b"]);
        assert_eq!(
            GatewayCookies::parse(&h).unwrap_err(),
            CookieError::Duplicate
        );
        let h = hm(&[b"portcullis_app=a\"b"]);
        assert_eq!(
            GatewayCookies::parse(&h).unwrap_err(),
            CookieError::Malformed
        );
        let h = hm(&[b"portcullis_app=\xff\xfe"]);
        assert!(GatewayCookies::parse(&h).is_err());
    }

    #[test]
    fn strips_binding_always() {
        let h = hm(&[b"a=1; portcullis_binding=s; portcullis_app=t; b=2"]);
        assert_eq!(strip_for_origin(&h, false).as_deref(), Some("a=1; b=2"));
        assert_eq!(
            strip_for_origin(&h, true).as_deref(),
            Some("a=1; portcullis_app=t; b=2")
        );
        let h = hm(&[b"portcullis_binding=s"]);
        assert_eq!(strip_for_origin(&h, false), None);
    }
}
