//! Last-writer-wins documents (SCIM users and groups): one hash per namespace,
//! `<p>:doc:<ns>`, id → `<version>:<json>`. A write is applied only when its version
//! is newer than the stored one, checked and written by one Lua script, so nodes that
//! race converge on the newest version whatever order their writes land in. A delete
//! leaves a tombstone (`<version>:`) so an older write arriving late cannot bring the
//! document back.
//!
//! Every write that wins also steps a counter and records the document under it in a
//! sorted set (one member per document, so the set is no larger than the documents),
//! so a node learns what changed since it last looked in one round trip
//! ([`RedisStore::doc_changes`]) instead of reading every document.

use super::{RedisError, RedisStore, Req};
use ::redis::Script;
use std::sync::LazyLock;

/// A stored document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    pub id: String,
    pub version: u64,
    pub json: String,
}

/// KEYS: hash, counter, changes. ARGV: id, version, json ('' deletes), ns. 1 when
/// written. Versions are decimal strings compared by length then bytes, exact for
/// every u64.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ov = string.match(old, '^(%d+):')
  local nv = ARGV[2]
  if ov and (#ov > #nv or (#ov == #nv and ov >= nv)) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
local n = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], n, ARGV[4] .. '\n' .. ARGV[1])
return 1
"#,
    )
});

/// KEYS: counter, changes. ARGV: after, limit. {counter, {member, score, ...}}.
static CHANGES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local items = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
return {seq, items}
"#,
    )
});

/// What changed since a given point of the counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocChanges {
    /// The counter now. Below the point asked about when Redis lost its data.
    pub seq: u64,
    /// (counter at the write, namespace, id), oldest first, at most the limit asked.
    pub changed: Vec<(u64, String, String)>,
}

impl RedisStore {
    /// The documents whose last winning write came after `after` on the counter (at
    /// most `limit` of them), and the counter now, read together.
    pub async fn doc_changes(&self, after: u64, limit: usize) -> Result<DocChanges, RedisError> {
        let mut inv = CHANGES.prepare_invoke();
        let k = self.keys();
        inv.key(&k.doc_seq)
            .key(&k.doc_changes)
            .arg(after)
            .arg(limit);
        let (seq, items): (u64, Vec<String>) = self.run("doc_changes", Req::Script(&inv)).await?;
        let changed = items
            .chunks_exact(2)
            .filter_map(|p| {
                let (ns, id) = p[0].split_once('\n')?;
                Some((p[1].parse().ok()?, ns.to_owned(), id.to_owned()))
            })
            .collect();
        Ok(DocChanges { seq, changed })
    }

    /// Stores `json` as document `id` of `ns` unless a version at least as new is there
    /// (stored or deleted). True when this write won.
    pub async fn put_doc(
        &self,
        ns: &str,
        id: &str,
        json: &str,
        version: u64,
    ) -> Result<bool, RedisError> {
        self.write_doc(ns, id, json, version).await
    }

    /// Deletes document `id` as of `version` (a tombstone; an older put loses to it).
    pub async fn delete_doc(&self, ns: &str, id: &str, version: u64) -> Result<bool, RedisError> {
        self.write_doc(ns, id, "", version).await
    }

    async fn write_doc(
        &self,
        ns: &str,
        id: &str,
        json: &str,
        version: u64,
    ) -> Result<bool, RedisError> {
        let mut inv = PUT.prepare_invoke();
        let k = self.keys();
        inv.key(k.docs(ns))
            .key(&k.doc_seq)
            .key(&k.doc_changes)
            .arg(id)
            .arg(version)
            .arg(json)
            .arg(ns);
        let n: i64 = self.run("put_doc", Req::Script(&inv)).await?;
        Ok(n == 1)
    }

    pub async fn get_doc(&self, ns: &str, id: &str) -> Result<Option<Doc>, RedisError> {
        let mut cmd = ::redis::cmd("HGET");
        cmd.arg(self.keys().docs(ns)).arg(id);
        let v: Option<String> = self.run("get_doc", Req::Cmd(&cmd)).await?;
        Ok(v.and_then(|v| parse(id.to_owned(), &v)))
    }

    /// Every live document of `ns` (tombstones left out), in no particular order.
    pub async fn list_docs(&self, ns: &str) -> Result<Vec<Doc>, RedisError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(self.keys().docs(ns));
        let all: Vec<(String, String)> = self.run("list_docs", Req::Cmd(&cmd)).await?;
        Ok(all
            .into_iter()
            .filter_map(|(id, v)| parse(id, &v))
            .collect())
    }
}

/// `<version>:<json>` → a document; None for a tombstone or a damaged value.
fn parse(id: String, v: &str) -> Option<Doc> {
    let (version, json) = v.split_once(':')?;
    let version = version.parse().ok()?;
    (!json.is_empty()).then(|| Doc {
        id,
        version,
        json: json.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_tombstones() {
        let d = parse("u1".into(), r#"12:{"a":"b:c"}"#).unwrap();
        assert_eq!(d.version, 12);
        assert_eq!(d.json, r#"{"a":"b:c"}"#);
        assert_eq!(parse("u1".into(), "13:"), None);
        assert_eq!(parse("u1".into(), "garbage"), None);
    }
}
