//! Control-port handlers for sync's own endpoints (the control module authenticates
//! the caller and reads the body, then hands over):
//! - `GET /v1/peer/buckets` (peer): per-bucket digests, binary.
//! - `POST /v1/peer/pull` (peer): entries of the buckets asked for, binary.
//! - `POST /v1/peer/check` (peer): the real revocation check on a token, optionally
//!   held until the token is refused.
//! - `POST /v1/selftest` (admin): run the self-test; `GET /v1/selftest`: the last report.

use super::PeerSync;
use super::peer::PullRequest;
use super::selftest::{self, CheckRequest};
use super::wire;
use crate::revocation::set::BUCKETS;
use crate::web::body::{self, Body};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn binary(bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(body::full(bytes));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn bad(msg: impl Into<String>) -> Response<Body> {
    body::json(StatusCode::BAD_REQUEST, &json!({"error": msg.into()}))
}

pub async fn buckets(sync: &Arc<PeerSync>) -> Response<Body> {
    binary(wire::encode_buckets(sync.engine.set()))
}

pub async fn pull(sync: &Arc<PeerSync>, req: &[u8]) -> Response<Body> {
    let req: PullRequest = if req.is_empty() {
        PullRequest::default()
    } else {
        match serde_json::from_slice(req) {
            Ok(r) => r,
            Err(e) => return bad(format!("invalid JSON: {e}")),
        }
    };
    let want = match req.buckets {
        None => None,
        Some(ids) => {
            let mut w = vec![false; BUCKETS];
            for i in ids {
                match w.get_mut(i as usize) {
                    Some(slot) => *slot = true,
                    None => return bad(format!("bucket {i} out of range (0..{BUCKETS})")),
                }
            }
            Some(w)
        }
    };
    let s = sync.clone();
    match tokio::task::spawn_blocking(move || {
        wire::encode_set(s.engine.set(), s.engine.meta(), want.as_deref())
    })
    .await
    {
        Ok(bytes) => binary(bytes),
        Err(e) => body::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
    }
}

pub async fn check(sync: &Arc<PeerSync>, req: &[u8]) -> Response<Body> {
    let req: CheckRequest = match serde_json::from_slice(req) {
        Ok(r) => r,
        Err(e) => return bad(format!("invalid JSON: {e}")),
    };
    let a = selftest::check_waiting(
        sync,
        &req.token,
        req.app.as_deref(),
        Duration::from_millis(req.wait_ms),
    )
    .await;
    body::json(StatusCode::OK, &json!(a))
}

pub async fn run_selftest(sync: &Arc<PeerSync>, actor: &str, req: &[u8]) -> Response<Body> {
    let v: serde_json::Value = if req.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(req) {
            Ok(v) => v,
            Err(e) => return bad(format!("invalid JSON: {e}")),
        }
    };
    let timeout = match v.get("timeout_ms") {
        None => selftest::DEFAULT_TIMEOUT,
        Some(t) => match t.as_u64() {
            Some(ms) if ms > 0 => Duration::from_millis(ms),
            _ => return bad("timeout_ms must be a positive number of milliseconds"),
        },
    };
    let report = selftest::run(sync, actor, timeout).await;
    body::json(StatusCode::OK, &json!(report))
}

pub async fn last_selftest(sync: &Arc<PeerSync>) -> Response<Body> {
    match selftest::last(sync) {
        Some(r) => body::json(StatusCode::OK, &json!(r)),
        None => body::json(
            StatusCode::NOT_FOUND,
            &json!({"error": "no self-test has run on this node yet"}),
        ),
    }
}
