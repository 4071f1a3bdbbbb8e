//! Set-Cookie values: every cookie the gateway writes is Secure and host-only, with the
//! HttpOnly and SameSite attributes its caller asks for.

use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    None,
    Lax,
    Strict,
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

/// Adds one Set-Cookie header (several may be set on one response).
pub fn append_cookie(h: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.append(header::SET_COOKIE, v);
    }
}
