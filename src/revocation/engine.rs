//! Taking a revocation: validate, stamp, make durable (fsync), enforce here, end the
//! matching sessions, audit, then hand it to peer sync. The caller hears back only
//! after the revocation is durable on this node and enforced here.

use super::{RevocationRecord, Scope};
use crate::audit::AuditEvent;
use crate::gateway::Gateway;
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct RevokeRequest {
    pub scope: Scope,
    pub target: String,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevokeOutcome {
    pub id: String,
    pub scope: Scope,
    pub target: String,
    /// Microseconds since the Unix epoch: tokens issued before this are refused.
    pub not_before_us: i64,
    /// The same instant as RFC 3339 text.
    pub not_before: String,
    pub sessions_revoked: u64,
    pub peers_acked: usize,
    pub peers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot make the revocation durable: {0}")]
    Durability(String),
}

const MAX_TARGET: usize = 512;
const MAX_REASON: usize = 128;

/// Normalises a target for its scope: emails compare case-insensitively, `all` has none.
pub fn normalize(scope: Scope, target: &str) -> Result<String, RevokeError> {
    if scope == Scope::All {
        return Ok("*".into());
    }
    let t = target.trim();
    if t.is_empty() {
        return Err(RevokeError::Invalid(format!(
            "target must not be empty for scope {}",
            scope.as_str()
        )));
    }
    if t.len() > MAX_TARGET || t.chars().any(char::is_control) {
        return Err(RevokeError::Invalid(
            "target is too long or has control characters".into(),
        ));
    }
    Ok(if scope == Scope::User {
        t.to_ascii_lowercase()
    } else {
        t.to_string()
    })
}

pub fn normalize_reason(reason: &str) -> Result<String, RevokeError> {
    let r = reason.trim();
    if r.len() > MAX_REASON || r.chars().any(char::is_control) {
        return Err(RevokeError::Invalid(
            "reason is too long or has control characters".into(),
        ));
    }
    Ok(if r.is_empty() {
        "unspecified".into()
    } else {
        r.to_string()
    })
}

pub async fn revoke(gw: &Arc<Gateway>, req: RevokeRequest) -> Result<RevokeOutcome, RevokeError> {
    let mut out = revoke_batch(gw, vec![req], "revoke").await?;
    out.pop()
        .ok_or_else(|| RevokeError::Durability("no outcome".into()))
}

/// Revokes several entries with one fsync; every entry gets its own audit line.
pub async fn revoke_batch(
    gw: &Arc<Gateway>,
    reqs: Vec<RevokeRequest>,
    action: &'static str,
) -> Result<Vec<RevokeOutcome>, RevokeError> {
    let mut records = Vec::with_capacity(reqs.len());
    for r in &reqs {
        records.push(RevocationRecord {
            id: crate::secrets::random_b64(12),
            scope: r.scope,
            target: normalize(r.scope, &r.target)?,
            not_before_us: 0,
            reason: normalize_reason(&r.reason)?,
            actor: r.actor.clone(),
            node: gw.node_id.clone(),
        });
    }
    for rec in &mut records {
        rec.not_before_us = gw.ticker.tick();
    }
    let writer = gw.clone();
    let durable = records.clone();
    tokio::task::spawn_blocking(move || writer.revlog.append(&durable))
        .await
        .map_err(|e| RevokeError::Durability(e.to_string()))?
        .map_err(|e| RevokeError::Durability(e.to_string()))?;

    let now = gw.now_us();
    let mut outcomes = Vec::with_capacity(records.len());
    let mut events = Vec::with_capacity(records.len());
    for rec in &records {
        gw.revocations
            .apply(rec.scope, &rec.target, rec.not_before_us);
        let sessions_revoked = end_sessions(gw, rec, now);
        gw.metrics.revoked(rec.scope);
        tracing::warn!(
            id = %rec.id, scope = rec.scope.as_str(), target = %rec.target,
            reason = %rec.reason, actor = %rec.actor, sessions_revoked,
            "revocation enforced"
        );
        events.push(AuditEvent {
            time_us: rec.not_before_us,
            actor: rec.actor.clone(),
            action: action.to_string(),
            scope: Some(rec.scope.as_str().to_string()),
            target: Some(rec.target.clone()),
            reason: Some(rec.reason.clone()),
            sessions_revoked: Some(sessions_revoked),
            node: rec.node.clone(),
            id: rec.id.clone(),
        });
        outcomes.push(RevokeOutcome {
            id: rec.id.clone(),
            scope: rec.scope,
            target: rec.target.clone(),
            not_before_us: rec.not_before_us,
            not_before: crate::audit::format_rfc3339_millis(rec.not_before_us),
            sessions_revoked,
            peers_acked: 0,
            peers: 0,
        });
    }
    // The audit lines and the push are independent: peers need not wait for the
    // audit log's fsync.
    let (_, acked) = tokio::join!(audit(gw, events), crate::sync::push(gw, &records));
    for o in &mut outcomes {
        o.peers_acked = acked.acked;
        o.peers = acked.peers;
        o.sessions_revoked += acked.remote_sessions.get(&o.id).copied().unwrap_or(0);
    }
    Ok(outcomes)
}

/// Ends this node's sessions that the revocation covers and counts them (for `app`,
/// counts the sessions that used the app; their global sessions live on).
pub(crate) fn end_sessions(gw: &Gateway, rec: &RevocationRecord, now: i64) -> u64 {
    let t = rec.target.as_str();
    let nb = rec.not_before_us;
    match rec.scope {
        Scope::Session => gw.registry.end_matching(nb, now, true, |s| s.sid == t),
        Scope::User => gw.registry.end_matching(nb, now, true, |s| s.user == t),
        Scope::Group => gw
            .registry
            .end_matching(nb, now, true, |s| s.groups.iter().any(|g| g == t)),
        Scope::App => gw
            .registry
            .end_matching(nb, now, false, |s| s.apps().iter().any(|a| a == t)),
        Scope::All => gw.registry.end_matching(nb, now, true, |_| true),
    }
}

/// Writes audit lines; the revocation already holds, so a failure here is loud but
/// does not undo it.
pub async fn audit(gw: &Arc<Gateway>, events: Vec<AuditEvent>) {
    let writer = gw.clone();
    let res = tokio::task::spawn_blocking(move || {
        for ev in &events {
            writer.audit.append(ev)?;
        }
        Ok::<(), crate::audit::AuditError>(())
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write the audit log"),
        Err(e) => tracing::error!(error = %e, "audit writer failed"),
    }
}
