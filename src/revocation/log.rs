//! Append-only durable log of [`RevocationRecord`]s.
//!
//! Format: one record per line, `<crc32 of json as 8 lowercase hex> <json>\n`.
//! The CRC lets replay tell a torn or bit-rotted record from a good one, so a
//! crash mid-write never stops the proxy from starting.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::revocation::RevocationRecord;

/// Errors from the revocation log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("revocation log: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("revocation log: encoding record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Outcome of [`RevocationLog::compact`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactStats {
    pub kept: usize,
    pub dropped: usize,
}

/// Handle to an open revocation log. Cheap to share behind an `Arc`; all
/// methods block on file I/O, so call them from `spawn_blocking`.
#[derive(Debug)]
pub struct RevocationLog {
    path: PathBuf,
    file: Mutex<File>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens for read + append so every write lands at the end, even after a
/// truncation or a handle swap.
fn open_append(path: &Path, create_new: bool) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).append(true);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true);
    }
    opts.open(path)
}

fn encode_into(buf: &mut Vec<u8>, rec: &RevocationRecord) -> Result<(), LogError> {
    let json = serde_json::to_vec(rec)?;
    let crc = crc32fast::hash(&json);
    buf.extend_from_slice(format!("{crc:08x} ").as_bytes());
    buf.extend_from_slice(&json);
    buf.push(b'\n');
    Ok(())
}

/// Decodes one line (without its newline); `Err` carries why it was rejected.
fn decode_line(line: &[u8]) -> Result<RevocationRecord, String> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("malformed line".to_owned());
    }
    let (crc_hex, json) = (&line[..8], &line[9..]);
    let actual = format!("{:08x}", crc32fast::hash(json));
    if crc_hex != actual.as_bytes() {
        return Err(format!(
            "crc mismatch (stored {}, computed {actual})",
            String::from_utf8_lossy(crc_hex)
        ));
    }
    serde_json::from_slice(json).map_err(|e| format!("bad json: {e}"))
}

struct Replay {
    records: Vec<RevocationRecord>,
    /// Byte offset just past the last good record.
    good_end: usize,
}

/// Parses the whole log, skipping (with a warning) anything that does not
/// decode. Never fails: a damaged log must not block startup.
fn replay(data: &[u8], path: &Path) -> Replay {
    let mut records = Vec::new();
    let mut good_end = 0;
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            tracing::warn!(
                path = %path.display(),
                offset = pos,
                bytes = rest.len(),
                "revocation log: skipping torn final record (no trailing newline)"
            );
            break;
        };
        match decode_line(&rest[..nl]) {
            Ok(rec) => {
                records.push(rec);
                good_end = pos + nl + 1;
            }
            Err(why) => tracing::warn!(
                path = %path.display(),
                offset = pos,
                reason = %why,
                "revocation log: skipping corrupt record"
            ),
        }
        pos += nl + 1;
    }
    Replay { records, good_end }
}

impl RevocationLog {
    /// Opens (creating if needed) the log and replays every valid record in
    /// order. Damaged trailing bytes are truncated so later appends start on
    /// a clean line.
    pub fn open(path: &Path) -> Result<(RevocationLog, Vec<RevocationRecord>), LogError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err("create dir", parent))?;
        }
        let mut file = open_append(path, false).map_err(io_err("open", path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err("read", path))?;

        let Replay { records, good_end } = replay(&data, path);
        if good_end < data.len() {
            // Only trailing damage is cut; corrupt records in the middle stay
            // on disk so the good records after them are not lost.
            tracing::warn!(
                path = %path.display(),
                from = data.len(),
                to = good_end,
                "revocation log: truncating damaged tail"
            );
            file.set_len(good_end as u64)
                .map_err(io_err("truncate", path))?;
            file.sync_data().map_err(io_err("sync", path))?;
        }
        tracing::debug!(path = %path.display(), records = records.len(), "revocation log replayed");
        let log = RevocationLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        };
        Ok((log, records))
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        // A panic while holding the lock (e.g. in a `compact` predicate) leaves
        // the file consistent, and refusing revocations forever would be worse.
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `recs` in a single write and returns only once they are durable.
    pub fn append(&self, recs: &[RevocationRecord]) -> Result<(), LogError> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(recs.len() * 256);
        for rec in recs {
            encode_into(&mut buf, rec)?;
        }
        let mut file = self.lock();
        let before = file.metadata().map_err(io_err("stat", &self.path))?.len();
        let res = file.write_all(&buf).and_then(|()| file.sync_data());
        if let Err(source) = res {
            // A partial write would glue onto the next record and corrupt it;
            // roll back so the log stays line-aligned.
            if let Err(e) = file.set_len(before) {
                tracing::error!(path = %self.path.display(), error = %e, "revocation log: rollback after failed append failed");
            }
            return Err(LogError::Io {
                op: "append",
                path: self.path.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Current size of the log in bytes (for metrics).
    pub fn len_bytes(&self) -> Result<u64, LogError> {
        let file = self.lock();
        Ok(file.metadata().map_err(io_err("stat", &self.path))?.len())
    }

    /// Rewrites the log keeping only records for which `keep` returns true.
    ///
    /// Holds the lock for the whole operation and re-reads the file under it,
    /// so records appended concurrently are never lost.
    pub fn compact(
        &self,
        keep: impl Fn(&RevocationRecord) -> bool,
    ) -> Result<CompactStats, LogError> {
        let mut file = self.lock();

        let mut data = Vec::new();
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", &self.path))?;
        file.read_to_end(&mut data)
            .map_err(io_err("read", &self.path))?;
        let records = replay(&data, &self.path).records;

        let mut buf = Vec::with_capacity(data.len());
        let mut stats = CompactStats {
            kept: 0,
            dropped: 0,
        };
        for rec in &records {
            if keep(rec) {
                encode_into(&mut buf, rec)?;
                stats.kept += 1;
            } else {
                stats.dropped += 1;
            }
        }

        let tmp = tmp_path(&self.path);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale", &tmp)(e)),
        }
        let new_file = write_tmp(&tmp, &buf).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename", &tmp)(e));
        }
        // Swap immediately after the rename: the old handle now points at an
        // unlinked inode, and appends to it would be silently lost.
        *file = new_file;
        sync_parent_dir(&self.path)?;

        tracing::info!(
            path = %self.path.display(),
            kept = stats.kept,
            dropped = stats.dropped,
            bytes_before = data.len(),
            bytes_after = buf.len(),
            "revocation log compacted"
        );
        Ok(stats)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn write_tmp(tmp: &Path, buf: &[u8]) -> Result<File, LogError> {
    let mut f = open_append(tmp, true).map_err(io_err("create", tmp))?;
    f.write_all(buf).map_err(io_err("write", tmp))?;
    f.sync_all().map_err(io_err("sync", tmp))?;
    Ok(f)
}

/// Makes the rename itself durable.
fn sync_parent_dir(path: &Path) -> Result<(), LogError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync dir", dir))
}

/// Every valid record in the log at `path`, read-only (for listing).
pub fn read_all(path: &Path) -> Result<Vec<RevocationRecord>, LogError> {
    let data = fs::read(path).map_err(io_err("read", path))?;
    Ok(replay(&data, path).records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Scope;

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
        assert!(!tmp_path(&path).exists());
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
