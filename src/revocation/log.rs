//! Append-only durable log of [`RevocationRecord`]s, on [`crate::store::RecordLog`].
//!
//! Format: one record per line, `<crc32 of json as 8 lowercase hex> <json>\n`. The CRC
//! lets replay tell a torn or bit-rotted record from a good one, so a crash mid-write
//! never stops the proxy from starting.

use crate::revocation::RevocationRecord;
use crate::store::{Framing, RecordLog, StoreError, Sync};
use std::path::Path;

/// Errors from the revocation log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("revocation log: {0}")]
    Store(#[from] StoreError),
    #[error("revocation log: encoding record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Outcome of [`RevocationLog::compact`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactStats {
    pub kept: usize,
    pub dropped: usize,
}

/// Handle to an open revocation log. Cheap to share behind an `Arc`; all methods block
/// on file I/O, so call them from `spawn_blocking`.
#[derive(Debug)]
pub struct RevocationLog {
    log: RecordLog,
}

const FRAMING: Framing = Framing::CheckedLines;

/// Decodes the records, skipping (with a warning) any that is not a revocation.
fn decode(path: &Path, payloads: Vec<Vec<u8>>) -> Vec<RevocationRecord> {
    payloads
        .iter()
        .filter_map(|p| match serde_json::from_slice(p) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "revocation log: skipping an unreadable record");
                None
            }
        })
        .collect()
}

impl RevocationLog {
    /// Opens (creating if needed) the log and replays every valid record in order.
    /// Damaged trailing bytes are truncated so later appends start on a clean line.
    pub fn open(path: &Path) -> Result<(RevocationLog, Vec<RevocationRecord>), LogError> {
        let (log, payloads) = RecordLog::open(path, FRAMING)?;
        let records = decode(path, payloads);
        tracing::debug!(path = %path.display(), records = records.len(), "revocation log replayed");
        Ok((RevocationLog { log }, records))
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        self.log.path()
    }

    /// Appends `recs` in a single write and returns only once they are durable.
    pub fn append(&self, recs: &[RevocationRecord]) -> Result<(), LogError> {
        let payloads = recs
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.log.append(&payloads, Sync::Durable)?)
    }

    /// Current size of the log in bytes (for metrics).
    pub fn len_bytes(&self) -> Result<u64, LogError> {
        Ok(self.log.len_bytes())
    }

    /// Rewrites the log keeping only records for which `keep` returns true. Re-reads
    /// the file under the append lock, so records appended concurrently are never lost.
    pub fn compact(
        &self,
        keep: impl Fn(&RevocationRecord) -> bool,
    ) -> Result<CompactStats, LogError> {
        let path = self.log.path().to_path_buf();
        let stats = self.log.rewrite(|payloads| {
            payloads
                .into_iter()
                .filter(|p| serde_json::from_slice::<RevocationRecord>(p).is_ok_and(|r| keep(&r)))
                .collect()
        })?;
        let out = CompactStats {
            kept: stats.records_after,
            dropped: stats.records_before - stats.records_after,
        };
        tracing::info!(
            path = %path.display(), kept = out.kept, dropped = out.dropped,
            bytes_before = stats.bytes_before, bytes_after = stats.bytes_after,
            "revocation log compacted"
        );
        Ok(out)
    }
}

/// Every valid record in the log at `path`, read-only (for listing).
pub fn read_all(path: &Path) -> Result<Vec<RevocationRecord>, LogError> {
    Ok(decode(path, RecordLog::read_all(path, FRAMING)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Scope;
    use std::fs::{self, File, OpenOptions};
    use std::path::PathBuf;

    fn rec(i: usize) -> RevocationRecord {
        RevocationRecord {
            id: format!("rev-{i}"),
            scope: if i.is_multiple_of(2) {
                Scope::User
            } else {
                Scope::Session
            },
            target: format!("target-{i}"),
            not_before_us: 1_700_000_000_000_000 + i as i64,
            reason: "test \"quoted\"\nnewline".to_owned(),
            actor: "admin@example.com".to_owned(),
            node: "node-a".to_owned(),
            external_id: None,
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/revocations.log");
        (dir, path)
    }

    #[test]
    fn round_trip() {
        let (_d, path) = setup();
        let (log, recs) = RevocationLog::open(&path).unwrap();
        assert!(recs.is_empty());
        log.append(&[rec(0), rec(1)]).unwrap();
        log.append(&[rec(2)]).unwrap();
        log.append(&[]).unwrap();
        drop(log);
        let (_log, recs) = RevocationLog::open(&path).unwrap();
        assert_eq!(recs, vec![rec(0), rec(1), rec(2)]);
        // One line per record, crc prefix format.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        let first = text.lines().next().unwrap();
        assert_eq!(first.as_bytes()[8], b' ');
        assert!(
            first[..8]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn empty_file() {
        let (_d, path) = setup();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        File::create(&path).unwrap();
        let (log, recs) = RevocationLog::open(&path).unwrap();
        assert!(recs.is_empty());
        assert_eq!(log.len_bytes().unwrap(), 0);
    }

    #[test]
    fn torn_last_line_skipped_and_truncated() {
        let (_d, path) = setup();
        let (log, _) = RevocationLog::open(&path).unwrap();
        log.append(&[rec(0), rec(1)]).unwrap();
        let good_len = log.len_bytes().unwrap();
        log.append(&[rec(2)]).unwrap();
        drop(log);
        // Cut the last record in half.
        let full = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(good_len + (full - good_len) / 2).unwrap();
        drop(f);

        let (log, recs) = RevocationLog::open(&path).unwrap();
        assert_eq!(recs, vec![rec(0), rec(1)]);
        assert_eq!(log.len_bytes().unwrap(), good_len);
        log.append(&[rec(3)]).unwrap();
        drop(log);
        let (_log, recs) = RevocationLog::open(&path).unwrap();
        assert_eq!(recs, vec![rec(0), rec(1), rec(3)]);
    }

    #[test]
    fn flipped_byte_in_middle_skipped() {
        let (_d, path) = setup();
        let (log, _) = RevocationLog::open(&path).unwrap();
        log.append(&[rec(0), rec(1), rec(2)]).unwrap();
        drop(log);
        let mut data = fs::read(&path).unwrap();
        let first_nl = data.iter().position(|&b| b == b'\n').unwrap();
        // Flip a byte inside the JSON of record 1.
        data[first_nl + 20] ^= 0x01;
        fs::write(&path, &data).unwrap();

        let (log, recs) = RevocationLog::open(&path).unwrap();
        assert_eq!(recs, vec![rec(0), rec(2)]);
        // Middle damage is not truncated away.
        assert_eq!(log.len_bytes().unwrap(), data.len() as u64);
    }

    #[test]
    fn corrupt_complete_last_line_truncated() {
        let (_d, path) = setup();
        let (log, _) = RevocationLog::open(&path).unwrap();
        log.append(&[rec(0), rec(1)]).unwrap();
        drop(log);
        let mut data = fs::read(&path).unwrap();
        let good_len = data.len();
        data.extend_from_slice(b"00000000 {\"not\":\"valid\"}\n");
        fs::write(&path, &data).unwrap();
        let (log, recs) = RevocationLog::open(&path).unwrap();
        assert_eq!(recs, vec![rec(0), rec(1)]);
        assert_eq!(log.len_bytes().unwrap(), good_len as u64);
    }

    #[test]
    fn compaction_keeps_live_and_later_appends_survive() {
        let (_d, path) = setup();
        let (log, _) = RevocationLog::open(&path).unwrap();
        let recs: Vec<_> = (0..10).map(rec).collect();
        log.append(&recs).unwrap();
        let before = log.len_bytes().unwrap();
        let stats = log.compact(|r| r.scope == Scope::User).unwrap();
        assert_eq!(
            stats,
            CompactStats {
                kept: 5,
                dropped: 5
            }
        );
        assert!(log.len_bytes().unwrap() < before);
        assert!(!path.with_extension("log.tmp").exists());
        log.append(&[rec(11)]).unwrap();
        drop(log);

        let (_log, got) = RevocationLog::open(&path).unwrap();
        let mut want: Vec<_> = (0..10).step_by(2).map(rec).collect();
        want.push(rec(11));
        assert_eq!(got, want);
    }

    #[test]
    fn compaction_rereads_file() {
        // A second handle writes behind the first one's back; compaction must
        // still see it because it re-reads under the lock.
        let (_d, path) = setup();
        let (log, _) = RevocationLog::open(&path).unwrap();
        log.append(&[rec(0)]).unwrap();
        let (other, _) = RevocationLog::open(&path).unwrap();
        other.append(&[rec(2)]).unwrap();
        let stats = log.compact(|_| true).unwrap();
        assert_eq!(
            stats,
            CompactStats {
                kept: 2,
                dropped: 0
            }
        );
        drop(log);
        let (_l, got) = RevocationLog::open(&path).unwrap();
        assert_eq!(got, vec![rec(0), rec(2)]);
    }

    #[test]
    fn concurrent_appends_and_compaction() {
        let (_d, path) = setup();
        let (log, _) = RevocationLog::open(&path).unwrap();
        let log = std::sync::Arc::new(log);
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.append(&[rec(t * 1000 + i)]).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..5 {
            log.compact(|_| true).unwrap();
        }
        for w in writers {
            w.join().unwrap();
        }
        drop(log);
        let (_l, got) = RevocationLog::open(&path).unwrap();
        assert_eq!(got.len(), 200);
    }

    #[test]
    fn replay_10k() {
        let (_d, path) = setup();
        let (log, _) = RevocationLog::open(&path).unwrap();
        let recs: Vec<_> = (0..10_000).map(rec).collect();
        for chunk in recs.chunks(1000) {
            log.append(chunk).unwrap();
        }
        drop(log);
        let (_log, got) = RevocationLog::open(&path).unwrap();
        assert_eq!(got, recs);
    }
}
