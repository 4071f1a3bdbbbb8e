//! The cluster-wide session registry: every global session any node issued, so that
//! `GET /v1/sessions` lists them all and any node can end one.
//!
//! One hash per session (`<p>:session:<sid>`: `doc` = the record as first put, `seen`,
//! `ended`, and one `app:<name>` field per app, valued by insertion order) expiring at
//! its keep-until time, plus two sorted-set indexes scored by keep-until (ms): every sid
//! (`<p>:sessions`) and the sids of one user (`<p>:user:<email>`). Index entries past
//! their score are dropped as they are read; each index expires with its last member.
//! Fields are updated separately so concurrent `add_app`/`end_session` on different
//! nodes never overwrite each other.

use super::{RedisError, RedisStore, Req};
use crate::clock::Micros;
use ::redis::Script;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Sessions fetched per pipeline.
const CHUNK: usize = 500;

/// One global session as the cluster sees it (the fields of the registry's view, plus
/// when it ended, if it did).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub user_agent: String,
    pub created_us: Micros,
    pub last_seen_us: Micros,
    pub expires_us: Micros,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub ended_us: Option<Micros>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp_sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp_sid: String,
}

impl SessionRecord {
    pub fn is_live(&self, now: Micros) -> bool {
        self.ended_us.is_none() && now < self.expires_us
    }
}

/// KEYS: session, all-index, user-index. ARGV: doc, seen, ended or '', keep_until_ms,
/// sid, apps...
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = KEYS[1]
redis.call('HSET', k, 'doc', ARGV[1])
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', k, 'seen') or '0') then
  redis.call('HSET', k, 'seen', ARGV[2])
end
if ARGV[3] ~= '' then redis.call('HSETNX', k, 'ended', ARGV[3]) end
for i = 6, #ARGV do redis.call('HSETNX', k, 'app:' .. ARGV[i], redis.call('HLEN', k)) end
redis.call('PEXPIREAT', k, ARGV[4])
for _, idx in ipairs({KEYS[2], KEYS[3]}) do
  redis.call('ZADD', idx, ARGV[4], ARGV[5])
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', idx, top[2])
end
return 1
"#,
    )
});

/// KEYS: session. ARGV: app, now. 0 when there is no such session.
static ADD_APP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSETNX', k, 'app:' .. ARGV[1], redis.call('HLEN', k))
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', k, 'seen') or '0') then
  redis.call('HSET', k, 'seen', ARGV[2])
end
return 1
"#,
    )
});

/// KEYS: session. ARGV: t. Moves `seen` forward; 0 when there is no such session.
static SEEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', k, 'seen') or '0') then
  redis.call('HSET', k, 'seen', ARGV[1])
end
return 1
"#,
    )
});

/// KEYS: session. ARGV: t. 1 when this call ended a live session.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
return redis.call('HSETNX', k, 'ended', ARGV[1])
"#,
    )
});

impl RedisStore {
    /// Registers (or refreshes) a session, kept until `keep_until_us` (ended and expired
    /// sessions stay listed that long, e.g. for the monthly user list). Apps, last seen
    /// and the end time only ever grow: a stale put cannot undo `add_app`/`end_session`.
    pub async fn put_session(
        &self,
        rec: &SessionRecord,
        keep_until_us: Micros,
    ) -> Result<(), RedisError> {
        let doc = serde_json::to_string(rec)?;
        let mut inv = PUT.prepare_invoke();
        inv.key(self.keys().session(&rec.sid))
            .key(&self.keys().sessions)
            .key(self.keys().user(&rec.user))
            .arg(doc)
            .arg(rec.last_seen_us)
            .arg(rec.ended_us.map(|t| t.to_string()).unwrap_or_default())
            .arg(keep_until_us.div_euclid(1000))
            .arg(&rec.sid);
        for app in &rec.apps {
            inv.arg(app);
        }
        self.run::<i64>("put_session", Req::Script(&inv))
            .await
            .map(|_| ())
    }

    /// Notes that session `sid` got a token for `app` at `now`. False when the session is
    /// not registered (expired or never put).
    pub async fn add_app(&self, sid: &str, app: &str, now: Micros) -> Result<bool, RedisError> {
        let mut inv = ADD_APP.prepare_invoke();
        inv.key(self.keys().session(sid)).arg(app).arg(now);
        let n: i64 = self.run("add_app", Req::Script(&inv)).await?;
        Ok(n == 1)
    }

    /// Moves the session's last seen to `t` (never back).
    pub async fn touch_session(&self, sid: &str, t: Micros) -> Result<bool, RedisError> {
        let mut inv = SEEN.prepare_invoke();
        inv.key(self.keys().session(sid)).arg(t);
        let n: i64 = self.run("touch_session", Req::Script(&inv)).await?;
        Ok(n == 1)
    }

    /// Marks the session ended at `t`. True only for the call that ended it.
    pub async fn end_session(&self, sid: &str, t: Micros) -> Result<bool, RedisError> {
        let mut inv = END.prepare_invoke();
        inv.key(self.keys().session(sid)).arg(t);
        let n: i64 = self.run("end_session", Req::Script(&inv)).await?;
        Ok(n == 1)
    }

    pub async fn get_session(&self, sid: &str) -> Result<Option<SessionRecord>, RedisError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(self.keys().session(sid));
        let h: HashMap<String, String> = self.run("get_session", Req::Cmd(&cmd)).await?;
        Ok(assemble(h))
    }

    /// The sessions of `user` still kept at `now` (live, ended or expired), newest first.
    pub async fn sessions_of(
        &self,
        user: &str,
        now: Micros,
    ) -> Result<Vec<SessionRecord>, RedisError> {
        self.indexed(self.keys().user(user), now).await
    }

    /// Every session kept at `now`, newest first.
    pub async fn all_sessions(&self, now: Micros) -> Result<Vec<SessionRecord>, RedisError> {
        self.indexed(self.keys().sessions.clone(), now).await
    }

    async fn indexed(&self, index: String, now: Micros) -> Result<Vec<SessionRecord>, RedisError> {
        let floor = format!("({}", now.div_euclid(1000));
        let mut p = ::redis::pipe();
        p.atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(&floor)
            .ignore()
            .cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1);
        let (sids,): (Vec<String>,) = self.run("sessions", Req::Pipe(&p)).await?;
        let mut out = Vec::with_capacity(sids.len());
        for chunk in sids.chunks(CHUNK) {
            let mut p = ::redis::pipe();
            for sid in chunk {
                p.cmd("HGETALL").arg(self.keys().session(sid));
            }
            let hashes: Vec<HashMap<String, String>> = self.run("sessions", Req::Pipe(&p)).await?;
            out.extend(hashes.into_iter().filter_map(assemble));
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.created_us));
        Ok(out)
    }
}

/// A session from its hash (None for a missing or damaged one).
fn assemble(mut h: HashMap<String, String>) -> Option<SessionRecord> {
    let doc = h.remove("doc")?;
    let mut rec: SessionRecord = match serde_json::from_str(&doc) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "redis: skipping undecodable session");
            return None;
        }
    };
    let num = |s: Option<&String>| s.and_then(|v| v.parse::<Micros>().ok());
    if let Some(seen) = num(h.get("seen")) {
        rec.last_seen_us = rec.last_seen_us.max(seen);
    }
    if let Some(ended) = num(h.get("ended")) {
        rec.ended_us = Some(ended);
    }
    let mut apps: Vec<(i64, String)> = h
        .iter()
        .filter_map(|(f, v)| {
            Some((
                v.parse().unwrap_or(i64::MAX),
                f.strip_prefix("app:")?.to_owned(),
            ))
        })
        .collect();
    apps.sort();
    rec.apps = apps.into_iter().map(|(_, a)| a).collect();
    Some(rec)
}
