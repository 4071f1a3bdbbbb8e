//! HTML the gateway writes itself: escaping, the page shell every gateway page shares,
//! the pages more than one part of the gateway shows (errors, 403, signed out), and the
//! response builder that gives them their security headers.

use super::body::{Body, full, with_type};
use http::{HeaderValue, Response, StatusCode, header};

/// Gateway pages never load anything from elsewhere and are never framed.
const GATEWAY_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'self' https: http:; frame-ancestors 'none'";
/// The echo origin stands in for an application: its page may call its own host.
pub const APP_PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'";

pub fn html(status: StatusCode, page: String) -> Response<Body> {
    html_with_csp(status, page, GATEWAY_CSP)
}

pub fn html_with_csp(status: StatusCode, page: String, csp: &'static str) -> Response<Body> {
    let mut r = with_type(status, "text/html; charset=utf-8", full(page));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Escapes text for HTML bodies and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: the shared look around `body` (already escaped HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}}
main{{max-width:26rem;margin:8vh auto;background:#fff;padding:2rem 2.2rem;border-radius:10px;box-shadow:0 2px 12px rgba(0,0,0,.08)}}
h1{{font-size:1.35rem;margin:0 0 1.2rem}} label{{display:block;margin:.8rem 0 .3rem;font-weight:600}}
input{{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #c5cad3;border-radius:6px;font-size:1rem}}
button{{margin-top:1.2rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#2451b2;color:#fff;font-size:1rem;cursor:pointer}}
.err{{background:#fdecec;color:#8a1c1c;padding:.6rem .8rem;border-radius:6px}} .muted{{color:#5b6475;font-size:.9rem}}
</style></head><body><main>{body}</main></body></html>"#,
        title = esc(title),
    )
}

pub fn signed_out(login_url: &str) -> String {
    page(
        "Signed out",
        &format!(
            r#"<h1>Signed out</h1><p>Your session has ended on the server, for every application.</p><p><a href="{}">Sign in again</a></p>"#,
            esc(login_url)
        ),
    )
}

pub fn forbidden(email: &str, app: &str) -> String {
    page(
        "Access denied",
        &format!(
            r#"<h1>Access denied</h1><p><b>{}</b> is signed in but is not allowed to use <b>{}</b>.</p><p class="muted">Ask an administrator to add you to this application's policy.</p>"#,
            esc(email),
            esc(app)
        ),
    )
}

pub fn error(title: &str, message: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(message)),
    )
}
