//! The durable append-only record log every journal of the gateway is built on: the
//! revocation log, the sync journal, the session journal and the audit log.
//!
//! One file of framed records. What it does for all of them:
//! - **append**: one `write` for a batch, then `fdatasync` when asked; a failed write is
//!   cut off again, so the file never holds half a record that the next one would glue
//!   onto;
//! - **replay** at open: every good record in order; a torn tail (a crash mid-write) and
//!   trailing damage are truncated, so later appends start on a clean boundary;
//! - **compaction** by rewrite-and-rename under the append lock: the new contents are
//!   written to a temporary file, fsynced, renamed over the log, the folder fsynced, and
//!   the append handle swapped, so nothing appended meanwhile is lost.
//!
//! The framing is the caller's choice (the files keep their formats): plain lines,
//! lines with a CRC prefix, or binary frames for bulk data.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `<payload>\n`: the payload holds no newline (compact JSON). Only a torn last
    /// line is detectable; the caller validates what a line says.
    Lines,
    /// `<crc32 of payload as 8 lowercase hex> <payload>\n`: a damaged line is skipped.
    CheckedLines,
    /// `[magic][payload length u32 LE][crc32 of payload u32 LE][payload]`: for large
    /// binary batches. Replay stops at the first bad frame (its length cannot be
    /// trusted) and cuts the rest.
    Frames(&'static [u8; 4]),
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct StoreError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Whether an append returns only once the batch is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    Durable,
    /// Written, not fsynced: for records that a later sync or rewrite covers.
    Buffered,
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

const FRAME_HEADER: usize = 12;

impl Framing {
    fn encode_into(self, buf: &mut Vec<u8>, payload: &[u8]) {
        match self {
            Framing::Lines => {
                buf.extend_from_slice(payload);
                buf.push(b'\n');
            }
            Framing::CheckedLines => {
                let mut hex = [0u8; 8];
                let crc = crc32fast::hash(payload).to_be_bytes();
                // Infallible: 8 bytes of buffer for 4 bytes of input.
                let _ = hex::encode_to_slice(crc, &mut hex);
                buf.extend_from_slice(&hex);
                buf.push(b' ');
                buf.extend_from_slice(payload);
                buf.push(b'\n');
            }
            Framing::Frames(magic) => {
                buf.extend_from_slice(magic);
                buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
                buf.extend_from_slice(payload);
            }
        }
    }

    /// The next record of `data`: its payload and the bytes it spans.
    fn decode(self, data: &[u8]) -> Decoded<'_> {
        match self {
            Framing::Lines | Framing::CheckedLines => {
                let Some(nl) = memchr::memchr(b'\n', data) else {
                    return Decoded::Torn;
                };
                let line = &data[..nl];
                if self == Framing::Lines {
                    return Decoded::Record(line, nl + 1);
                }
                match checked_payload(line) {
                    Some(p) => Decoded::Record(p, nl + 1),
                    None => Decoded::Corrupt(nl + 1),
                }
            }
            Framing::Frames(magic) => {
                if data.len() < FRAME_HEADER {
                    return Decoded::Torn;
                }
                let len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
                let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
                if &data[..4] != magic {
                    return Decoded::Stop;
                }
                let Some(payload) = data.get(FRAME_HEADER..FRAME_HEADER + len) else {
                    return Decoded::Torn;
                };
                if crc32fast::hash(payload) != crc {
                    return Decoded::Stop;
                }
                Decoded::Record(payload, FRAME_HEADER + len)
            }
        }
    }
}

fn checked_payload(line: &[u8]) -> Option<&[u8]> {
    if line.len() < 9 || line[8] != b' ' {
        return None;
    }
    let mut crc = [0u8; 4];
    hex::decode_to_slice(&line[..8], &mut crc).ok()?;
    let payload = &line[9..];
    (crc32fast::hash(payload) == u32::from_be_bytes(crc)).then_some(payload)
}

enum Decoded<'a> {
    Record(&'a [u8], usize),
    /// A complete record that fails its check: skip it.
    Corrupt(usize),
    /// The record is cut short: the file ends mid-record.
    Torn,
    /// Nothing after this point can be trusted.
    Stop,
}

/// The good records of `data` and the offset just past the last one.
fn replay(data: &[u8], framing: Framing, path: &Path) -> (Vec<Vec<u8>>, usize) {
    let (mut records, mut good_end, mut pos) = (Vec::new(), 0, 0);
    while pos < data.len() {
        match framing.decode(&data[pos..]) {
            Decoded::Record(p, n) => {
                records.push(p.to_vec());
                pos += n;
                good_end = pos;
            }
            Decoded::Corrupt(n) => {
                tracing::warn!(path = %path.display(), offset = pos, "skipping a damaged record");
                pos += n;
            }
            Decoded::Torn | Decoded::Stop => break,
        }
    }
    (records, good_end)
}

/// Opens for read + append, so every write lands at the end whatever was read before.
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

/// Cuts `file` back to `good_end` when bytes after it cannot be used.
fn cut_tail(file: &File, len: u64, good_end: u64, path: &Path) -> Result<(), StoreError> {
    if good_end >= len {
        return Ok(());
    }
    tracing::warn!(path = %path.display(), from = len, to = good_end, "truncating a torn or damaged tail");
    file.set_len(good_end).map_err(io_err("truncate", path))?;
    file.sync_data().map_err(io_err("sync", path))
}

/// An open record log. All methods block on file I/O: call them from blocking threads.
pub struct RecordLog {
    path: PathBuf,
    framing: Framing,
    file: Mutex<File>,
}

impl std::fmt::Debug for RecordLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLog")
            .field("path", &self.path)
            .finish()
    }
}

impl RecordLog {
    /// Opens (creating the file and its folder) and returns every good record.
    pub fn open(path: &Path, framing: Framing) -> Result<(RecordLog, Vec<Vec<u8>>), StoreError> {
        let mut file = create(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err("read", path))?;
        let (records, good_end) = replay(&data, framing, path);
        cut_tail(&file, data.len() as u64, good_end as u64, path)?;
        Ok((Self::with(path, framing, file), records))
    }

    /// Opens a line-framed log without reading it all: returns only its last complete
    /// line (for a hash chain's head), cutting a torn final line.
    pub fn open_last_line(path: &Path) -> Result<(RecordLog, Option<Vec<u8>>), StoreError> {
        let mut file = create(path)?;
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        // One past the last newline: everything after it is a torn line.
        let end = last_newline_before(&mut file, len)
            .map_err(io_err("read", path))?
            .map_or(0, |i| i + 1);
        cut_tail(&file, len, end, path)?;
        let last = if end == 0 {
            None
        } else {
            let start = last_newline_before(&mut file, end - 1)
                .map_err(io_err("read", path))?
                .map_or(0, |i| i + 1);
            let mut line = vec![0u8; (end - 1 - start) as usize];
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut line))
                .map_err(io_err("read", path))?;
            Some(line)
        };
        Ok((Self::with(path, Framing::Lines, file), last))
    }

    fn with(path: &Path, framing: Framing, file: File) -> RecordLog {
        RecordLog {
            path: path.to_path_buf(),
            framing,
            file: Mutex::new(file),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        // A panic while holding the lock leaves the file consistent (appends roll back),
        // and refusing every later write would be worse.
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `payloads` in one write; with `Sync::Durable`, returns once they are on disk.
    pub fn append<P: AsRef<[u8]>>(&self, payloads: &[P], sync: Sync) -> Result<(), StoreError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.as_ref().len() + 16).sum());
        for p in payloads {
            self.framing.encode_into(&mut buf, p.as_ref());
        }
        let mut file = self.lock();
        let before = file.metadata().map_err(io_err("stat", &self.path))?.len();
        let res = file.write_all(&buf).and_then(|()| match sync {
            Sync::Durable => file.sync_data(),
            Sync::Buffered => Ok(()),
        });
        if let Err(source) = res {
            if let Err(e) = file.set_len(before) {
                tracing::error!(path = %self.path.display(), error = %e, "rollback after a failed append failed");
            }
            return Err(io_err("append", &self.path)(source));
        }
        Ok(())
    }

    /// Rewrites the log: `rebuild` gets every record now in the file (re-read under the
    /// append lock) and returns the new contents.
    pub fn rewrite(
        &self,
        rebuild: impl FnOnce(Vec<Vec<u8>>) -> Vec<Vec<u8>>,
    ) -> Result<RewriteStats, StoreError> {
        let mut file = self.lock();
        let mut data = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut data))
            .map_err(io_err("read", &self.path))?;
        let (records, _) = replay(&data, self.framing, &self.path);
        let before = records.len();
        let kept = rebuild(records);
        let mut buf = Vec::with_capacity(data.len());
        for p in &kept {
            self.framing.encode_into(&mut buf, p);
        }
        *file = replace_file(&self.path, &buf)?;
        Ok(RewriteStats {
            records_before: before,
            records_after: kept.len(),
            bytes_before: data.len() as u64,
            bytes_after: buf.len() as u64,
        })
    }

    pub fn len_bytes(&self) -> u64 {
        self.lock().metadata().map_or(0, |m| m.len())
    }

    /// Every good record of the log at `path`, read-only (for listings and tools).
    pub fn read_all(path: &Path, framing: Framing) -> Result<Vec<Vec<u8>>, StoreError> {
        let data = fs::read(path).map_err(io_err("read", path))?;
        Ok(replay(&data, framing, path).0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RewriteStats {
    pub records_before: usize,
    pub records_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn create(path: &Path) -> Result<File, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("create dir", parent))?;
    }
    open_append(path, false).map_err(io_err("open", path))
}

/// Writes `buf` to a temporary file, fsyncs it, renames it over `path` and fsyncs the
/// folder; returns the append handle on the new file.
fn replace_file(path: &Path, buf: &[u8]) -> Result<File, StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove stale", &tmp)(e)),
    }
    let written = open_append(&tmp, true)
        .and_then(|mut f| f.write_all(buf).and_then(|()| f.sync_all()).map(|()| f));
    let f = match written {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp)(e));
        }
    };
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename", &tmp)(e));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync dir", dir))?;
    Ok(f)
}

/// Offset of the last `\n` strictly before `end`, scanning backwards in chunks so a
/// large log is not read whole.
fn last_newline_before(file: &mut File, end: u64) -> std::io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let n = (hi - lo) as usize;
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 4] = b"TST1";

    fn all_framings() -> [Framing; 3] {
        [
            Framing::Lines,
            Framing::CheckedLines,
            Framing::Frames(MAGIC),
        ]
    }

    #[test]
    fn round_trip_reopen_and_torn_tail_for_every_framing() {
        for f in all_framings() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a/b.log");
            let (log, recs) = RecordLog::open(&path, f).unwrap();
            assert!(recs.is_empty());
            log.append(&[b"one".as_slice(), b"two"], Sync::Durable)
                .unwrap();
            log.append(&[b"three"], Sync::Buffered).unwrap();
            drop(log);
            // A crash mid-write leaves part of a record.
            let mut raw = fs::read(&path).unwrap();
            let good = raw.len();
            raw.extend_from_slice(&b"\x00PART"[..3]);
            fs::write(&path, &raw).unwrap();
            let (log, recs) = RecordLog::open(&path, f).unwrap();
            assert_eq!(
                recs,
                vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()],
                "{f:?}"
            );
            assert_eq!(fs::metadata(&path).unwrap().len() as usize, good, "{f:?}");
            log.append(&[b"four"], Sync::Durable).unwrap();
            assert_eq!(RecordLog::read_all(&path, f).unwrap().len(), 4, "{f:?}");
        }
    }

    #[test]
    fn checked_lines_skip_a_damaged_middle_record_and_cut_a_damaged_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let (log, _) = RecordLog::open(&path, Framing::CheckedLines).unwrap();
        log.append(&[b"aaa".as_slice(), b"bbb", b"ccc", b"ddd"], Sync::Durable)
            .unwrap();
        drop(log);
        let mut raw = fs::read(&path).unwrap();
        let second = raw.iter().position(|&b| b == b'\n').unwrap() + 10;
        raw[second] ^= 1; // flip a byte in "bbb"
        let last = raw.len() - 2;
        raw[last] ^= 1; // and in "ddd"
        fs::write(&path, &raw).unwrap();
        let (_, recs) = RecordLog::open(&path, Framing::CheckedLines).unwrap();
        assert_eq!(recs, vec![b"aaa".to_vec(), b"ccc".to_vec()]);
        // The damaged middle line stays on disk; the damaged last line is cut.
        let after = fs::read(&path).unwrap();
        assert_eq!(after.iter().filter(|&&b| b == b'\n').count(), 3);
    }

    #[test]
    fn rewrite_keeps_what_rebuild_returns_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let (log, _) = RecordLog::open(&path, Framing::Frames(MAGIC)).unwrap();
        log.append(&[b"1".as_slice(), b"2", b"3"], Sync::Durable)
            .unwrap();
        let stats = log
            .rewrite(|recs| recs.into_iter().filter(|r| r != b"2").collect())
            .unwrap();
        assert_eq!((stats.records_before, stats.records_after), (3, 2));
        log.append(&[b"4"], Sync::Durable).unwrap();
        let recs = RecordLog::read_all(&path, Framing::Frames(MAGIC)).unwrap();
        assert_eq!(recs, vec![b"1".to_vec(), b"3".to_vec(), b"4".to_vec()]);
        assert!(!dir.path().join("r.log.tmp").exists());
    }

    #[test]
    fn last_line_is_found_from_the_end_and_a_torn_one_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.log");
        let (_, last) = RecordLog::open_last_line(&path).unwrap();
        assert_eq!(last, None);
        let long = "x".repeat(100_000);
        fs::write(&path, format!("first\n{long}\nthird\ntorn")).unwrap();
        let (log, last) = RecordLog::open_last_line(&path).unwrap();
        assert_eq!(last.as_deref(), Some(b"third".as_slice()));
        log.append(&[b"fourth"], Sync::Durable).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("\nthird\nfourth\n"));
        fs::write(&path, "only torn").unwrap();
        let (_, last) = RecordLog::open_last_line(&path).unwrap();
        assert_eq!(last, None);
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }
}
