//! The outbox: revocations this node enforced but could not hand to Redis yet, kept in a
//! file under the state dir until [`RedisStore::flush_outbox`] publishes them. Nothing
//! acked may be lost, so every push is on disk (fsync) before it returns.
//!
//! Format: frames of `<u32 length LE><u32 crc32 LE><record JSON>`. On open, frames are
//! read until the first torn or damaged one, and the file is cut there (a crash can only
//! tear the last write). Publishing a record twice is harmless, so a crash between
//! publishing and trimming the file only means the records go out again.

use super::{RedisError, RedisStore};
use crate::revocation::RevocationRecord;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Records published per call while flushing.
const CHUNK: usize = 500;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("redis outbox: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("redis outbox: encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("redis outbox: background task failed: {0}")]
    Task(String),
}

/// A durable queue of revocations waiting for Redis.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: Mutex<File>,
    /// Held for a whole flush: frame offsets only change under it.
    flushing: tokio::sync::Mutex<()>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError {
    move |source| OutboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// Records with the byte offset just past each one's frame.
fn parse(data: &[u8]) -> (Vec<(RevocationRecord, u64)>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= HEADER {
        let word =
            |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let (len, crc) = (word(pos) as usize, word(pos + 4));
        let body = pos + HEADER;
        if data.len() - body < len || crc32fast::hash(&data[body..body + len]) != crc {
            break;
        }
        let Ok(rec) = serde_json::from_slice(&data[body..body + len]) else {
            break;
        };
        pos = body + len;
        out.push((rec, pos as u64));
    }
    (out, pos)
}

impl Outbox {
    /// Opens (creating) the outbox file, cutting a torn or damaged tail.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
        }
        let mut file = open_append(path).map_err(io_err("open", path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err("read", path))?;
        let (recs, good) = parse(&data);
        if good < data.len() {
            tracing::warn!(path = %path.display(), kept = recs.len(), cut_bytes = data.len() - good,
                "redis outbox: cutting a torn or damaged tail");
            file.set_len(good as u64)
                .map_err(io_err("truncate", path))?;
            file.sync_data().map_err(io_err("sync", path))?;
        }
        Ok(Outbox {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `recs` and returns once they are on disk. Blocks on file I/O.
    pub fn push(&self, recs: &[RevocationRecord]) -> Result<(), OutboxError> {
        let mut buf = Vec::new();
        for rec in recs {
            let json = serde_json::to_vec(rec)?;
            buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
            buf.extend_from_slice(&json);
        }
        let mut file = self.lock();
        let before = file.metadata().map_err(io_err("stat", &self.path))?.len();
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            // Never leave half a frame for the next push to glue onto.
            let _ = file.set_len(before);
            return Err(io_err("append", &self.path)(e));
        }
        Ok(())
    }

    /// Every record waiting, oldest first. Blocks on file I/O.
    pub fn pending(&self) -> Result<Vec<RevocationRecord>, OutboxError> {
        Ok(self.frames()?.into_iter().map(|(r, _)| r).collect())
    }

    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        let file = self.lock();
        Ok(file.metadata().map_err(io_err("stat", &self.path))?.len() == 0)
    }

    fn frames(&self) -> Result<Vec<(RevocationRecord, u64)>, OutboxError> {
        let mut file = self.lock();
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", &self.path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(io_err("read", &self.path))?;
        Ok(parse(&data).0)
    }

    /// Drops the first `upto` bytes (records handed over), keeping anything pushed since.
    fn consume(&self, upto: u64) -> Result<(), OutboxError> {
        if upto == 0 {
            return Ok(());
        }
        let mut file = self.lock();
        let len = file.metadata().map_err(io_err("stat", &self.path))?.len();
        if len <= upto {
            file.set_len(0).map_err(io_err("truncate", &self.path))?;
            return file.sync_data().map_err(io_err("sync", &self.path));
        }
        let mut rest = Vec::new();
        file.seek(SeekFrom::Start(upto))
            .map_err(io_err("seek", &self.path))?;
        file.read_to_end(&mut rest)
            .map_err(io_err("read", &self.path))?;
        let tmp = self.path.with_extension("tmp");
        let mut t = File::create(&tmp).map_err(io_err("create", &tmp))?;
        t.write_all(&rest)
            .and_then(|()| t.sync_all())
            .map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_err("rename", &self.path))?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("sync dir", dir))?;
        }
        *file = open_append(&self.path).map_err(io_err("reopen", &self.path))?;
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))?
}

impl RedisStore {
    /// Publishes everything waiting in `outbox`, oldest first, and removes what Redis
    /// accepted. Returns how many records went out. On an error, what was published
    /// before it is removed and the rest stays for the next flush.
    pub async fn flush_outbox(&self, outbox: &Arc<Outbox>) -> Result<usize, RedisError> {
        let _one_flush = outbox.flushing.lock().await;
        let ob = outbox.clone();
        let frames = blocking(move || ob.frames()).await?;
        let mut done = 0;
        let mut sent = 0;
        let mut result = Ok(());
        for chunk in frames.chunks(CHUNK) {
            let recs: Vec<RevocationRecord> = chunk.iter().map(|(r, _)| r.clone()).collect();
            if let Err(e) = self.publish(&recs).await {
                result = Err(e);
                break;
            }
            sent += chunk.len();
            done = chunk.last().map_or(done, |(_, end)| *end);
        }
        let ob = outbox.clone();
        blocking(move || ob.consume(done)).await?;
        if sent > 0 {
            tracing::info!(sent, "redis outbox: handed waiting revocations to redis");
        }
        result.map(|()| sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Scope;

    fn rec(i: i64) -> RevocationRecord {
        RevocationRecord {
            id: format!("r{i}"),
            scope: Scope::User,
            target: format!("u{i}@example.com"),
            not_before_us: 1_000 + i,
            reason: "test".into(),
            actor: "ops".into(),
            node: "gw-1".into(),
            external_id: None,
        }
    }

    #[test]
    fn survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/redis-outbox");
        let ob = Outbox::open(&path).unwrap();
        ob.push(&[rec(1), rec(2)]).unwrap();
        ob.push(&[rec(3)]).unwrap();
        drop(ob);
        // A crash mid-write: half a frame at the end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let ob = Outbox::open(&path).unwrap();
        assert_eq!(ob.pending().unwrap(), vec![rec(1), rec(2), rec(3)]);
        ob.push(&[rec(4)]).unwrap();
        assert_eq!(ob.pending().unwrap().len(), 4);
    }

    #[test]
    fn a_flipped_byte_stops_replay_at_that_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let ob = Outbox::open(&path).unwrap();
        ob.push(&[rec(1), rec(2)]).unwrap();
        drop(ob);
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 3;
        data[last] ^= 0x20;
        fs::write(&path, &data).unwrap();
        assert_eq!(
            Outbox::open(&path).unwrap().pending().unwrap(),
            vec![rec(1)]
        );
    }

    #[test]
    fn consume_keeps_what_was_pushed_after_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("outbox")).unwrap();
        ob.push(&[rec(1), rec(2)]).unwrap();
        let frames = ob.frames().unwrap();
        ob.push(&[rec(3)]).unwrap();
        ob.consume(frames[1].1).unwrap();
        assert_eq!(ob.pending().unwrap(), vec![rec(3)]);
        ob.push(&[rec(4)]).unwrap();
        assert_eq!(ob.pending().unwrap(), vec![rec(3), rec(4)]);
        let all = ob.frames().unwrap();
        ob.consume(all[1].1).unwrap();
        assert!(ob.is_empty().unwrap());
    }
}
