//! The session registry: the global sessions this node knows (sid, user, groups, the
//! identity provider, client IP, user agent, created, expires, the apps it minted
//! tokens for, last seen). Kept in memory and in an append-only JSON-lines journal
//! under the state dir, so it survives restarts. `last seen` is updated in memory and
//! journaled in batches, never a disk write per request.
//!
//! Behind a load balancer a session is signed in on one node and used on others: a
//! node that mints an app token for a session it did not sign in records it as
//! `foreign`, and the cluster-wide lists merge the nodes' records ([`merge`]).

use crate::clock::Micros;
use crate::store::{Framing, RecordLog, StoreError, Sync};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Only journal a new `last seen` when it moved by at least this much.
const SEEN_GRANULARITY_US: Micros = 30_000_000;
/// How long ended sessions stay listed for `GET /v1/users` (a month and a bit).
pub const KEEP_ENDED_US: Micros = 35 * 24 * 3600 * 1_000_000;
/// User agents are kept to this many characters.
const MAX_USER_AGENT: usize = 512;
/// Sessions held when no bound is given (`[limits] max_sessions`).
pub const DEFAULT_MAX_SESSIONS: usize = 200_000;

/// What a session is, as recorded when it starts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub sid: String,
    pub user: String,
    pub groups: Vec<String>,
    pub ip: String,
    pub user_agent: String,
    pub created_us: Micros,
    pub expires_us: Micros,
    /// The node that recorded this.
    pub node: String,
    /// The identity provider that signed the user in (empty: the built-in users).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp: String,
    /// The user's `sub` at that identity provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp_sub: String,
    /// The identity provider's own session id (its `sid` claim), when it gave one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp_sid: String,
    /// Signed in on another node; this node only minted app tokens for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign: bool,
}

#[derive(Debug)]
pub struct Session {
    pub info: SessionInfo,
    apps: Mutex<Vec<String>>,
    last_seen_us: AtomicI64,
    ended_us: AtomicI64,
    dirty: AtomicBool,
}

/// What operators see (and what peers exchange) for a session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionView {
    #[serde(flatten)]
    pub info: SessionInfo,
    pub apps: Vec<String>,
    pub last_seen_us: Micros,
}

impl Session {
    fn new(mut info: SessionInfo) -> Session {
        info.user_agent = info.user_agent.chars().take(MAX_USER_AGENT).collect();
        Session {
            last_seen_us: AtomicI64::new(info.created_us),
            info,
            apps: Mutex::new(Vec::new()),
            ended_us: AtomicI64::new(0),
            dirty: AtomicBool::new(false),
        }
    }
    pub fn view(&self) -> SessionView {
        SessionView {
            info: self.info.clone(),
            apps: self.apps(),
            last_seen_us: self.last_seen_us(),
        }
    }
    pub fn apps(&self) -> Vec<String> {
        self.apps.lock().map(|a| a.clone()).unwrap_or_default()
    }
    pub fn is_live(&self, now: Micros) -> bool {
        self.ended_us.load(Ordering::Relaxed) == 0 && now < self.info.expires_us
    }
    pub fn last_seen_us(&self) -> Micros {
        self.last_seen_us.load(Ordering::Relaxed)
    }
    /// Cheap: an atomic store only when the value moved by the granularity.
    pub fn touch(&self, now: Micros) {
        let last = self.last_seen_us.load(Ordering::Relaxed);
        if now - last >= SEEN_GRANULARITY_US {
            self.last_seen_us.store(now, Ordering::Relaxed);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
    /// Adds `app`; true when it was new.
    fn add_app(&self, app: &str) -> bool {
        match self.apps.lock() {
            Ok(mut apps) if !apps.iter().any(|a| a == app) => {
                apps.push(app.to_string());
                true
            }
            _ => false,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
enum Event {
    New(SessionInfo),
    App { sid: String, app: String },
    Seen { sid: String, t: Micros },
    End { sid: String, t: Micros },
}

/// Told about every change to the sessions this node records, so a cluster backend
/// that keeps the session inventory centrally (Redis) can follow. Must not block.
pub trait SessionMirror: Send + std::marker::Sync {
    fn created(&self, info: &SessionInfo);
    fn app_added(&self, sid: &str, app: &str, now: Micros);
    fn ended(&self, sid: &str, at: Micros);
    fn seen(&self, sid: &str, at: Micros);
}

pub struct Registry {
    sessions: DashMap<String, Arc<Session>>,
    journal: RecordLog,
    mirror: std::sync::OnceLock<Arc<dyn SessionMirror>>,
    /// At most this many sessions are held; past it the least useful are forgotten.
    max: usize,
    evicted: AtomicU64,
}

impl Registry {
    /// [`Registry::open_bounded`] with the default bound.
    pub fn open(path: &Path, now: Micros) -> Result<Registry, StoreError> {
        Self::open_bounded(path, now, DEFAULT_MAX_SESSIONS)
    }

    /// Opens the journal, replays it, and rewrites it with only the sessions worth
    /// keeping (at most `max`).
    pub fn open_bounded(path: &Path, now: Micros, max: usize) -> Result<Registry, StoreError> {
        let (journal, lines) = RecordLog::open(path, Framing::Lines)?;
        let reg = Registry {
            sessions: DashMap::new(),
            journal,
            mirror: std::sync::OnceLock::new(),
            max: max.max(1),
            evicted: AtomicU64::new(0),
        };
        for line in lines {
            match serde_json::from_slice::<Event>(&line) {
                Ok(ev) => reg.replay(ev),
                Err(_) => {
                    tracing::warn!(path = %path.display(), "skipping an unreadable session journal line")
                }
            }
        }
        // Keep ended and expired sessions for a while: the monthly user list needs them.
        reg.sessions
            .retain(|_, s| s.info.expires_us + KEEP_ENDED_US > now);
        while reg.sessions.len() > reg.max {
            reg.make_room(now);
        }
        reg.rewrite()?;
        Ok(reg)
    }

    /// When the registry is full: forgets ended and expired sessions, and if that is
    /// not enough, the least recently seen tenth. The sessions stay valid (revocation
    /// does not depend on the registry); they leave the operators' lists.
    fn make_room(&self, now: Micros) {
        if self.sessions.len() < self.max {
            return;
        }
        let before = self.sessions.len();
        self.sessions.retain(|_, s| s.is_live(now));
        if self.sessions.len() >= self.max {
            let mut seen: Vec<Micros> = self.sessions.iter().map(|s| s.last_seen_us()).collect();
            let k = (seen.len() / 10).max(1) - 1;
            let (_, cut, _) = seen.select_nth_unstable(k);
            let cut = *cut;
            self.sessions.retain(|_, s| s.last_seen_us() > cut);
        }
        let evicted = before.saturating_sub(self.sessions.len());
        self.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
        tracing::warn!(
            evicted,
            max = self.max,
            "session registry full: forgot ended, expired and least recently seen sessions"
        );
    }

    /// Sessions forgotten to keep the registry within its bound.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn replay(&self, ev: Event) {
        match ev {
            Event::New(info) => {
                self.sessions
                    .insert(info.sid.clone(), Arc::new(Session::new(info)));
            }
            Event::App { sid, app } => {
                if let Some(s) = self.sessions.get(&sid) {
                    s.add_app(&app);
                }
            }
            Event::Seen { sid, t } => {
                if let Some(s) = self.sessions.get(&sid) {
                    s.last_seen_us.fetch_max(t, Ordering::Relaxed);
                }
            }
            Event::End { sid, t } => {
                if let Some(s) = self.sessions.get(&sid) {
                    s.ended_us.store(t, Ordering::Relaxed);
                }
            }
        }
    }

    /// The events that recreate one session as it is now.
    fn events_of(s: &Session) -> Vec<Event> {
        let sid = &s.info.sid;
        let mut events = vec![Event::New(s.info.clone())];
        events.extend(s.apps().into_iter().map(|app| Event::App {
            sid: sid.clone(),
            app,
        }));
        events.push(Event::Seen {
            sid: sid.clone(),
            t: s.last_seen_us(),
        });
        let ended = s.ended_us.load(Ordering::Relaxed);
        if ended != 0 {
            events.push(Event::End {
                sid: sid.clone(),
                t: ended,
            });
        }
        events
    }

    /// Rewrites the journal with only the sessions held in memory.
    fn rewrite(&self) -> Result<(), StoreError> {
        let lines: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .flat_map(|s| Self::events_of(&s))
            .filter_map(|ev| serde_json::to_vec(&ev).ok())
            .collect();
        self.journal.rewrite(|_| lines)?;
        Ok(())
    }

    fn journal(&self, events: &[Event], sync: bool) {
        let lines: Vec<Vec<u8>> = events
            .iter()
            .filter_map(|ev| serde_json::to_vec(ev).ok())
            .collect();
        let sync = if sync { Sync::Durable } else { Sync::Buffered };
        if let Err(e) = self.journal.append(&lines, sync) {
            tracing::error!(error = %e, "cannot write the session journal");
        }
    }

    /// Follows every later change with `mirror` (set once, when the backend starts).
    pub fn set_mirror(&self, mirror: Arc<dyn SessionMirror>) {
        let _ = self.mirror.set(mirror);
    }

    fn mirror(&self) -> Option<&Arc<dyn SessionMirror>> {
        self.mirror.get()
    }

    /// Records a new global session (journaled and synced: logins are rare).
    pub fn create(&self, info: SessionInfo) -> Arc<Session> {
        self.make_room(info.created_us);
        let s = Arc::new(Session::new(info));
        self.sessions.insert(s.info.sid.clone(), s.clone());
        self.journal(&[Event::New(s.info.clone())], true);
        if let Some(m) = self.mirror() {
            m.created(&s.info);
        }
        s
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.get(sid).map(|s| s.clone())
    }

    /// Notes that session `sid` minted a token for `app`. A session this node does
    /// not know (signed in on another node) is recorded from `info` as foreign first.
    pub fn add_app(&self, sid: &str, app: &str, now: Micros, info: impl FnOnce() -> SessionInfo) {
        let mut events = Vec::new();
        let s = match self.get(sid) {
            Some(s) => s,
            None => {
                self.make_room(now);
                let mut i = info();
                i.foreign = true;
                let s = Arc::new(Session::new(i));
                self.sessions.insert(s.info.sid.clone(), s.clone());
                events.push(Event::New(s.info.clone()));
                s
            }
        };
        s.touch(now);
        if s.add_app(app) {
            events.push(Event::App {
                sid: s.info.sid.clone(),
                app: app.to_string(),
            });
            if let Some(m) = self.mirror() {
                m.app_added(sid, app, now);
            }
        }
        if !events.is_empty() {
            self.journal(&events, false);
        }
    }

    /// Marks sessions matching `pred` (and created before `before`) as ended; returns
    /// how many live sessions that ended (or, with `end = false`, merely matched).
    pub fn end_matching(
        &self,
        before: Micros,
        now: Micros,
        end: bool,
        pred: impl Fn(&Session) -> bool,
    ) -> u64 {
        let mut ended = Vec::new();
        for s in self.sessions.iter() {
            if s.is_live(now) && s.info.created_us <= before && pred(&s) {
                if end {
                    s.ended_us.store(now, Ordering::Relaxed);
                }
                ended.push(Event::End {
                    sid: s.info.sid.clone(),
                    t: now,
                });
            }
        }
        let n = ended.len() as u64;
        if end && !ended.is_empty() {
            self.journal(&ended, true);
            if let Some(m) = self.mirror() {
                for ev in &ended {
                    if let Event::End { sid, t } = ev {
                        m.ended(sid, *t);
                    }
                }
            }
        }
        n
    }

    /// Live sessions, optionally of one user, newest first.
    pub fn list(&self, user: Option<&str>, now: Micros) -> Vec<SessionView> {
        let mut v: Vec<SessionView> = self
            .sessions
            .iter()
            .filter(|s| s.is_live(now) && user.is_none_or(|u| s.info.user.eq_ignore_ascii_case(u)))
            .map(|s| s.view())
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.info.created_us));
        v
    }

    /// Every session (live or not) created since `since`, for the monthly user list.
    pub fn created_since(&self, since: Micros) -> Vec<SessionView> {
        self.sessions
            .iter()
            .filter(|s| s.info.created_us >= since)
            .map(|s| s.view())
            .collect()
    }

    /// Journals `last seen` for sessions touched since the last flush, and forgets
    /// sessions that expired more than `keep` ago.
    pub fn flush(&self, now: Micros, keep: Micros) {
        let mut seen = Vec::new();
        for s in self.sessions.iter() {
            if s.dirty.swap(false, Ordering::Relaxed) {
                seen.push(Event::Seen {
                    sid: s.info.sid.clone(),
                    t: s.last_seen_us(),
                });
            }
        }
        if !seen.is_empty() {
            self.journal(&seen, false);
            if let Some(m) = self.mirror() {
                for ev in &seen {
                    if let Event::Seen { sid, t } = ev {
                        m.seen(sid, *t);
                    }
                }
            }
        }
        self.sessions.retain(|_, s| s.info.expires_us + keep > now);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// One view per session from the records several nodes hold: the apps of all of them,
/// the latest `last seen`, and the identity of the node that signed the user in (a
/// foreign record only when no other is known). Newest first.
pub fn merge(views: impl IntoIterator<Item = SessionView>) -> Vec<SessionView> {
    let mut by_sid: HashMap<String, SessionView> = HashMap::new();
    for v in views {
        match by_sid.get_mut(&v.info.sid) {
            None => {
                by_sid.insert(v.info.sid.clone(), v);
            }
            Some(have) => {
                for app in &v.apps {
                    if !have.apps.contains(app) {
                        have.apps.push(app.clone());
                    }
                }
                let last_seen = have.last_seen_us.max(v.last_seen_us);
                if have.info.foreign && !v.info.foreign {
                    have.info = v.info;
                }
                have.last_seen_us = last_seen;
            }
        }
    }
    let mut out: Vec<SessionView> = by_sid.into_values().collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.info.created_us));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sid: &str, user: &str) -> SessionInfo {
        SessionInfo {
            sid: sid.into(),
            user: user.into(),
            ip: "127.0.0.1".into(),
            user_agent: "test".into(),
            created_us: 10,
            expires_us: 1_000_000_000,
            node: "n".into(),
            ..Default::default()
        }
    }

    #[test]
    fn survives_reopen_with_apps_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sessions.log");
        let r = Registry::open(&p, 0).unwrap();
        for (sid, user) in [("s1", "a@x.com"), ("s2", "b@x.com")] {
            r.create(info(sid, user));
        }
        r.add_app("s1", "echo", 20, || info("s1", "a@x.com"));
        assert_eq!(
            r.end_matching(100, 50, true, |s| s.info.user == "b@x.com"),
            1
        );
        drop(r);
        let r = Registry::open(&p, 60).unwrap();
        let live = r.list(None, 60);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].apps, vec!["echo".to_string()]);
        assert_eq!(live[0].info.ip, "127.0.0.1");
        assert!(!live[0].info.foreign);
    }

    #[test]
    fn the_registry_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.log");
        let r = Registry::open_bounded(&p, 0, 20).unwrap();
        for i in 0..10 {
            r.create(info(&format!("old{i}"), "a@x.com"));
        }
        r.end_matching(100, 50, true, |_| true);
        for i in 0..100 {
            let mut s = info(&format!("s{i}"), "b@x.com");
            s.created_us = 100 + i;
            r.create(s);
            assert!(r.len() <= 20, "{}", r.len());
        }
        assert!(r.get("s99").is_some(), "the newest stays");
        assert!(r.get("old0").is_none(), "ended sessions go first");
        assert!(r.evicted() >= 90);
        drop(r);
        assert!(Registry::open_bounded(&p, 200, 5).unwrap().len() <= 5);
    }

    #[test]
    fn foreign_sessions_are_recorded_and_merged() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(&dir.path().join("s.log"), 0).unwrap();
        let mut here = info("s1", "a@x.com");
        here.node = "n2".into();
        here.ip = "10.0.0.9".into();
        r.add_app("s1", "wiki", 40, || here.clone());
        let foreign = &r.list(None, 50)[0];
        assert!(foreign.info.foreign);
        // The signing-in node's record wins for identity; apps and last seen merge.
        let mut origin = SessionView {
            info: info("s1", "a@x.com"),
            apps: vec!["echo".into()],
            last_seen_us: 30,
        };
        origin.info.node = "n1".into();
        let merged = merge([foreign.clone(), origin]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].info.node, "n1");
        assert_eq!(merged[0].info.ip, "127.0.0.1");
        assert_eq!(merged[0].apps, vec!["wiki".to_string(), "echo".to_string()]);
        assert_eq!(merged[0].last_seen_us, foreign.last_seen_us.max(30));
    }
}
