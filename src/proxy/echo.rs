//! `origin = "builtin:echo"`: answers with what an origin would receive (method, path,
//! headers, body size) as JSON, or as a readable page for browsers.

use crate::web::body::{self, Body, BoxError};
use crate::web::html::esc;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::request::Parts;
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;

/// The echo page, or the request body's error (the caller answers it).
pub async fn respond(parts: &Parts, mut req_body: Body) -> Result<Response<Body>, BoxError> {
    let mut body_bytes: u64 = 0;
    while let Some(frame) = req_body.frame().await {
        if let Some(d) = frame?.data_ref() {
            body_bytes += d.len() as u64;
        }
    }
    Ok(page_or_json(parts, body_bytes))
}

fn page_or_json(parts: &Parts, body_bytes: u64) -> Response<Body> {
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let identity = parts
        .headers
        .get(super::headers::ASSERTION)
        .and_then(|v| v.to_str().ok())
        .and_then(decode_claims);
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    if wants_html {
        return crate::web::html::html_with_csp(
            StatusCode::OK,
            page(parts, &headers, identity.as_ref(), body_bytes),
            crate::web::html::APP_PAGE_CSP,
        );
    }
    body::json(
        StatusCode::OK,
        &serde_json::json!({
            "method": parts.method.as_str(),
            "path": path,
            "query": query,
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_bytes": body_bytes,
            "identity": identity,
        }),
    )
}

/// Shows the assertion's claims for humans; the origin itself must verify the signature.
fn decode_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn page(
    parts: &Parts,
    headers: &[(String, String)],
    identity: Option<&serde_json::Value>,
    body_bytes: u64,
) -> String {
    let rows: String = headers
        .iter()
        .map(|(k, v)| {
            let shown = if v.len() > 120 {
                format!("{}…", &v[..v.floor_char_boundary(120)])
            } else {
                v.clone()
            };
            format!(
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                esc(k),
                esc(&shown)
            )
        })
        .collect();
    let who = identity
        .map(|c| {
            format!(
                "<p>Signed in as <b>{}</b> (groups: {}). <a href=\"/.portcullis/logout\">Sign out</a></p><pre>{}</pre>",
                esc(c["email"].as_str().unwrap_or("?")),
                esc(&c["groups"].to_string()),
                esc(&serde_json::to_string_pretty(c).unwrap_or_default())
            )
        })
        .unwrap_or_else(|| "<p>No identity assertion.</p>".into());
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Portcullis echo</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330}}table{{border-collapse:collapse}}th,td{{text-align:left;padding:.25rem .6rem;border-bottom:1px solid #e3e6eb;vertical-align:top}}pre{{background:#f4f5f7;padding:1rem;border-radius:6px}}</style>
</head><body><h1>What the origin received</h1>{who}
<p><code>{method} {uri}</code> &middot; {body_bytes} body bytes</p>
<h2>Headers</h2><table>{rows}</table></body></html>"#,
        method = esc(parts.method.as_str()),
        uri = esc(&parts.uri.to_string()),
    )
}
