//! Taking a revocation: validate, stamp, make durable (fsync), enforce here, end the
//! matching sessions, then write the audit lines and hand it to the cluster (the
//! [`Notifier`]) at the same time. The caller hears back only after the revocation is
//! durable on this node and enforced here. Revocations from other nodes take the same
//! step ([`Engine::accept`]): durable first, then enforced.
//!
//! The engine knows no HTTP and no cluster backend: it holds the set, the log, the
//! session registry, the audit log and a notifier, and nothing else.

use super::log::RevocationLog;
use super::meta::MetaIndex;
use super::set::RevocationSet;
use super::{RevocationRecord, Scope};
use crate::audit::{AuditEvent, AuditLog};
use crate::clock::{Micros, Ticker};
use crate::metrics::Metrics;
use crate::session::registry::Registry;
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct RevokeRequest {
    pub scope: Scope,
    pub target: String,
    pub reason: String,
    pub actor: String,
    /// The trigger's own id for this revocation (SCIM user id, SET `jti`, webhook
    /// `event_id`, a logout token's `jti`), kept in the record and the audit line.
    pub external_id: Option<String>,
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
    /// False when the cluster backend could not take it yet (it is durable and enforced
    /// here, and is handed over as soon as the backend is back).
    pub propagated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot make the revocation durable: {0}")]
    Durability(String),
}

/// What the cluster said about revocations handed to it.
#[derive(Debug, Default)]
pub struct Propagation {
    pub acked: usize,
    pub peers: usize,
    /// Sessions each revocation ended on the other nodes, by revocation id.
    pub remote_sessions: HashMap<String, u64>,
    /// The backend could not take the revocations yet; they wait durably to be sent.
    pub pending: bool,
}

/// Hands freshly taken revocations to the other nodes (peer push, Redis, ...) and
/// resolves when as many have confirmed as the backend's ack policy asks.
pub trait Notifier: Send + Sync {
    fn publish<'a>(&'a self, records: &'a [RevocationRecord]) -> BoxFuture<'a, Propagation>;
}

/// A single node: nobody to tell.
pub struct Alone;

impl Notifier for Alone {
    fn publish<'a>(&'a self, _: &'a [RevocationRecord]) -> BoxFuture<'a, Propagation> {
        Box::pin(async { Propagation::default() })
    }
}

const MAX_TARGET: usize = 512;
const MAX_REASON: usize = 128;
const MAX_EXTERNAL_ID: usize = 256;

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
    Ok(match scope {
        Scope::User => t.to_ascii_lowercase(),
        Scope::Member => normalize_member(t)?,
        _ => t.to_string(),
    })
}

/// `<email>:<group>`: the email lower-cased, the group as given (`*`: every group).
fn normalize_member(t: &str) -> Result<String, RevokeError> {
    let bad = || {
        RevokeError::Invalid(format!(
            "a member target is <email>:<group> (or <email>:* for every app token of the user), not {t:?}"
        ))
    };
    let (email, group) = super::split_member(t).ok_or_else(bad)?;
    let (email, group) = (email.trim(), group.trim());
    if !email.contains('@') || email.contains(char::is_whitespace) || group.is_empty() {
        return Err(bad());
    }
    Ok(super::member_target(email, group))
}

/// An external id: trimmed, printable, bounded; empty means none.
pub fn normalize_external_id(id: Option<&str>) -> Result<Option<String>, RevokeError> {
    let Some(id) = id.map(str::trim).filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    if id.len() > MAX_EXTERNAL_ID || id.chars().any(char::is_control) {
        return Err(RevokeError::Invalid(
            "external_id is too long or has control characters".into(),
        ));
    }
    Ok(Some(id.to_string()))
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

/// Is `target` already in the form [`normalize`] gives for `scope`? (Checked without
/// allocating: a pull can carry a million entries.)
pub fn canonical(scope: Scope, target: &str) -> bool {
    if scope == Scope::All {
        return target == "*";
    }
    !target.is_empty()
        && target.len() <= MAX_TARGET
        && target.trim() == target
        && !target.chars().any(char::is_control)
        && (scope != Scope::User || !target.bytes().any(|b| b.is_ascii_uppercase()))
        && (scope != Scope::Member || normalize_member(target).is_ok_and(|n| n == target))
}

pub struct Engine {
    node_id: String,
    ticker: Arc<Ticker>,
    set: Arc<RevocationSet>,
    meta: Arc<MetaIndex>,
    log: Arc<RevocationLog>,
    sessions: Arc<Registry>,
    audit: Arc<AuditLog>,
    notifier: Arc<dyn Notifier>,
    metrics: Arc<Metrics>,
}

/// What the engine is built from.
pub struct Parts {
    pub node_id: String,
    pub ticker: Arc<Ticker>,
    pub set: Arc<RevocationSet>,
    pub meta: Arc<MetaIndex>,
    pub log: Arc<RevocationLog>,
    pub sessions: Arc<Registry>,
    pub audit: Arc<AuditLog>,
    pub notifier: Arc<dyn Notifier>,
    pub metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(p: Parts) -> Self {
        Self {
            node_id: p.node_id,
            ticker: p.ticker,
            set: p.set,
            meta: p.meta,
            log: p.log,
            sessions: p.sessions,
            audit: p.audit,
            notifier: p.notifier,
            metrics: p.metrics,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn set(&self) -> &RevocationSet {
        &self.set
    }

    pub fn log(&self) -> &Arc<RevocationLog> {
        &self.log
    }

    /// What is known about each entry in force (id, reason, actor, node).
    pub fn meta(&self) -> &MetaIndex {
        &self.meta
    }

    /// Every revocation in force, newest first (at most `limit`): its record where
    /// known, else the bare entry with an empty id.
    pub fn in_force(&self, limit: usize) -> Vec<RevocationRecord> {
        let mut all = Vec::with_capacity(self.set.len());
        self.set
            .for_each(|scope, target, nb| all.push((nb, scope, target.to_string())));
        all.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        all.truncate(limit);
        all.into_iter()
            .map(
                |(nb, scope, target)| match self.meta.get(scope, &target, nb) {
                    Some(r) => (*r).clone(),
                    None => RevocationRecord {
                        id: String::new(),
                        scope,
                        target,
                        not_before_us: nb,
                        reason: String::new(),
                        actor: String::new(),
                        node: String::new(),
                        external_id: None,
                    },
                },
            )
            .collect()
    }

    pub fn now_us(&self) -> Micros {
        self.ticker.now_us()
    }

    /// Makes later instants of this node come after `us` (learnt from elsewhere).
    pub fn observe(&self, us: Micros) {
        self.ticker.observe(us);
    }

    /// Another node's clock read `us` in an exchange that took `rtt` (see
    /// [`Ticker::heard_clock`]).
    pub fn heard_clock(&self, us: Micros, rtt: std::time::Duration, max_lead: std::time::Duration) {
        self.ticker.heard_clock(us, rtt, max_lead);
    }

    /// The cluster's time as this node knows it (see [`Ticker`]).
    pub fn cluster_now_us(&self) -> Micros {
        self.ticker.cluster_now_us()
    }

    /// How far the cluster's time is ahead of this node's clock, in microseconds.
    pub fn clock_lead_us(&self) -> Micros {
        self.ticker.lead_us()
    }

    pub async fn revoke(&self, req: RevokeRequest) -> Result<RevokeOutcome, RevokeError> {
        let mut out = self.revoke_batch(vec![req], "revoke").await?;
        out.pop()
            .ok_or_else(|| RevokeError::Durability("no outcome".into()))
    }

    /// Revokes several entries with one fsync; every entry gets its own audit line.
    pub async fn revoke_batch(
        &self,
        reqs: Vec<RevokeRequest>,
        action: &'static str,
    ) -> Result<Vec<RevokeOutcome>, RevokeError> {
        let records = self.stamp(&reqs)?;
        self.make_durable(records.clone()).await?;
        let mut outcomes = Vec::with_capacity(records.len());
        let mut events = Vec::with_capacity(records.len());
        for rec in &records {
            let sessions_revoked = self.enforce(rec);
            self.metrics.revoked(rec.scope as usize);
            tracing::warn!(
                id = %rec.id, scope = rec.scope.as_str(), target = %rec.target,
                reason = %rec.reason, actor = %rec.actor, sessions_revoked,
                "revocation enforced"
            );
            events.push(audit_event(rec, action, sessions_revoked));
            outcomes.push(outcome(rec, sessions_revoked));
        }
        // The audit lines and the propagation are independent: other nodes need not
        // wait for the audit log's fsync.
        let (_, sent) = tokio::join!(self.audit(events), self.notifier.publish(&records));
        for o in &mut outcomes {
            o.peers_acked = sent.acked;
            o.peers = sent.peers;
            o.propagated = !sent.pending;
            o.sessions_revoked += sent.remote_sessions.get(&o.id).copied().unwrap_or(0);
        }
        Ok(outcomes)
    }

    /// Validates the requests and gives each an id and a fresh instant.
    fn stamp(&self, reqs: &[RevokeRequest]) -> Result<Vec<RevocationRecord>, RevokeError> {
        let mut records = Vec::with_capacity(reqs.len());
        for r in reqs {
            records.push(RevocationRecord {
                id: crate::secrets::random_b64(12),
                scope: r.scope,
                target: normalize(r.scope, &r.target)?,
                not_before_us: 0,
                reason: normalize_reason(&r.reason)?,
                actor: r.actor.clone(),
                node: self.node_id.clone(),
                external_id: normalize_external_id(r.external_id.as_deref())?,
            });
        }
        for rec in &mut records {
            rec.not_before_us = self.ticker.tick();
        }
        Ok(records)
    }

    async fn make_durable(&self, records: Vec<RevocationRecord>) -> Result<(), RevokeError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.append(&records))
            .await
            .map_err(|e| RevokeError::Durability(e.to_string()))?
            .map_err(|e| RevokeError::Durability(e.to_string()))
    }

    /// Puts `rec` in force here and ends the sessions it covers.
    fn enforce(&self, rec: &RevocationRecord) -> u64 {
        self.set.apply(rec.scope, &rec.target, rec.not_before_us);
        self.meta.insert(rec.clone());
        self.end_sessions(rec, self.now_us())
    }

    /// Revocations another node took: the ones that move this node's set forward are
    /// made durable in the revocation log, then enforced. Returns how many moved the set
    /// forward and the sessions each ended here.
    pub async fn accept(
        &self,
        records: Vec<RevocationRecord>,
    ) -> Result<(usize, HashMap<String, u64>), RevokeError> {
        let fresh: Vec<RevocationRecord> = records
            .into_iter()
            .filter(|r| {
                canonical(r.scope, &r.target)
                    && self
                        .set
                        .get(r.scope, &r.target)
                        .is_none_or(|have| have < r.not_before_us)
            })
            .collect();
        let mut ended = HashMap::new();
        if fresh.is_empty() {
            return Ok((0, ended));
        }
        self.make_durable(fresh.clone()).await?;
        let mut moved = 0;
        for rec in &fresh {
            self.ticker.observe(rec.not_before_us);
            if self.set.apply(rec.scope, &rec.target, rec.not_before_us) {
                moved += 1;
            }
            self.meta.insert(rec.clone());
            ended.insert(rec.id.clone(), self.end_sessions(rec, self.now_us()));
        }
        Ok((moved, ended))
    }

    /// Ends this node's sessions that the revocation covers and counts them (for `app`,
    /// counts the sessions that used the app; their global sessions live on).
    fn end_sessions(&self, rec: &RevocationRecord, now: Micros) -> u64 {
        let t = rec.target.as_str();
        let nb = rec.not_before_us;
        let reg = &self.sessions;
        match rec.scope {
            Scope::Session => reg.end_matching(nb, now, true, |s| s.info.sid == t),
            Scope::User => reg.end_matching(nb, now, true, |s| s.info.user == t),
            Scope::Group => {
                reg.end_matching(nb, now, true, |s| s.info.groups.iter().any(|g| g == t))
            }
            Scope::App => reg.end_matching(nb, now, false, |s| s.apps().iter().any(|a| a == t)),
            Scope::All => reg.end_matching(nb, now, true, |_| true),
            // App tokens only: counts the user's sessions that carry the group.
            Scope::Member => {
                let Some((user, group)) = super::split_member(t) else {
                    return 0;
                };
                reg.end_matching(nb, now, false, |s| {
                    s.info.user == user
                        && (group == super::ANY_GROUP || s.info.groups.iter().any(|g| g == group))
                })
            }
        }
    }

    /// Ends this node's live sessions that the set now revokes (one pass over the
    /// registry, however many entries arrived): after entries were merged in bulk.
    pub fn end_revoked_sessions(&self) -> u64 {
        let set = &self.set;
        let now = self.now_us();
        self.sessions.end_matching(i64::MAX, now, true, |s| {
            let i = &s.info;
            set.revokes_session(&i.sid, &i.user, &i.groups, i.created_us)
        })
    }

    /// Writes audit lines; the revocation already holds, so a failure here is loud but
    /// does not undo it.
    pub async fn audit(&self, events: Vec<AuditEvent>) {
        let audit = self.audit.clone();
        let res =
            tokio::task::spawn_blocking(move || events.iter().try_for_each(|ev| audit.append(ev)))
                .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the audit log"),
            Err(e) => tracing::error!(error = %e, "audit writer failed"),
        }
    }
}

fn audit_event(rec: &RevocationRecord, action: &str, sessions_revoked: u64) -> AuditEvent {
    AuditEvent {
        time_us: rec.not_before_us,
        actor: rec.actor.clone(),
        action: action.to_string(),
        scope: Some(rec.scope.as_str().to_string()),
        target: Some(rec.target.clone()),
        reason: Some(rec.reason.clone()),
        external_id: rec.external_id.clone(),
        sessions_revoked: Some(sessions_revoked),
        node: rec.node.clone(),
        id: rec.id.clone(),
    }
}

fn outcome(rec: &RevocationRecord, sessions_revoked: u64) -> RevokeOutcome {
    RevokeOutcome {
        id: rec.id.clone(),
        scope: rec.scope,
        target: rec.target.clone(),
        not_before_us: rec.not_before_us,
        not_before: crate::timefmt::format_rfc3339_millis(rec.not_before_us),
        sessions_revoked,
        peers_acked: 0,
        peers: 0,
        propagated: true,
        external_id: rec.external_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::session::registry::SessionInfo;
    use std::sync::Mutex;

    /// Records what it was asked to publish and answers with a fixed propagation.
    #[derive(Default)]
    struct FakeNotifier {
        seen: Mutex<Vec<RevocationRecord>>,
    }

    impl Notifier for FakeNotifier {
        fn publish<'a>(&'a self, records: &'a [RevocationRecord]) -> BoxFuture<'a, Propagation> {
            self.seen.lock().unwrap().extend_from_slice(records);
            let remote = records.iter().map(|r| (r.id.clone(), 2)).collect();
            Box::pin(async move {
                Propagation {
                    acked: 2,
                    peers: 3,
                    remote_sessions: remote,
                    pending: false,
                }
            })
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        engine: Engine,
        notifier: Arc<FakeNotifier>,
        sessions: Arc<Registry>,
        clock: Arc<ManualClock>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000_000_000);
        let sessions = Arc::new(Registry::open(&dir.path().join("s.log"), 0).unwrap());
        let notifier = Arc::new(FakeNotifier::default());
        let engine = Engine::new(Parts {
            node_id: "n1".into(),
            ticker: Arc::new(Ticker::new(clock.clone())),
            set: Arc::new(RevocationSet::new()),
            meta: Arc::new(MetaIndex::default()),
            log: Arc::new(RevocationLog::open(&dir.path().join("r.log")).unwrap().0),
            sessions: sessions.clone(),
            audit: Arc::new(AuditLog::open(&dir.path().join("a.log")).unwrap()),
            notifier: notifier.clone(),
            metrics: Arc::new(Metrics::default()),
        });
        Fixture {
            _dir: dir,
            engine,
            notifier,
            sessions,
            clock,
        }
    }

    fn session(reg: &Registry, sid: &str, user: &str, created_us: Micros) {
        reg.create(SessionInfo {
            sid: sid.into(),
            user: user.into(),
            groups: vec!["staff".to_string()],
            created_us,
            expires_us: i64::MAX,
            node: "n1".into(),
            ..Default::default()
        });
    }

    fn req(scope: Scope, target: &str) -> RevokeRequest {
        RevokeRequest {
            scope,
            target: target.into(),
            reason: "test".into(),
            actor: "ops".into(),
            external_id: None,
        }
    }

    #[tokio::test]
    async fn revoke_is_durable_enforced_audited_and_published() {
        let f = fixture();
        session(&f.sessions, "s1", "a@x.com", 1);
        session(&f.sessions, "s2", "b@x.com", 1);
        let out = f.engine.revoke(req(Scope::User, "A@X.com")).await.unwrap();
        assert_eq!(out.target, "a@x.com");
        // One session here plus what the notifier says the others ended.
        assert_eq!(out.sessions_revoked, 1 + 2);
        assert_eq!((out.peers_acked, out.peers), (2, 3));
        assert_eq!(
            f.engine.set().get(Scope::User, "a@x.com"),
            Some(out.not_before_us)
        );
        let on_disk = crate::revocation::log::read_all(f.engine.log().path()).unwrap();
        assert_eq!(on_disk.len(), 1);
        assert_eq!(on_disk[0].id, out.id);
        assert_eq!(f.notifier.seen.lock().unwrap()[0].id, out.id);
        let live = f.sessions.list(None, f.engine.now_us());
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].info.sid, "s2");
        let audit = std::fs::read_to_string(f._dir.path().join("a.log")).unwrap();
        assert!(audit.contains(&out.id) && audit.contains("\"actor\":\"ops\""));
    }

    #[tokio::test]
    async fn external_ids_reach_the_record_the_audit_line_and_the_peers() {
        let f = fixture();
        let mut r = req(Scope::Member, "Ada@X.com:staff");
        r.actor = "scim:okta".into();
        r.external_id = Some("2819c223".into());
        let out = f.engine.revoke(r).await.unwrap();
        assert_eq!(out.target, "ada@x.com:staff");
        assert_eq!(out.external_id.as_deref(), Some("2819c223"));
        let rec = &f.engine.in_force(1)[0];
        assert_eq!(rec.external_id.as_deref(), Some("2819c223"));
        assert_eq!(
            f.notifier.seen.lock().unwrap()[0].external_id.as_deref(),
            Some("2819c223")
        );
        let audit = std::fs::read_to_string(f._dir.path().join("a.log")).unwrap();
        assert!(audit.contains("\"external_id\":\"2819c223\""), "{audit}");
        let mut bad = req(Scope::Member, "no-email:staff");
        bad.external_id = Some("x".into());
        assert!(f.engine.revoke(bad).await.is_err());
    }

    #[tokio::test]
    async fn bad_requests_change_nothing() {
        let f = fixture();
        for bad in [req(Scope::User, " "), req(Scope::Session, "a\nb")] {
            assert!(matches!(
                f.engine.revoke(bad).await,
                Err(RevokeError::Invalid(_))
            ));
        }
        assert!(f.engine.set().is_empty());
        assert!(f.notifier.seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn accept_applies_only_what_moves_the_set_forward() {
        let f = fixture();
        session(&f.sessions, "s1", "a@x.com", 1);
        let rec = |id: &str, nb: Micros| RevocationRecord {
            id: id.into(),
            scope: Scope::Session,
            target: "s1".into(),
            not_before_us: nb,
            reason: "r".into(),
            actor: "ops".into(),
            node: "n2".into(),
            external_id: None,
        };
        let (moved, ended) = f.engine.accept(vec![rec("r1", 50)]).await.unwrap();
        assert_eq!((moved, ended.get("r1").copied()), (1, Some(1)));
        // Older, equal, or not canonical: nothing moves, nothing is written.
        let mut bad = rec("r3", 60);
        bad.target = " s1".into();
        let (moved, _) = f
            .engine
            .accept(vec![rec("r2", 40), rec("r1", 50), bad])
            .await
            .unwrap();
        assert_eq!(moved, 0);
        assert_eq!(
            crate::revocation::log::read_all(f.engine.log().path())
                .unwrap()
                .len(),
            1
        );
        // A later instant from elsewhere moves this node's clock past it.
        f.engine
            .accept(vec![rec("r4", i64::MAX / 2)])
            .await
            .unwrap();
        f.clock.advance(std::time::Duration::from_secs(1));
        let out = f.engine.revoke(req(Scope::App, "echo")).await.unwrap();
        assert!(out.not_before_us > i64::MAX / 2);
    }

    #[test]
    fn canonical_agrees_with_normalize() {
        for scope in Scope::ALL {
            for t in [
                "a@x.com",
                "A@x.com",
                " a",
                "a ",
                "",
                "*",
                "sid_-1",
                "tab\there",
                "ünï",
                "a@x.com:staff",
                "A@x.com:staff",
                "a@x.com: staff",
                "a@x.com:",
                "nobody:staff",
                &"x".repeat(513),
            ] {
                let want = normalize(scope, t).is_ok_and(|n| n == t);
                assert_eq!(canonical(scope, t), want, "{scope:?} {t:?}");
            }
        }
    }
}
