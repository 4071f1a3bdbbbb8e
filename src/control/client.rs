//! The CLI's side of the control port: `portcullis revoke` and `portcullis sessions`
//! read the control address and an admin token from the same config file (or flags).
//! When the control port speaks HTTPS the CLI calls it as a peer would: trusting
//! `[sync] ca_file` (or the system's roots) and presenting `[sync] client_cert`, which
//! `[control] client_auth = "all"` requires.

use crate::config::Config;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no admin token: pass --token, set PORTCULLIS_ADMIN_TOKEN, or configure [[control.admin]] token_file"
    )]
    NoToken,
    #[error("cannot read the admin token from {0}: {1}")]
    TokenFile(String, std::io::Error),
    #[error("cannot reach the control port at {0}: {1}")]
    Connect(String, String),
    #[error("the control port answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("{0}")]
    Other(String),
}

pub struct ControlClient {
    base: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl ControlClient {
    /// Address from `--url` or `[control] listen`; token from `--token`, the environment,
    /// or the first admin's `token_file`.
    pub fn from_config(
        config: Option<&Config>,
        url: Option<String>,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let base = match (url, config) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(c)) => {
                let mut a = c.control.listen;
                if a.ip().is_unspecified() {
                    a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let scheme = if c.control.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{a}")
            }
            (None, None) => return Err(ClientError::Other("no --url and no config".into())),
        };
        let token = match token {
            Some(t) => t,
            None => {
                let file = config
                    .and_then(|c| c.control.admins.iter().find_map(|a| a.token_file.clone()))
                    .ok_or(ClientError::NoToken)?;
                std::fs::read_to_string(&file)
                    .map_err(|e| ClientError::TokenFile(file.display().to_string(), e))?
                    .trim()
                    .to_string()
            }
        };
        let peer_tls = config.map(|c| c.sync.tls.clone()).unwrap_or_default();
        let tls = crate::tls::peer_client_config(&peer_tls, base.starts_with("https://"))
            .map_err(|e| ClientError::Other(format!("TLS towards the control port: {e}")))?;
        Ok(Self { base, token, tls })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnector::from((http, self.tls.clone()));
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let uri = format!("{}{path}", self.base);
        let body = json.map(|j| j.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Other(e.to_string()))?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Other(format!("unreadable answer: {e}")))
    }
}

/// A plain-text table with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// Text for `portcullis selftest`: the report as a table, and whether it passed.
pub fn render_selftest(v: &serde_json::Value) -> (String, bool) {
    let ok = v["ok"].as_bool().unwrap_or(false);
    let mut out = format!(
        "self-test from {} at {}: {} (canary {} session {}, {:.1} ms)\n",
        v["node"].as_str().unwrap_or("?"),
        v["started"].as_str().unwrap_or("?"),
        if ok { "PASS" } else { "FAIL" },
        v["user"].as_str().unwrap_or("?"),
        v["sid"].as_str().unwrap_or("?"),
        v["duration_ms"].as_f64().unwrap_or(0.0),
    );
    let yes = |b: &serde_json::Value| {
        if b.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    out.push_str(&format!(
        "this node: accepted before {}, refused after {}\n",
        yes(&v["local_accepted_before"]),
        yes(&v["local_refused_after"])
    ));
    let rows: Vec<Vec<String>> = v["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    vec![
                        p["peer"].as_str().unwrap_or("?").to_string(),
                        if p["ok"].as_bool() == Some(true) {
                            "ok"
                        } else {
                            "FAIL"
                        }
                        .to_string(),
                        p["propagation_ms"]
                            .as_f64()
                            .map_or("-".into(), |ms| format!("{ms:.2} ms")),
                        p["error"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        out.push_str("no peers configured\n");
    } else {
        out.push_str(&table(&["PEER", "RESULT", "REFUSED AFTER", "ERROR"], &rows));
    }
    if let Some(e) = v["error"].as_str() {
        out.push_str(&format!("error: {e}\n"));
    }
    (out, ok)
}

/// Text for `portcullis sessions`: one row per session.
pub fn render_sessions(out: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let row = |x: &serde_json::Value| {
        let apps: Vec<String> = x["apps"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        vec![
            s(&x["sid"]),
            s(&x["user"]),
            apps.join(","),
            s(&x["ip"]),
            s(&x["created"]),
            s(&x["last_seen"]),
            s(&x["node"]),
            s(&x["user_agent"]).chars().take(40).collect(),
        ]
    };
    let rows: Vec<Vec<String>> = out["sessions"]
        .as_array()
        .map(|a| a.iter().map(row).collect())
        .unwrap_or_default();
    table(
        &[
            "SID",
            "USER",
            "APPS",
            "IP",
            "CREATED",
            "LAST SEEN",
            "NODE",
            "USER AGENT",
        ],
        &rows,
    )
}
