//! Gateway cookies: finding ours in the Cookie header(s) and stripping them before the
//! origin. (Set-Cookie values are written by `web::cookie`.)

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

pub const SESSION: &str = "portcullis_session";
pub const APP: &str = "portcullis_app";
pub const BINDING: &str = "portcullis_binding";
pub const CSRF: &str = "portcullis_csrf";
const PREFIX: &str = "portcullis_";
/// Built once: building a substring searcher costs more than the search itself.
static PREFIX_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PREFIX));

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

/// Each `name=value` pair of a Cookie header value, both trimmed. Separators are found
/// with memchr: the header is mostly one ~700-byte token, so a byte-wise split would be
/// most of the cost of reading it.
fn pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        loop {
            let r = rest?;
            let p = match memchr::memchr(b';', r) {
                Some(i) => {
                    rest = Some(&r[i + 1..]);
                    &r[..i]
                }
                None => {
                    rest = None;
                    r
                }
            };
            let p = p.trim_ascii();
            if p.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b'=', p) {
                Some(i) => (p[..i].trim_ascii(), p[i + 1..].trim_ascii()),
                None => (p, &p[..0]),
            });
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
                // The app token is checked byte for byte where it matters: on a cache
                // hit it must equal a token already verified, on a miss it is decoded.
                // Scanning its ~700 bytes here on every request would buy nothing.
                if name != APP.as_bytes() && !token_chars(value) {
                    return Err(CookieError::Malformed);
                }
                *slot = Some(std::str::from_utf8(value).map_err(|_| CookieError::Malformed)?);
            }
        }
        Ok(out)
    }
}

/// Rewrites the Cookie header for the origin: the binding cookie always removed, the
/// other gateway cookies removed unless the app asks for them, several Cookie headers
/// (HTTP/2) joined into one. A single header with no gateway cookie is left as it is.
pub fn strip_for_origin(headers: &mut HeaderMap, keep_gateway: bool) {
    let mut all = headers.get_all(COOKIE).iter();
    let Some(first) = all.next() else {
        return;
    };
    if all.next().is_none() && PREFIX_FINDER.find(first.as_bytes()).is_none() {
        return;
    }
    let mut out = Vec::new();
    for h in headers.get_all(COOKIE) {
        for (name, value) in pairs(h.as_bytes()) {
            let ours = name.starts_with(PREFIX.as_bytes());
            if ours && (!keep_gateway || name == BINDING.as_bytes() || name == CSRF.as_bytes()) {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(name);
            out.push(b'=');
            out.extend_from_slice(value);
        }
    }
    headers.remove(COOKIE);
    // Joined from valid header values with "; ", so it is one as well.
    if let Ok(v) = HeaderValue::from_bytes(&out)
        && !out.is_empty()
    {
        headers.insert(COOKIE, v);
    }
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
        let h = hm(&[b"portcullis_binding=a\"b"]);
        assert_eq!(
            GatewayCookies::parse(&h).unwrap_err(),
            CookieError::Malformed
        );
        // The app token's bytes are left to the verifier (see `token.rs`).
        let h = hm(&[b"portcullis_app=a\"b"]);
        assert_eq!(GatewayCookies::parse(&h).unwrap().app, Some("a\"b"));
        let h = hm(&[b"portcullis_app=\xff\xfe"]);
        assert!(GatewayCookies::parse(&h).is_err());
    }

    #[test]
    fn strips_binding_always() {
        let stripped = |raw: &[&[u8]], keep: bool| {
            let mut h = hm(raw);
            strip_for_origin(&mut h, keep);
            assert!(h.get_all(COOKIE).iter().count() <= 1);
            h.get(COOKIE).map(|v| v.to_str().unwrap().to_string())
        };
        let mixed: &[&[u8]] = &[b"a=1; portcullis_binding=s; portcullis_app=t; b=2"];
        assert_eq!(stripped(mixed, false).as_deref(), Some("a=1; b=2"));
        assert_eq!(
            stripped(mixed, true).as_deref(),
            Some("a=1; portcullis_app=t; b=2")
        );
        assert_eq!(stripped(&[b"portcullis_binding=s"], false), None);
        // Untouched when there is nothing of ours; joined when HTTP/2 split it.
        assert_eq!(stripped(&[b"a=1;b=2"], false).as_deref(), Some("a=1;b=2"));
        assert_eq!(
            stripped(&[b"a=1", b"portcullis_app=t", b"b=2"], false).as_deref(),
            Some("a=1; b=2")
        );
    }
}
