//! The control port: admin API (revocations, sessions, users), peer API (sync), health,
//! readiness and metrics. Admin calls carry `Authorization: Bearer <token>`, checked in
//! constant time against the SHA-256 hashes in `[[control.admin]]`; peer calls carry the
//! cluster's peer token.

pub mod client;

use crate::gateway::Gateway;
use crate::proxy::body::{self, Body};
use crate::revocation::Scope;
use crate::revocation::engine::{self, RevokeError, RevokeRequest};
use crate::secrets::ct_eq;
use crate::sync::peer::{Digest, Entries, PushAck, PushBody};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    Method,
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    fn response(&self) -> Response<Body> {
        let status = match self {
            ControlError::Unauthorized => StatusCode::UNAUTHORIZED,
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound => StatusCode::NOT_FOUND,
            ControlError::Method => StatusCode::METHOD_NOT_ALLOWED,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut r = body::json(status, &json!({ "error": self.to_string() }));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<RevokeError> for ControlError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::Invalid(m) => ControlError::BadRequest(m),
            RevokeError::Durability(m) => ControlError::Internal(m),
        }
    }
}

type Res = Result<Response<Body>, ControlError>;

pub async fn handle(gw: Arc<Gateway>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match route(&gw, req).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, ControlError::Unauthorized) {
                tracing::warn!(%peer, %method, path, "control call refused: bad credentials");
            }
            e.response()
        }
    }
}

fn bearer(h: &HeaderMap) -> Option<&[u8]> {
    let v = h.get(header::AUTHORIZATION)?.as_bytes();
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.trim_ascii())
}

/// The admin's name when the bearer token matches one; every admin is compared, so the
/// time taken does not depend on which (if any) matched.
fn admin(gw: &Gateway, h: &HeaderMap) -> Result<String, ControlError> {
    let token = bearer(h).ok_or(ControlError::Unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(token).into();
    let rt = gw.runtime.load();
    let mut found = None;
    for a in &rt.config.control.admins {
        if ct_eq(&digest, &a.token_sha256) && found.is_none() {
            found = Some(a.name.clone());
        }
    }
    found.ok_or(ControlError::Unauthorized)
}

fn peer_auth(gw: &Gateway, h: &HeaderMap) -> Result<(), ControlError> {
    let token = bearer(h).ok_or(ControlError::Unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(token).into();
    match gw.runtime.load().peer_token_sha256 {
        Some(want) if ct_eq(&digest, &want) => Ok(()),
        _ => Err(ControlError::Unauthorized),
    }
}

async fn read_body(b: Incoming) -> Result<Bytes, ControlError> {
    Ok(Limited::new(b, MAX_BODY)
        .collect()
        .await
        .map_err(|_| ControlError::BadRequest(format!("body larger than {MAX_BODY} bytes")))?
        .to_bytes())
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn route(gw: &Arc<Gateway>, req: Request<Incoming>) -> Res {
    let path = req.uri().path().to_string();
    let m = req.method().clone();
    match (m, path.as_str()) {
        (Method::GET, "/healthz") => Ok(body::json(
            StatusCode::OK,
            &json!({"status": "ok", "node": gw.node_id}),
        )),
        (Method::GET, "/readyz") => Ok(readyz(gw)),
        (Method::GET, "/metrics") => Ok(metrics(gw)),
        (Method::POST, "/v1/revocations") => {
            let actor = admin(gw, req.headers())?;
            revoke_one(gw, actor, req).await
        }
        (Method::GET, "/v1/revocations") => {
            admin(gw, req.headers())?;
            list_revocations(gw, &query(&req)).await
        }
        (Method::POST, "/v1/revocations/bulk") => {
            let actor = admin(gw, req.headers())?;
            bulk(gw, actor, req).await
        }
        (Method::GET, "/v1/sessions") => {
            admin(gw, req.headers())?;
            let q = query(&req);
            sessions(gw, q.get("user").map(String::as_str)).await
        }
        (Method::DELETE, p) if p.starts_with("/v1/sessions/") => {
            let actor = admin(gw, req.headers())?;
            let sid = p.trim_start_matches("/v1/sessions/").to_string();
            delete_session(gw, actor, sid).await
        }
        (Method::GET, "/v1/users") => {
            admin(gw, req.headers())?;
            users(gw).await
        }
        (Method::POST, "/v1/peer/revocations") => {
            peer_auth(gw, req.headers())?;
            peer_push(gw, req).await
        }
        (Method::GET, "/v1/peer/digest") => {
            peer_auth(gw, req.headers())?;
            Ok(json_of(&Digest {
                node: gw.node_id.clone(),
                digest: gw.revocations.digest(),
                count: gw.revocations.len(),
            }))
        }
        (Method::GET, "/v1/peer/entries") => {
            peer_auth(gw, req.headers())?;
            Ok(json_of(&Entries {
                node: gw.node_id.clone(),
                entries: gw.revocations.entries(),
            }))
        }
        (Method::GET, "/v1/peer/sessions") => {
            peer_auth(gw, req.headers())?;
            let q = query(&req);
            let now = gw.now_us();
            Ok(json_of(
                &gw.registry.list(q.get("user").map(String::as_str), now),
            ))
        }
        (Method::GET, "/v1/peer/users") => {
            peer_auth(gw, req.headers())?;
            Ok(json_of(
                &gw.registry.created_since(month_start(gw.now_us())),
            ))
        }
        // Sync's own endpoints and the self-test (handlers in src/sync/http.rs).
        (Method::GET, "/v1/peer/buckets") => {
            peer_auth(gw, req.headers())?;
            Ok(crate::sync::http::buckets(gw).await)
        }
        (Method::POST, "/v1/peer/pull") => {
            peer_auth(gw, req.headers())?;
            let b = read_body(req.into_body()).await?;
            Ok(crate::sync::http::pull(gw, &b).await)
        }
        (Method::POST, "/v1/peer/check") => {
            peer_auth(gw, req.headers())?;
            let b = read_body(req.into_body()).await?;
            Ok(crate::sync::http::check(gw, &b).await)
        }
        (Method::POST, "/v1/selftest") => {
            let actor = admin(gw, req.headers())?;
            let b = read_body(req.into_body()).await?;
            Ok(crate::sync::http::run_selftest(gw, &actor, &b).await)
        }
        (Method::GET, "/v1/selftest") => {
            admin(gw, req.headers())?;
            Ok(crate::sync::http::last_selftest(gw).await)
        }
        (
            _,
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/v1/revocations"
            | "/v1/revocations/bulk"
            | "/v1/sessions"
            | "/v1/users"
            | "/v1/selftest",
        ) => Err(ControlError::Method),
        _ => Err(ControlError::NotFound),
    }
}

fn json_of<T: serde::Serialize>(v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => body::json_bytes(StatusCode::OK, Bytes::from(b)),
        Err(e) => ControlError::Internal(e.to_string()).response(),
    }
}

fn readyz(gw: &Gateway) -> Response<Body> {
    if !gw.ready.load(Ordering::SeqCst) {
        return body::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": "catching up with peers"}),
        );
    }
    if let Some(reason) = crate::sync::stale_reason(gw) {
        return body::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": reason}),
        );
    }
    body::json(
        StatusCode::OK,
        &json!({"ready": true, "generation": gw.generation(), "node": gw.node_id, "sync": crate::sync::readiness(gw)}),
    )
}

fn metrics(gw: &Gateway) -> Response<Body> {
    let set = gw.revocations.len() as f64;
    let cache = gw.verifier.entry_count() as f64;
    let sessions = gw.registry.len() as f64;
    let mut text = gw.metrics.render(&[
        (
            "portcullis_revocation_set_size",
            "Entries in the revocation set.",
            set,
        ),
        (
            "portcullis_token_cache_entries",
            "Verified tokens in the cache.",
            cache,
        ),
        (
            "portcullis_sessions_known",
            "Sessions in this node's registry.",
            sessions,
        ),
    ]);
    text.push_str(&crate::sync::peer_metrics(gw));
    let mut r = body::text(StatusCode::OK, text);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    scope: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    reason: String,
}

async fn revoke_one(gw: &Arc<Gateway>, actor: String, req: Request<Incoming>) -> Res {
    let bytes = read_body(req.into_body()).await?;
    let b: RevokeBody = serde_json::from_slice(&bytes)
        .map_err(|e| ControlError::BadRequest(format!("invalid JSON: {e}")))?;
    let scope = Scope::parse(&b.scope).ok_or_else(|| {
        ControlError::BadRequest(format!(
            "unknown scope {:?} (use user, app, session, group or all)",
            b.scope
        ))
    })?;
    let out = engine::revoke(
        gw,
        RevokeRequest {
            scope,
            target: b.target,
            reason: b.reason,
            actor,
        },
    )
    .await?;
    Ok(json_of(&out))
}

async fn delete_session(gw: &Arc<Gateway>, actor: String, sid: String) -> Res {
    if sid.is_empty() {
        return Err(ControlError::BadRequest("no session id".into()));
    }
    let out = engine::revoke_batch(
        gw,
        vec![RevokeRequest {
            scope: Scope::Session,
            target: sid,
            reason: "deleted by admin".into(),
            actor,
        }],
        "delete_session",
    )
    .await?;
    Ok(json_of(&out.first()))
}

/// Rows of a bulk call: a CSV with a `user` column, or JSON (a list of emails, a list
/// of `{"user": ...}` objects, or `{"users": [...], "reason": ...}`).
fn bulk_rows(ctype: &str, bytes: &[u8]) -> Result<(Vec<String>, Option<String>), ControlError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ControlError::BadRequest("body is not UTF-8".into()))?;
    if ctype.contains("json") || text.trim_start().starts_with(['[', '{']) {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ControlError::BadRequest(format!("invalid JSON: {e}")))?;
        let (list, reason) = match &v {
            serde_json::Value::Array(a) => (a.clone(), None),
            serde_json::Value::Object(o) => (
                o.get("users")
                    .and_then(|u| u.as_array())
                    .cloned()
                    .ok_or_else(|| {
                        ControlError::BadRequest("expected {\"users\": [...]}".into())
                    })?,
                o.get("reason").and_then(|r| r.as_str()).map(str::to_string),
            ),
            _ => return Err(ControlError::BadRequest("expected a JSON list".into())),
        };
        let rows = list
            .iter()
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o
                    .get("user")
                    .and_then(|u| u.as_str())
                    .unwrap_or("")
                    .to_string(),
                _ => String::new(),
            })
            .collect();
        return Ok((rows, reason));
    }
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| ControlError::BadRequest("empty CSV".into()))?;
    let cols = csv_fields(header);
    let idx = cols
        .iter()
        .position(|c| c.trim().eq_ignore_ascii_case("user"))
        .ok_or_else(|| ControlError::BadRequest("the CSV has no `user` column".into()))?;
    let rows = lines
        .map(|l| {
            csv_fields(l)
                .get(idx)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        })
        .collect();
    Ok((rows, None))
}

/// One CSV line's fields, with RFC 4180 double-quote handling.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

async fn bulk(gw: &Arc<Gateway>, actor: String, req: Request<Incoming>) -> Res {
    let q = query(&req);
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = read_body(req.into_body()).await?;
    let (rows, body_reason) = bulk_rows(&ctype, &bytes)?;
    let reason = q
        .get("reason")
        .cloned()
        .or(body_reason)
        .unwrap_or_else(|| "bulk".into());
    let rt = gw.runtime.load_full();
    let now = gw.now_us();
    let mut results: Vec<serde_json::Value> = Vec::with_capacity(rows.len());
    let mut todo = Vec::new();
    let mut todo_rows = Vec::new();
    for (i, user) in rows.iter().enumerate() {
        let email = user.trim().to_ascii_lowercase();
        let row = i + 1;
        if email.is_empty() {
            results.push(
                json!({"row": row, "user": user, "status": "invalid", "error": "empty user"}),
            );
            continue;
        }
        let known =
            rt.users.contains_key(&email) || !gw.registry.list(Some(&email), now).is_empty();
        if !known {
            results.push(json!({"row": row, "user": email, "status": "unknown_user"}));
            continue;
        }
        todo_rows.push(results.len());
        results.push(json!({"row": row, "user": email}));
        todo.push(RevokeRequest {
            scope: Scope::User,
            target: email,
            reason: reason.clone(),
            actor: actor.clone(),
        });
    }
    let outcomes = if todo.is_empty() {
        Vec::new()
    } else {
        engine::revoke_batch(gw, todo, "bulk_revoke").await?
    };
    for (slot, o) in todo_rows.into_iter().zip(outcomes) {
        results[slot]["status"] = json!("revoked");
        results[slot]["id"] = json!(o.id);
        results[slot]["not_before"] = json!(o.not_before);
        results[slot]["sessions_revoked"] = json!(o.sessions_revoked);
        results[slot]["peers_acked"] = json!(o.peers_acked);
    }
    let count = |s: &str| results.iter().filter(|r| r["status"] == s).count();
    let summary = json!({
        "revoked": count("revoked"), "unknown_user": count("unknown_user"), "invalid": count("invalid"),
        "results": results,
    });
    Ok(body::json(StatusCode::OK, &summary))
}

async fn list_revocations(gw: &Arc<Gateway>, q: &HashMap<String, String>) -> Res {
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000)
        .min(100_000);
    let path = gw.revlog.path().to_path_buf();
    // The log file holds the full records (reason, actor); read it off the executor.
    let records = tokio::task::spawn_blocking(move || crate::revocation::log::read_all(&path))
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))?
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    let total = records.len();
    let items: Vec<serde_json::Value> = records
        .into_iter()
        .rev()
        .take(limit)
        .map(|r| {
            json!({
                "id": r.id, "scope": r.scope, "target": r.target,
                "not_before_us": r.not_before_us,
                "not_before": crate::audit::format_rfc3339_millis(r.not_before_us),
                "reason": r.reason, "actor": r.actor, "node": r.node,
                "in_force": gw.revocations.get(r.scope, &r.target).is_some_and(|nb| nb == r.not_before_us),
            })
        })
        .collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({"total": total, "set_size": gw.revocations.len(), "revocations": items}),
    ))
}

async fn gather<T: serde::de::DeserializeOwned + Send + 'static>(
    gw: &Arc<Gateway>,
    path: String,
) -> (Vec<T>, usize, Vec<String>) {
    let peers = gw.runtime.load().config.sync.peers.clone();
    let mut set = tokio::task::JoinSet::new();
    for p in peers {
        let (gw, path) = (gw.clone(), path.clone());
        set.spawn(async move {
            let r = crate::sync::peer::call(&gw, &p, Method::GET, &path, None).await;
            (
                p,
                r.ok()
                    .and_then(|b| serde_json::from_slice::<Vec<T>>(&b).ok()),
            )
        });
    }
    let (mut out, mut answered, mut missing) = (Vec::new(), 0, Vec::new());
    while let Some(Ok((p, r))) = set.join_next().await {
        match r {
            Some(v) => {
                answered += 1;
                out.extend(v);
            }
            None => missing.push(p),
        }
    }
    (out, answered, missing)
}

async fn sessions(gw: &Arc<Gateway>, user: Option<&str>) -> Res {
    let now = gw.now_us();
    let mut all = gw.registry.list(user, now);
    let path = match user {
        Some(u) => format!(
            "/v1/peer/sessions?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("user", u)
                .finish()
        ),
        None => "/v1/peer/sessions".into(),
    };
    let (remote, answered, missing) =
        gather::<crate::session::registry::SessionView>(gw, path).await;
    all.extend(remote);
    let mut seen = std::collections::HashSet::new();
    all.retain(|s| seen.insert(s.sid.clone()));
    // A session revoked anywhere is over everywhere.
    let revoked = |scope: Scope, key: &str, created: i64| {
        gw.revocations
            .get(scope, key)
            .is_some_and(|nb| nb >= created)
    };
    all.retain(|s| {
        let c = s.created_us;
        !(revoked(Scope::Session, &s.sid, c)
            || revoked(Scope::User, &s.user, c)
            || revoked(Scope::All, "*", c)
            || s.groups.iter().any(|g| revoked(Scope::Group, g, c)))
    });
    all.sort_by_key(|s| std::cmp::Reverse(s.created_us));
    let items: Vec<serde_json::Value> = all
        .iter()
        .map(|s| {
            json!({
                "sid": s.sid, "user": s.user, "groups": s.groups, "apps": s.apps, "ip": s.ip,
                "user_agent": s.user_agent,
                "created": crate::audit::format_rfc3339_millis(s.created_us),
                "last_seen": crate::audit::format_rfc3339_millis(s.last_seen_us),
                "expires": crate::audit::format_rfc3339_millis(s.expires_us),
                "node": s.node,
            })
        })
        .collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({"sessions": items, "count": items.len(), "peers_answered": answered, "peers_missing": missing}),
    ))
}

/// The first instant of the current calendar month (UTC).
pub fn month_start(now_us: i64) -> i64 {
    let days = now_us.div_euclid(86_400_000_000);
    let (y, m, _) = civil_from_days(days);
    days_from_civil(y, m, 1) * 86_400_000_000
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

async fn users(gw: &Arc<Gateway>) -> Res {
    let since = month_start(gw.now_us());
    let mut all = gw.registry.created_since(since);
    let (remote, answered, missing) =
        gather::<crate::session::registry::SessionView>(gw, "/v1/peer/users".into()).await;
    all.extend(remote);
    let mut seen = std::collections::HashSet::new();
    all.retain(|s| seen.insert(s.sid.clone()));
    let mut by_user: BTreeMap<String, (usize, i64, i64)> = BTreeMap::new();
    for s in &all {
        let e = by_user.entry(s.user.clone()).or_insert((0, 0, 0));
        e.0 += 1;
        e.1 = e.1.max(s.created_us);
        e.2 = e.2.max(s.last_seen_us);
    }
    let items: Vec<serde_json::Value> = by_user
        .into_iter()
        .map(|(user, (n, login, seen))| {
            json!({
                "user": user, "sessions": n,
                "last_login": crate::audit::format_rfc3339_millis(login),
                "last_seen": crate::audit::format_rfc3339_millis(seen),
            })
        })
        .collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "since": crate::audit::format_rfc3339_millis(since),
            "users": items, "peers_answered": answered, "peers_missing": missing,
        }),
    ))
}

async fn peer_push(gw: &Arc<Gateway>, req: Request<Incoming>) -> Res {
    let bytes = read_body(req.into_body()).await?;
    let b: PushBody = serde_json::from_slice(&bytes)
        .map_err(|e| ControlError::BadRequest(format!("invalid JSON: {e}")))?;
    let (applied, sessions) = crate::sync::receive(gw, b.records).await?;
    if applied > 0 {
        tracing::info!(from = %b.from, applied, "applied revocations pushed by a peer");
    }
    Ok(json_of(&PushAck { applied, sessions }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_rows() {
        let (rows, _) =
            bulk_rows("text/csv", b"name,user\n\"Doe, J\",j@x.com\nA,a@x.com\n").unwrap();
        assert_eq!(rows, vec!["j@x.com", "a@x.com"]);
        let (rows, r) = bulk_rows(
            "application/json",
            br#"{"users":["a@x.com",{"user":"b@x.com"}],"reason":"hr"}"#,
        )
        .unwrap();
        assert_eq!(rows, vec!["a@x.com", "b@x.com"]);
        assert_eq!(r.as_deref(), Some("hr"));
        assert!(bulk_rows("text/csv", b"name\nx\n").is_err());
    }

    #[test]
    fn month_start_is_first_of_month() {
        // 2026-11-22T09:00:00Z -> 2026-11-01T00:00:00Z
        let now = 1_795_338_000_000_000;
        assert_eq!(
            crate::audit::format_rfc3339_millis(month_start(now)),
            "2026-11-01T00:00:00.000Z"
        );
    }
}
