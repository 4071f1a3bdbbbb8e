//! The revocations in force, in Redis, for nodes that start: hash `<p>:revsnap`, one
//! field per bucket of keys (65,536 buckets by a CRC-32 of scope and target), each value a
//! run of entries in the peers' binary wire form (`revocation::wire`), one per scope and
//! target, the newest instant kept.
//!
//! Why buckets and not one field per revocation: Redis takes over a second just to hand
//! out a million small hash fields (measured: `HSCAN` or `HGETALL` of 1,000,000 fields,
//! 1.4-1.6 s), where 65,536 values of ~1.6 KB come out in a tenth of that, and the node
//! copies the entries into its journal and set as they are. The cost moves to
//! publishing: the script walks one bucket (about 15 entries at a million revocations) to
//! replace or add the record's entry.
//!
//! Earlier versions kept `<p>:revset`, one JSON record per field: a node still reads it
//! (and prunes it) when it is there.

use super::keys::Keys;
use crate::clock::Micros;
use crate::revocation::{RevocationRecord, Scope, wire};
use ::redis::Cmd;

/// Lua: `merge(blob, entry)` gives `blob` with `entry` added, or replacing the entry of
/// the same scope and target when that one is older; nil when it is at least as new.
/// Entries are `[scope u8][len u16 LE][target][not before i64 LE][meta len u16 LE][meta]`.
pub(super) const MERGE_LUA: &str = r#"
local function u16(s, p) return string.byte(s, p) + 256 * string.byte(s, p + 1) end
local function i64(s, p)
  local v = 0
  for k = 7, 0, -1 do v = v * 256 + string.byte(s, p + k) end
  return v
end
local function merge(blob, entry)
  local klen = 3 + u16(entry, 2)
  local key = string.sub(entry, 1, klen)
  local nb = i64(entry, klen + 1)
  local pos, n = 1, #blob
  while pos <= n do
    local nbp = pos + 3 + u16(blob, pos + 1)
    local stop = nbp + 9 + u16(blob, nbp + 8)
    if string.sub(blob, pos, nbp - 1) == key then
      if i64(blob, nbp) >= nb then return nil end
      return string.sub(blob, 1, pos - 1) .. entry .. string.sub(blob, stop + 1)
    end
    pos = stop + 1
  end
  return blob .. entry
end
"#;

/// Buckets of the snapshot hash.
const BUCKETS: u32 = 1 << 16;
/// Bucket values read per `HSCAN` page (about 1.6 KB each at a million revocations).
const PAGE: usize = 1_024;
/// Legacy records read per `HSCAN` page.
const LEGACY_PAGE: usize = 5_000;

/// The snapshot field of a record, and its entry.
pub(super) fn field_and_entry(rec: &RevocationRecord) -> (String, Vec<u8>) {
    let mut entry = Vec::with_capacity(48 + rec.target.len() + rec.id.len() + rec.reason.len());
    wire::put_entry(
        &mut entry,
        rec.scope,
        &rec.target,
        rec.not_before_us,
        Some(rec),
    );
    (bucket_of(rec.scope, &rec.target).to_string(), entry)
}

/// The bucket of a scope and target: depends on them only.
fn bucket_of(scope: Scope, target: &str) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[scope as u8]);
    h.update(target.as_bytes());
    h.finalize() % BUCKETS
}

/// One `HSCAN` page of the bucket hash (or, `legacy`, of the earlier per-record hash).
pub(super) fn scan_cmd(keys: &Keys, legacy: bool, cursor: u64) -> Cmd {
    let (key, count) = if legacy {
        (&keys.revset, LEGACY_PAGE)
    } else {
        (&keys.revsnap, PAGE)
    };
    let mut cmd = ::redis::cmd("HSCAN");
    cmd.arg(key).arg(cursor).arg("COUNT").arg(count);
    cmd
}

pub(super) type Page = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// The revocations in force in Redis: `count` wire entries, each with its record.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<u8>,
    pub count: usize,
}

impl Snapshot {
    /// Adds one page of bucket values (or of legacy JSON records), skipping with a
    /// warning what does not decode.
    pub(super) fn add_page(&mut self, legacy: bool, values: Vec<(Vec<u8>, Vec<u8>)>, what: &str) {
        for (field, value) in values {
            let added = if legacy {
                serde_json::from_slice::<RevocationRecord>(&value)
                    .map(|r| {
                        wire::put_entry(
                            &mut self.entries,
                            r.scope,
                            &r.target,
                            r.not_before_us,
                            Some(&r),
                        );
                        1
                    })
                    .map_err(|e| e.to_string())
            } else {
                checked_count(&value).inspect(|_| self.entries.extend_from_slice(&value))
            };
            match added {
                Ok(n) => self.count += n,
                Err(error) => {
                    let field = String::from_utf8_lossy(&field);
                    tracing::error!(what, %field, error, "redis: skipping an undecodable snapshot value");
                }
            }
        }
    }

    /// The records, decoded (for the tail's resync, inspection and tests; a starting
    /// node applies the entries as they are).
    pub fn records(&self) -> Vec<RevocationRecord> {
        wire::Entries::new(&self.entries)
            .filter_map(|e| e.ok()?.record())
            .collect()
    }
}

/// How many entries a bucket value holds, when every one decodes with its record.
fn checked_count(value: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    for e in wire::Entries::new(value) {
        let e = e.map_err(|e| e.to_string())?;
        if e.meta.is_none() {
            return Err("an entry without its record".into());
        }
        n += 1;
    }
    Ok(n)
}

/// A bucket value without the entries older than `horizon` (scope `all` is kept), and
/// how many it dropped; `None` when it does not decode (left as it is).
pub(super) fn pruned(value: &[u8], horizon: Micros) -> Option<(Vec<u8>, u64)> {
    let mut kept = Vec::with_capacity(value.len());
    let mut dropped = 0;
    let mut it = wire::Entries::new(value);
    while let Some(e) = it.next_raw() {
        let (e, raw) = e.ok()?;
        if e.scope != Scope::All && e.nb < horizon {
            dropped += 1;
        } else {
            kept.extend_from_slice(raw);
        }
    }
    Some((kept, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scope: Scope, target: &str, nb: Micros) -> RevocationRecord {
        RevocationRecord {
            id: format!("r-{nb}"),
            scope,
            target: target.into(),
            not_before_us: nb,
            reason: "left".into(),
            actor: "scim:okta".into(),
            node: "node-2".into(),
            external_id: Some("evt-1".into()),
        }
    }

    #[test]
    fn pages_of_buckets_and_of_legacy_records_become_entries() {
        let (a, b) = (rec(Scope::User, "a@x.com", 10), rec(Scope::All, "", 20));
        let mut bucket = field_and_entry(&a).1;
        bucket.extend(field_and_entry(&b).1);
        let legacy = serde_json::to_vec(&rec(Scope::Session, "s1", 30)).unwrap();
        let mut snap = Snapshot::default();
        snap.add_page(false, vec![(b"7".to_vec(), bucket.clone())], "test");
        snap.add_page(true, vec![(b"session:s1".to_vec(), legacy)], "test");
        // Damaged values are skipped, not applied in part.
        snap.add_page(
            false,
            vec![(b"8".to_vec(), bucket[..bucket.len() - 2].to_vec())],
            "test",
        );
        snap.add_page(true, vec![(b"x".to_vec(), b"{oops".to_vec())], "test");
        assert_eq!(snap.count, 3);
        assert_eq!(snap.records(), vec![a, b, rec(Scope::Session, "s1", 30)]);
    }

    #[test]
    fn pruning_keeps_recent_entries_and_scope_all() {
        let mut bucket = Vec::new();
        for r in [
            rec(Scope::User, "old@x.com", 5),
            rec(Scope::All, "", 1),
            rec(Scope::Group, "eng", 50),
        ] {
            bucket.extend(field_and_entry(&r).1);
        }
        let (kept, dropped) = pruned(&bucket, 10).unwrap();
        assert_eq!(dropped, 1);
        let mut snap = Snapshot::default();
        snap.add_page(false, vec![(b"1".to_vec(), kept)], "test");
        let targets: Vec<_> = snap.records().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, vec!["", "eng"]);
        assert!(pruned(&bucket[..3], 10).is_none());
    }
}
