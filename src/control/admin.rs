//! The admin API: revoke (one, bulk, a session), list revocations, and the
//! cluster-wide session and user lists.

use super::{Control, ControlError, Res, json_of, read_body};
use crate::revocation::Scope;
use crate::revocation::engine::RevokeRequest;
use crate::session::registry::SessionView;
use crate::timefmt::format_rfc3339_millis;
use crate::timefmt::month_start;
use crate::web::body;
use http::{Request, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    scope: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    reason: String,
    /// The caller's own id for this revocation (a ticket, an alert), shown in listings
    /// and the audit line.
    #[serde(default)]
    external_id: Option<String>,
}

impl Control {
    pub(super) async fn revoke_one(&self, actor: String, req: Request<Incoming>) -> Res {
        let bytes = read_body(req.into_body()).await?;
        let b: RevokeBody = serde_json::from_slice(&bytes)
            .map_err(|e| ControlError::BadRequest(format!("invalid JSON: {e}")))?;
        let scope = Scope::parse(&b.scope).ok_or_else(|| {
            ControlError::BadRequest(format!(
                "unknown scope {:?} (use user, app, session, group, member or all)",
                b.scope
            ))
        })?;
        let out = self
            .engine
            .revoke(RevokeRequest {
                scope,
                target: b.target,
                reason: b.reason,
                actor,
                external_id: b.external_id,
            })
            .await?;
        // 202: durable and enforced here, but the backend has not taken it yet.
        let mut r = json_of(&out);
        if !out.propagated {
            *r.status_mut() = StatusCode::ACCEPTED;
        }
        Ok(r)
    }

    pub(super) async fn delete_session(&self, actor: String, sid: String) -> Res {
        if sid.is_empty() {
            return Err(ControlError::BadRequest("no session id".into()));
        }
        let out = self
            .engine
            .revoke_batch(
                vec![RevokeRequest {
                    scope: Scope::Session,
                    target: sid,
                    reason: "deleted by admin".into(),
                    actor,
                    external_id: None,
                }],
                "delete_session",
            )
            .await?;
        Ok(json_of(&out.first()))
    }

    pub(super) async fn bulk(&self, actor: String, req: Request<Incoming>) -> Res {
        let q = crate::web::query::map(req.uri().query());
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = read_body(req.into_body()).await?;
        let (rows, body_reason) = super::bulk::rows(&ctype, &bytes)?;
        let reason = q
            .get("reason")
            .cloned()
            .or(body_reason)
            .unwrap_or_else(|| "bulk".into());
        let rt = self.live.load_full();
        let now = self.engine.now_us();
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
                rt.users.contains_key(&email) || !self.sessions.list(Some(&email), now).is_empty();
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
                external_id: None,
            });
        }
        let outcomes = if todo.is_empty() {
            Vec::new()
        } else {
            self.engine.revoke_batch(todo, "bulk_revoke").await?
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

    pub(super) async fn list_revocations(&self, q: &HashMap<String, String>) -> Res {
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(1000)
            .min(100_000);
        // Every revocation in force here, however it arrived (taken here, pushed,
        // pulled, read from the backend), with what is known of it.
        let engine = self.engine.clone();
        let records = tokio::task::spawn_blocking(move || engine.in_force(limit))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let set = self.engine.set();
        let items: Vec<serde_json::Value> = records
            .into_iter()
            .map(|r| {
                let mut v = json!({
                    "id": r.id, "scope": r.scope, "target": r.target,
                    "not_before_us": r.not_before_us,
                    "not_before": format_rfc3339_millis(r.not_before_us),
                    "reason": r.reason, "actor": r.actor, "node": r.node,
                    "in_force": true,
                });
                if let Some(x) = r.external_id {
                    v["external_id"] = json!(x);
                }
                v
            })
            .collect();
        Ok(body::json(
            StatusCode::OK,
            &json!({"total": set.len(), "set_size": set.len(), "revocations": items}),
        ))
    }

    pub(super) async fn sessions(&self, user: Option<&str>) -> Res {
        let d = self.cluster.directory.live(user).await;
        let items: Vec<serde_json::Value> = d.sessions.iter().map(session_json).collect();
        Ok(body::json(
            StatusCode::OK,
            &json!({"sessions": items, "count": items.len(), "peers_answered": d.answered, "peers_missing": d.missing}),
        ))
    }

    pub(super) async fn users(&self) -> Res {
        let since = month_start(self.engine.now_us());
        let d = self.cluster.directory.created_since(since).await;
        let mut by_user: BTreeMap<String, (usize, i64, i64)> = BTreeMap::new();
        for s in &d.sessions {
            let e = by_user.entry(s.info.user.clone()).or_insert((0, 0, 0));
            e.0 += 1;
            e.1 = e.1.max(s.info.created_us);
            e.2 = e.2.max(s.last_seen_us);
        }
        let items: Vec<serde_json::Value> = by_user
            .into_iter()
            .map(|(user, (n, login, seen))| {
                json!({
                    "user": user, "sessions": n,
                    "last_login": format_rfc3339_millis(login),
                    "last_seen": format_rfc3339_millis(seen),
                })
            })
            .collect();
        Ok(body::json(
            StatusCode::OK,
            &json!({
                "since": format_rfc3339_millis(since),
                "users": items, "peers_answered": d.answered, "peers_missing": d.missing,
            }),
        ))
    }
}

/// A session as the admin API shows it.
fn session_json(s: &SessionView) -> serde_json::Value {
    let i = &s.info;
    json!({
        "sid": i.sid, "user": i.user, "groups": i.groups, "apps": s.apps, "ip": i.ip,
        "user_agent": i.user_agent,
        "created": format_rfc3339_millis(i.created_us),
        "last_seen": format_rfc3339_millis(s.last_seen_us),
        "expires": format_rfc3339_millis(i.expires_us),
        "node": i.node,
        "idp": if i.idp.is_empty() { "local" } else { i.idp.as_str() },
    })
}
