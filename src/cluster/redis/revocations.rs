//! Revocations in Redis: a Stream every node tails (`<p>:revocations`, one entry per
//! published record) and a snapshot (`<p>:revsnap`, the entry in force per scope and
//! target, in buckets: see [`super::snapshot`]) that a starting node loads instead of
//! replaying the whole stream.
//!
//! Both are written by one Lua script, so a record is in both or in neither, and the
//! snapshot keeps the entry with the newer `not_before_us` whatever order nodes publish in.

use super::Req;
use super::keys::Keys;
use super::snapshot::{self, MERGE_LUA, Page, Snapshot};
use super::{RedisError, RedisStore, StreamId};
use crate::clock::Micros;
use crate::revocation::{RevocationRecord, Scope};
use ::redis::{Script, ScriptInvocation};
use std::sync::LazyLock;

/// The stream entry's field holding the record's JSON.
pub(super) const FIELD: &str = "r";
/// Records published per script call.
const PUBLISH_CHUNK: usize = 500;

/// KEYS: stream, snapshot hash. ARGV: (bucket, json, entry) per record.
/// Appends every record to the stream; the snapshot keeps the newer entry per key.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{MERGE_LUA}
local ids = {{}}
for i = 1, #ARGV, 3 do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'r', ARGV[i + 1])
  local blob = redis.call('HGET', KEYS[2], ARGV[i]) or ''
  local merged = merge(blob, ARGV[i + 2])
  if merged then redis.call('HSET', KEYS[2], ARGV[i], merged) end
end
return ids
"#
    ))
});

/// KEYS: stream, trim mark. The id of the last entry ever added (`0-0` when there is
/// none), the largest id deleted by XDEL (`0-0` when unknown, Redis < 7), whether the
/// stream exists, and the milliseconds part of the last `prune` trim point (0 if none).
static POSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local trimmed = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('EXISTS', KEYS[1]) == 0 then return {'0-0', '0-0', 0, trimmed} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
return {last, deleted, 1, trimmed}
"#,
    )
});

/// KEYS: stream, trim mark. ARGV: minid ms. Trims entries older than `<ms>-0` and
/// remembers the newest trim point, so tails behind it know they missed entries
/// (`XTRIM` does not move the stream's own max-deleted-entry-id).
static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1] .. '-0')
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[1])
end
return n
"#,
    )
});

/// KEYS: snapshot hash. ARGV: bucket, the value pruning started from, the pruned value.
/// Writes the pruned value only if the bucket did not change since it was read (a
/// publish in between wins; the next prune tries again).
static PRUNE_BUCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"#,
    )
});

/// KEYS: legacy revset. ARGV: horizon, fields... Deletes each field whose JSON record
/// (read again here, so a newer record written since the scan is kept) is older than
/// the horizon and not of scope `all`.
static PRUNE_LEGACY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local horizon, n = tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old then
    local ok, rec = pcall(cjson.decode, old)
    if ok and type(rec) == 'table' and rec.scope ~= 'all'
       and tonumber(rec.not_before_us) ~= nil and tonumber(rec.not_before_us) < horizon then
      n = n + redis.call('HDEL', KEYS[1], ARGV[i])
    end
  end
end
return n
"#,
    )
});

/// Where the stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub last: StreamId,
    pub max_deleted: StreamId,
    pub exists: bool,
    /// Entries older than this were trimmed by `prune`.
    pub trimmed_before: StreamId,
}

/// The script call that reads the stream's [`Position`] (see [`parse_position`]).
pub(super) fn position_req(keys: &Keys) -> ScriptInvocation<'static> {
    let mut inv = POSITION.prepare_invoke();
    inv.key(&keys.stream).key(&keys.trimmed);
    inv
}

pub(super) type RawPosition = (String, String, i64, u64);

pub(super) fn parse_position(op: &'static str, raw: RawPosition) -> Result<Position, RedisError> {
    let parse = |s: &str| {
        s.parse::<StreamId>()
            .map_err(|e| RedisError::data(op, e.to_string()))
    };
    Ok(Position {
        last: parse(&raw.0)?,
        max_deleted: parse(&raw.1)?,
        exists: raw.2 == 1,
        trimmed_before: StreamId { ms: raw.3, seq: 0 },
    })
}

/// What [`RedisStore::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub hash_removed: u64,
    pub stream_trimmed: u64,
}

impl RedisStore {
    /// Hands `recs` to Redis, each in one atomic step: it is appended to the stream and
    /// the snapshot keeps, per scope and target, the record with the newer
    /// `not_before_us`. Returns the stream ids given to the records, in order. Publishing
    /// the same record twice is harmless (consumers apply records idempotently).
    pub async fn publish(&self, recs: &[RevocationRecord]) -> Result<Vec<StreamId>, RedisError> {
        let mut ids = Vec::with_capacity(recs.len());
        // A script holds Redis while it runs: a bulk revocation goes in several.
        for chunk in recs.chunks(PUBLISH_CHUNK) {
            let mut inv = PUBLISH.prepare_invoke();
            inv.key(&self.keys().stream).key(&self.keys().revsnap);
            for rec in chunk {
                let (bucket, entry) = snapshot::field_and_entry(rec);
                inv.arg(bucket).arg(serde_json::to_string(rec)?).arg(entry);
            }
            let raw: Vec<String> = self.run("publish", Req::Script(&inv)).await?;
            for s in raw {
                ids.push(
                    s.parse::<StreamId>()
                        .map_err(|e| RedisError::data("publish", e.to_string()))?,
                );
            }
            if let Some(last) = ids.last() {
                self.inner.health.tip(*last);
            }
        }
        Ok(ids)
    }

    /// Every record in force, as a run of wire entries, and the stream position to tail
    /// from. The position is read first and the hash after it, so a record published in
    /// between is in the hash, in the tail, or both (applying it twice is harmless),
    /// never in neither.
    pub async fn snapshot(&self) -> Result<(Snapshot, StreamId), RedisError> {
        let raw = self
            .run("snapshot", Req::Script(&position_req(self.keys())))
            .await?;
        let pos = parse_position("snapshot", raw)?;
        let mut snap = Snapshot::default();
        for legacy in [false, true] {
            let mut page = self.scan_page(legacy, 0).await?;
            loop {
                let (next, values) = page;
                // Ask for the next page before taking this one in: the connection's
                // driver receives it on another worker meanwhile.
                let ahead = (next != 0).then(|| {
                    let store = self.clone();
                    tokio::spawn(async move { store.scan_page(legacy, next).await })
                });
                snap.add_page(legacy, values, "snapshot");
                let Some(ahead) = ahead else { break };
                page = ahead
                    .await
                    .map_err(|e| RedisError::data("snapshot", e.to_string()))??;
            }
        }
        self.inner.health.tip(pos.last);
        Ok((snap, pos.last))
    }

    async fn scan_page(&self, legacy: bool, cursor: u64) -> Result<Page, RedisError> {
        let cmd = snapshot::scan_cmd(self.keys(), legacy, cursor);
        self.run("snapshot", Req::Cmd(&cmd)).await
    }

    /// The id of the newest stream entry (`StreamId::ZERO` when there is none).
    pub async fn stream_position(&self) -> Result<StreamId, RedisError> {
        let raw = self
            .run("stream position", Req::Script(&position_req(self.keys())))
            .await?;
        Ok(parse_position("stream position", raw)?.last)
    }

    /// Forgets revocations older than `horizon_us` (no token issued before it can still
    /// be live): snapshot entries whose `not_before_us` is older, except scope `all`, and
    /// stream entries added before it (`XTRIM MINID`).
    pub async fn prune(&self, horizon_us: Micros) -> Result<PruneStats, RedisError> {
        let mut stats = PruneStats {
            hash_removed: self.prune_buckets(horizon_us).await?,
            ..Default::default()
        };
        stats.hash_removed += self.prune_legacy(horizon_us).await?;
        let mut trim = TRIM.prepare_invoke();
        trim.key(&self.keys().stream)
            .key(&self.keys().trimmed)
            .arg(horizon_us.max(0) / 1000);
        stats.stream_trimmed = self.run("prune", Req::Script(&trim)).await?;
        Ok(stats)
    }

    async fn prune_buckets(&self, horizon_us: Micros) -> Result<u64, RedisError> {
        let mut removed = 0;
        let mut cursor = 0;
        loop {
            let (next, values) = self.scan_page(false, cursor).await?;
            for (bucket, value) in values {
                let Some((kept, dropped)) = snapshot::pruned(&value, horizon_us) else {
                    continue;
                };
                if dropped == 0 {
                    continue;
                }
                let mut inv = PRUNE_BUCKET.prepare_invoke();
                inv.key(&self.keys().revsnap)
                    .arg(bucket)
                    .arg(value)
                    .arg(kept);
                let written: u64 = self.run("prune", Req::Script(&inv)).await?;
                removed += written * dropped;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn prune_legacy(&self, horizon_us: Micros) -> Result<u64, RedisError> {
        let mut removed = 0;
        let mut cursor = 0;
        loop {
            let (next, values) = self.scan_page(true, cursor).await?;
            let old = old_fields(values, horizon_us);
            if !old.is_empty() {
                let mut inv = PRUNE_LEGACY.prepare_invoke();
                inv.key(&self.keys().revset).arg(horizon_us);
                for f in &old {
                    inv.arg(f);
                }
                let n: u64 = self.run("prune", Req::Script(&inv)).await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

/// Fields of a legacy page whose record may be pruned (checked again by `PRUNE_LEGACY`).
fn old_fields(values: Vec<(Vec<u8>, Vec<u8>)>, horizon_us: Micros) -> Vec<Vec<u8>> {
    values
        .into_iter()
        .filter(|(_, json)| {
            serde_json::from_slice::<RevocationRecord>(json)
                .is_ok_and(|r| r.scope != Scope::All && r.not_before_us < horizon_us)
        })
        .map(|(field, _)| field)
        .collect()
}
