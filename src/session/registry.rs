//! The session registry: every global session this node issued (sid, user, apps it
//! minted tokens for, client IP, user agent, created, last seen, expires). Kept in
//! memory and in an append-only JSON-lines journal under the state dir, so it survives
//! restarts. `last seen` is updated in memory and journaled in batches, never a disk
//! write per request.

use crate::clock::Micros;
use crate::store::{Framing, RecordLog, StoreError, Sync};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Only journal a new `last seen` when it moved by at least this much.
const SEEN_GRANULARITY_US: Micros = 30_000_000;
/// How long ended sessions stay listed for `GET /v1/users` (a month and a bit).
pub const KEEP_ENDED_US: Micros = 35 * 24 * 3600 * 1_000_000;

#[derive(Debug)]
pub struct Session {
    pub sid: String,
    pub user: String,
    pub groups: Vec<String>,
    pub ip: String,
    pub user_agent: String,
    pub created_us: Micros,
    pub expires_us: Micros,
    pub node: String,
    apps: Mutex<Vec<String>>,
    last_seen_us: AtomicI64,
    ended_us: AtomicI64,
    dirty: AtomicBool,
}

/// What operators see (and what peers exchange) for a session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub sid: String,
    pub user: String,
    pub groups: Vec<String>,
    pub apps: Vec<String>,
    pub ip: String,
    pub user_agent: String,
    pub created_us: Micros,
    pub last_seen_us: Micros,
    pub expires_us: Micros,
    pub node: String,
}

impl Session {
    pub fn view(&self) -> SessionView {
        SessionView {
            sid: self.sid.clone(),
            user: self.user.clone(),
            groups: self.groups.clone(),
            apps: self.apps(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            created_us: self.created_us,
            last_seen_us: self.last_seen_us.load(Ordering::Relaxed),
            expires_us: self.expires_us,
            node: self.node.clone(),
        }
    }
    pub fn apps(&self) -> Vec<String> {
        self.apps.lock().map(|a| a.clone()).unwrap_or_default()
    }
    pub fn is_live(&self, now: Micros) -> bool {
        self.ended_us.load(Ordering::Relaxed) == 0 && now < self.expires_us
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
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
enum Event {
    New {
        sid: String,
        user: String,
        groups: Vec<String>,
        ip: String,
        user_agent: String,
        created_us: Micros,
        expires_us: Micros,
        node: String,
    },
    App {
        sid: String,
        app: String,
    },
    Seen {
        sid: String,
        t: Micros,
    },
    End {
        sid: String,
        t: Micros,
    },
}

pub struct Registry {
    sessions: DashMap<String, Arc<Session>>,
    journal: RecordLog,
}

pub struct NewSession<'a> {
    pub sid: &'a str,
    pub user: &'a str,
    pub groups: &'a [String],
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub created_us: Micros,
    pub expires_us: Micros,
    pub node: &'a str,
}

impl Registry {
    /// Opens the journal, replays it, and rewrites it with only the sessions worth
    /// keeping.
    pub fn open(path: &Path, now: Micros) -> Result<Registry, StoreError> {
        let (journal, lines) = RecordLog::open(path, Framing::Lines)?;
        let reg = Registry {
            sessions: DashMap::new(),
            journal,
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
            .retain(|_, s| s.expires_us + KEEP_ENDED_US > now);
        reg.rewrite()?;
        Ok(reg)
    }

    fn replay(&self, ev: Event) {
        match ev {
            Event::New {
                sid,
                user,
                groups,
                ip,
                user_agent,
                created_us,
                expires_us,
                node,
            } => {
                self.sessions.insert(
                    sid.clone(),
                    Arc::new(Session {
                        sid,
                        user,
                        groups,
                        ip,
                        user_agent,
                        created_us,
                        expires_us,
                        node,
                        apps: Mutex::new(Vec::new()),
                        last_seen_us: AtomicI64::new(created_us),
                        ended_us: AtomicI64::new(0),
                        dirty: AtomicBool::new(false),
                    }),
                );
            }
            Event::App { sid, app } => {
                if let Some(s) = self.sessions.get(&sid)
                    && let Ok(mut apps) = s.apps.lock()
                    && !apps.contains(&app)
                {
                    apps.push(app);
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
        let v = s.view();
        let mut events = vec![Event::New {
            sid: v.sid.clone(),
            user: v.user,
            groups: v.groups,
            ip: v.ip,
            user_agent: v.user_agent,
            created_us: v.created_us,
            expires_us: v.expires_us,
            node: v.node,
        }];
        events.extend(v.apps.into_iter().map(|app| Event::App {
            sid: v.sid.clone(),
            app,
        }));
        events.push(Event::Seen {
            sid: v.sid.clone(),
            t: v.last_seen_us,
        });
        let ended = s.ended_us.load(Ordering::Relaxed);
        if ended != 0 {
            events.push(Event::End {
                sid: v.sid,
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

    /// Records a new global session (journaled and synced: logins are rare).
    pub fn create(&self, n: NewSession<'_>) -> Arc<Session> {
        let s = Arc::new(Session {
            sid: n.sid.to_string(),
            user: n.user.to_string(),
            groups: n.groups.to_vec(),
            ip: n.ip.to_string(),
            user_agent: n.user_agent.chars().take(512).collect(),
            created_us: n.created_us,
            expires_us: n.expires_us,
            node: n.node.to_string(),
            apps: Mutex::new(Vec::new()),
            last_seen_us: AtomicI64::new(n.created_us),
            ended_us: AtomicI64::new(0),
            dirty: AtomicBool::new(false),
        });
        self.sessions.insert(s.sid.clone(), s.clone());
        self.journal(
            &[Event::New {
                sid: s.sid.clone(),
                user: s.user.clone(),
                groups: s.groups.clone(),
                ip: s.ip.clone(),
                user_agent: s.user_agent.clone(),
                created_us: s.created_us,
                expires_us: s.expires_us,
                node: s.node.clone(),
            }],
            true,
        );
        s
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.get(sid).map(|s| s.clone())
    }

    /// Notes that the session minted a token for `app`.
    pub fn add_app(&self, sid: &str, app: &str, now: Micros) {
        let Some(s) = self.get(sid) else { return };
        s.touch(now);
        let added = match s.apps.lock() {
            Ok(mut apps) if !apps.iter().any(|a| a == app) => {
                apps.push(app.to_string());
                true
            }
            _ => false,
        };
        if added {
            self.journal(
                &[Event::App {
                    sid: sid.to_string(),
                    app: app.to_string(),
                }],
                false,
            );
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
            if s.is_live(now) && s.created_us <= before && pred(&s) {
                if end {
                    s.ended_us.store(now, Ordering::Relaxed);
                }
                ended.push(Event::End {
                    sid: s.sid.clone(),
                    t: now,
                });
            }
        }
        let n = ended.len() as u64;
        if end && !ended.is_empty() {
            self.journal(&ended, true);
        }
        n
    }

    /// Live sessions, optionally of one user, newest first.
    pub fn list(&self, user: Option<&str>, now: Micros) -> Vec<SessionView> {
        let mut v: Vec<SessionView> = self
            .sessions
            .iter()
            .filter(|s| s.is_live(now) && user.is_none_or(|u| s.user.eq_ignore_ascii_case(u)))
            .map(|s| s.view())
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.created_us));
        v
    }

    /// Every session (live or not) created since `since`, for the monthly user list.
    pub fn created_since(&self, since: Micros) -> Vec<SessionView> {
        self.sessions
            .iter()
            .filter(|s| s.created_us >= since)
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
                    sid: s.sid.clone(),
                    t: s.last_seen_us(),
                });
            }
        }
        if !seen.is_empty() {
            self.journal(&seen, false);
        }
        self.sessions.retain(|_, s| s.expires_us + keep > now);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_with_apps_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sessions.log");
        let r = Registry::open(&p, 0).unwrap();
        for (sid, user) in [("s1", "a@x.com"), ("s2", "b@x.com")] {
            r.create(NewSession {
                sid,
                user,
                groups: &[],
                ip: "127.0.0.1",
                user_agent: "test",
                created_us: 10,
                expires_us: 1_000_000_000,
                node: "n",
            });
        }
        r.add_app("s1", "echo", 20);
        assert_eq!(r.end_matching(100, 50, true, |s| s.user == "b@x.com"), 1);
        drop(r);
        let r = Registry::open(&p, 60).unwrap();
        let live = r.list(None, 60);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].apps, vec!["echo".to_string()]);
        assert_eq!(live[0].ip, "127.0.0.1");
    }
}
