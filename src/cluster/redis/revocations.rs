//! Revocations in Redis: a Stream every node tails (`<p>:revocations`, one entry per
//! published record) and a snapshot hash (`<p>:revset`, the record in force per scope and
//! target) that a starting node loads instead of replaying the whole stream.
//!
//! Both are written by one Lua script, so a record is in both or in neither, and the
//! hash keeps the record with the newer `not_before_us` whatever order nodes publish in.
//!
//! The hash's values are `<not_before_us>:<entry>`, the entry in the peers' binary wire
//! form (`crate::revocation::wire`): a starting node reads a million of them in well under a
//! second, where JSON records took seconds to decode; the decimal prefix is what the
//! scripts compare. Values written as JSON by earlier versions are still read.

use super::Req;
use super::keys::{Keys, revset_field};
use super::{RedisError, RedisStore, StreamId};
use crate::clock::Micros;
use crate::revocation::wire;
use crate::revocation::{RevocationRecord, Scope};
use ::redis::{Cmd, Script, ScriptInvocation};
use std::sync::LazyLock;

/// The stream entry's field holding the record's JSON.
pub(super) const FIELD: &str = "r";
/// Hash entries read per `HSCAN` page.
const PAGE: usize = 5_000;

/// The `not_before_us` of a snapshot value in Lua: the decimal prefix, or the field of
/// a JSON record (written by earlier versions); nil when neither.
const NB_OF: &str = r#"
local function nb_of(v)
  if string.sub(v, 1, 1) == '{' then
    local ok, rec = pcall(cjson.decode, v)
    if ok and type(rec) == 'table' then return tonumber(rec.not_before_us) end
    return nil
  end
  return tonumber(string.match(v, '^(-?%d+):'))
end
"#;

/// KEYS: stream, revset. ARGV: (field, not_before_us, json, snapshot value) per record.
/// Appends every record to the stream; the hash keeps the newer `not_before_us`.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{NB_OF}
local ids = {{}}
for i = 1, #ARGV, 4 do
  local field, nb, json, value = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'r', json)
  local old = redis.call('HGET', KEYS[2], field)
  local old_nb = old and nb_of(old)
  if not (old_nb and old_nb >= nb) then redis.call('HSET', KEYS[2], field, value) end
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

/// KEYS: revset. ARGV: horizon, fields... Deletes each field whose record (read again
/// here, so a newer record written since the scan is kept) is older than the horizon
/// and not of scope `all` (fields are `<scope>:<target>`).
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{NB_OF}
local horizon, n = tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local nb = old and nb_of(old)
  if nb and nb < horizon and string.sub(ARGV[i], 1, 4) ~= 'all:' then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"#
    ))
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

/// One `HSCAN` page of the snapshot hash; answers `(next cursor, [(field, value)])`.
pub(super) fn scan_cmd(revset: &str, cursor: u64) -> Cmd {
    let mut cmd = ::redis::cmd("HSCAN");
    cmd.arg(revset).arg(cursor).arg("COUNT").arg(PAGE);
    cmd
}

pub(super) type Page = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// A record's value in the snapshot hash: `<not_before_us>:<wire entry>`.
pub(super) fn encode_value(rec: &RevocationRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + 16 + rec.target.len() + rec.id.len() + 64);
    v.extend_from_slice(rec.not_before_us.to_string().as_bytes());
    v.push(b':');
    wire::put_entry(&mut v, rec.scope, &rec.target, rec.not_before_us, Some(rec));
    v
}

/// The record of a snapshot value ([`encode_value`]'s form, or JSON).
pub(super) fn decode_value(v: &[u8]) -> Result<RevocationRecord, String> {
    if v.first() == Some(&b'{') {
        return serde_json::from_slice(v).map_err(|e| e.to_string());
    }
    let colon = v
        .iter()
        .position(|&b| b == b':')
        .ok_or("no instant prefix")?;
    let mut entries = wire::Entries::new(&v[colon + 1..]);
    let entry = entries
        .next()
        .ok_or("no entry")?
        .map_err(|e| e.to_string())?;
    if entries.next().is_some() {
        return Err("more than one entry".into());
    }
    entry
        .record()
        .ok_or_else(|| "an entry without its record".into())
}

/// Appends the wire entries of snapshot values to `out` as they are (no record is built:
/// a starting node reads a million), re-encoding JSON ones; skips (with a warning)
/// values that are not a record. Returns how many it appended.
pub(super) fn append_entries(
    values: Vec<(Vec<u8>, Vec<u8>)>,
    out: &mut Vec<u8>,
    what: &str,
) -> usize {
    let mut n = 0;
    for (field, value) in values {
        match entry_bytes(&value) {
            Ok(Some(raw)) => out.extend_from_slice(raw),
            Ok(None) => match decode_value(&value) {
                Ok(r) => wire::put_entry(out, r.scope, &r.target, r.not_before_us, Some(&r)),
                Err(e) => {
                    warn_undecodable(what, &field, &e);
                    continue;
                }
            },
            Err(e) => {
                warn_undecodable(what, &field, &e);
                continue;
            }
        }
        n += 1;
    }
    n
}

/// The one wire entry of a value in [`encode_value`]'s form, checked (`None` for JSON).
fn entry_bytes(v: &[u8]) -> Result<Option<&[u8]>, String> {
    if v.first() == Some(&b'{') {
        return Ok(None);
    }
    let colon = v
        .iter()
        .position(|&b| b == b':')
        .ok_or("no instant prefix")?;
    let raw = &v[colon + 1..];
    let mut entries = wire::Entries::new(raw);
    match (entries.next(), entries.next()) {
        (Some(Ok(e)), None) if e.meta.is_some() => Ok(Some(raw)),
        (Some(Err(e)), _) => Err(e.to_string()),
        _ => Err("not one entry with its record".into()),
    }
}

fn warn_undecodable(what: &str, field: &[u8], error: &str) {
    let field = String::from_utf8_lossy(field);
    tracing::warn!(what, %field, error, "redis: skipping undecodable revocation");
}

/// Decodes records, skipping (with a warning) values that are not a record.
pub(super) fn decode_values(
    values: Vec<(Vec<u8>, Vec<u8>)>,
    out: &mut Vec<RevocationRecord>,
    what: &str,
) {
    out.reserve(values.len());
    for (field, value) in values {
        match decode_value(&value) {
            Ok(rec) => out.push(rec),
            Err(e) => warn_undecodable(what, &field, &e),
        }
    }
}

/// The revocations in force in Redis: `count` wire entries, each with its record.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<u8>,
    pub count: usize,
}

impl Snapshot {
    /// The records, decoded (for inspection and tests; nodes apply the entries as they are).
    pub fn records(&self) -> Vec<RevocationRecord> {
        wire::Entries::new(&self.entries)
            .filter_map(|e| e.ok()?.record())
            .collect()
    }
}

/// What [`RedisStore::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub hash_removed: u64,
    pub stream_trimmed: u64,
}

impl RedisStore {
    /// Hands `recs` to Redis in one atomic step: each is appended to the stream and the
    /// snapshot hash keeps, per scope and target, the record with the newer
    /// `not_before_us`. Returns the stream ids given to the records, in order. Publishing
    /// the same record twice is harmless (consumers apply records idempotently).
    pub async fn publish(&self, recs: &[RevocationRecord]) -> Result<Vec<StreamId>, RedisError> {
        if recs.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = PUBLISH.prepare_invoke();
        inv.key(&self.keys().stream).key(&self.keys().revset);
        for rec in recs {
            inv.arg(revset_field(rec.scope, &rec.target))
                .arg(rec.not_before_us)
                .arg(serde_json::to_string(rec)?)
                .arg(encode_value(rec));
        }
        let ids: Vec<String> = self.run("publish", Req::Script(&inv)).await?;
        let ids = ids
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<StreamId>, _>>()
            .map_err(|e| RedisError::data("publish", e.to_string()))?;
        if let Some(last) = ids.last() {
            self.inner.health.tip(*last);
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
        let mut page = self.scan_page(0).await?;
        loop {
            let (next, values) = page;
            // Ask for the next page before decoding this one: the connection's driver
            // receives it on another worker meanwhile (a 1M-record snapshot is CPU-bound).
            let ahead = (next != 0).then(|| {
                let store = self.clone();
                tokio::spawn(async move { store.scan_page(next).await })
            });
            snap.count += append_entries(values, &mut snap.entries, "snapshot");
            let Some(ahead) = ahead else { break };
            page = ahead
                .await
                .map_err(|e| RedisError::data("snapshot", e.to_string()))??;
        }
        self.inner.health.tip(pos.last);
        Ok((snap, pos.last))
    }

    async fn scan_page(&self, cursor: u64) -> Result<Page, RedisError> {
        let cmd = scan_cmd(&self.keys().revset, cursor);
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
        let revset = &self.keys().revset;
        let mut stats = PruneStats::default();
        let mut cursor = 0;
        loop {
            let cmd = scan_cmd(revset, cursor);
            let (next, values): Page = self.run("prune", Req::Cmd(&cmd)).await?;
            let old = old_fields(values, horizon_us);
            if !old.is_empty() {
                let mut inv = PRUNE.prepare_invoke();
                inv.key(revset).arg(horizon_us);
                for f in &old {
                    inv.arg(f);
                }
                let n: u64 = self.run("prune", Req::Script(&inv)).await?;
                stats.hash_removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut trim = TRIM.prepare_invoke();
        trim.key(&self.keys().stream)
            .key(&self.keys().trimmed)
            .arg(horizon_us.max(0) / 1000);
        stats.stream_trimmed = self.run("prune", Req::Script(&trim)).await?;
        Ok(stats)
    }
}

/// Fields of the page whose record may be pruned (checked again atomically by `PRUNE`).
fn old_fields(values: Vec<(Vec<u8>, Vec<u8>)>, horizon_us: Micros) -> Vec<Vec<u8>> {
    values
        .into_iter()
        .filter(|(_, value)| {
            decode_value(value).is_ok_and(|r| r.scope != Scope::All && r.not_before_us < horizon_us)
        })
        .map(|(field, _)| field)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(external_id: Option<&str>) -> RevocationRecord {
        RevocationRecord {
            id: "r-1".into(),
            scope: Scope::User,
            target: "ann@example.com".into(),
            not_before_us: 1_760_000_000_123_456,
            reason: "left: see ticket 12".into(),
            actor: "scim:okta".into(),
            node: "node-2".into(),
            external_id: external_id.map(str::to_string),
        }
    }

    #[test]
    fn snapshot_values_round_trip_and_start_with_their_instant() {
        for r in [rec(None), rec(Some("00u1ext"))] {
            let v = encode_value(&r);
            assert!(v.starts_with(b"1760000000123456:"));
            assert_eq!(decode_value(&v).unwrap(), r);
        }
    }

    #[test]
    fn json_values_of_earlier_versions_are_read() {
        let r = rec(None);
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode_value(&json).unwrap(), r);
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let good = encode_value(&rec(None));
        for bad in [
            &b""[..],
            b"12345",
            b"12:",
            b"{not json",
            &good[..good.len() - 3],
            &[&good[..], &good[17..]].concat(),
        ] {
            assert!(decode_value(bad).is_err(), "{bad:?}");
        }
    }
}
