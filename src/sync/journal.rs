//! The sync journal: where entries learnt from peers by anti-entropy become durable
//! (`<state_dir>/sync.journal`). Revocations taken here or pushed by a peer go to the
//! revocation log with their full record; a catch-up can move a million entries, which
//! as JSON log lines would be ~200 MB to encode, write and replay, so pulled entries are
//! kept here in the compact wire form instead (~33 bytes each).
//!
//! Format: frames of `[b"PCJ1"][payload len u32 LE][crc32 of payload u32 LE][payload]`,
//! the payload a run of wire entries. Replay stops at the first torn or corrupt frame
//! and cuts it off. When the file outgrows what the live set needs, it is rewritten as
//! one snapshot frame of the whole set (pruned entries drop out then).

use super::wire::{self, Entries};
use crate::clock::{Micros, Ticker};
use crate::revocation::Scope;
use crate::revocation::set::RevocationSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

const MAGIC: &[u8; 4] = b"PCJ1";
const HEADER: usize = 12;
/// Batches at least this large are written while they are applied.
const OVERLAP_BYTES: usize = 1 << 20;
/// Rewrite when the file exceeds twice the live set's size plus this much.
const COMPACT_SLACK: u64 = 16 << 20;

pub struct Journal {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("sync.journal")
}

/// Appends one frame and fsyncs; a failed write is cut off again so the file stays
/// frame-aligned.
fn write_frame(f: &mut File, payload: &[u8]) -> std::io::Result<()> {
    let before = f.metadata()?.len();
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let res = f
        .write_all(&header)
        .and_then(|()| f.write_all(payload))
        .and_then(|()| f.sync_data());
    if res.is_err() {
        let _ = f.set_len(before);
    }
    res
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Replays the journal into `set` (entries older than `horizon` are skipped, except
/// `all`) and returns how many entries it applied. A damaged tail is cut off.
pub fn replay(state_dir: &Path, set: &RevocationSet, ticker: &Ticker, horizon: Micros) -> usize {
    let path = path_in(state_dir);
    let mut data = Vec::new();
    match File::open(&path).and_then(|mut f| f.read_to_end(&mut data)) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the sync journal");
            return 0;
        }
    }
    let mut pos = 0;
    let mut applied = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < HEADER || &rest[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if rest.len() < HEADER + len || crc32fast::hash(&rest[HEADER..HEADER + len]) != crc {
            break;
        }
        let live: Vec<(Scope, &str, Micros)> = Entries::new(&rest[HEADER..HEADER + len])
            .map_while(Result::ok)
            .filter(|(scope, _, nb)| *nb >= horizon || *scope == Scope::All)
            .collect();
        if let Some(latest) = live.iter().map(|e| e.2).max() {
            ticker.observe(latest);
        }
        applied += live.len();
        set.apply_batch(live);
        pos += HEADER + len;
    }
    if pos < data.len() {
        tracing::warn!(path = %path.display(), from = data.len(), to = pos, "sync journal: cutting off a torn or corrupt tail");
        if let Ok(f) = OpenOptions::new().write(true).open(&path) {
            let _ = f.set_len(pos as u64).and_then(|()| f.sync_data());
        }
    }
    if applied > 0 {
        tracing::info!(path = %path.display(), applied, "sync journal replayed");
    }
    applied
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal {
            path: path_in(state_dir),
            file: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<File>> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, slot: &mut Option<File>) -> std::io::Result<()> {
        if slot.is_none() {
            *slot = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        Ok(())
    }

    /// Makes `entries` (a run of wire entries) durable and runs `apply` (which enforces
    /// them), while holding the journal, so a compaction (which snapshots the set under
    /// the same lock) never drops entries that are on disk but not yet in the set.
    ///
    /// Small batches are written first and applied after. A large one (a catch-up) is
    /// written and fsynced on another thread while `apply` runs: enforcing pulled
    /// entries before they are durable here only refuses sooner, and should the write
    /// fail they are still held by the peers and pulled again at the next start, before
    /// this node reports ready.
    pub fn append_then<R: Send>(
        &self,
        entries: &[u8],
        apply: impl FnOnce() -> R + Send,
    ) -> std::io::Result<R> {
        let mut guard = self.lock();
        if entries.is_empty() {
            return Ok(apply());
        }
        self.open(&mut guard)?;
        let f = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("sync journal is not open"))?;
        if entries.len() < OVERLAP_BYTES {
            write_frame(f, entries)?;
            return Ok(apply());
        }
        std::thread::scope(|s| {
            let w = s.spawn(|| write_frame(f, entries));
            let r = apply();
            match w.join() {
                Ok(Ok(())) => Ok(r),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::other("journal writer panicked")),
            }
        })
    }

    pub fn len_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Rewrites the journal as one snapshot of `set` when it has grown well past it.
    pub fn maybe_compact(&self, set: &RevocationSet) -> std::io::Result<bool> {
        let live = set.len() as u64 * 40;
        if self.len_bytes() <= 2 * live + COMPACT_SLACK {
            return Ok(false);
        }
        let mut guard = self.lock();
        let snap = wire::encode_set(set, None);
        let buf = frame(&snap[12..]);
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        *guard = None;
        tracing::info!(path = %self.path.display(), bytes = buf.len(), "sync journal compacted");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn entries(items: &[(Scope, &str, Micros)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (s, t, nb) in items {
            wire::put_entry(&mut b, *s, t, *nb);
        }
        b
    }

    #[test]
    fn survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        j.append_then(
            &entries(&[(Scope::Session, "a", 10), (Scope::User, "u", 20)]),
            || (),
        )
        .unwrap();
        j.append_then(&entries(&[(Scope::Session, "b", 30)]), || ())
            .unwrap();
        let good = j.len_bytes();
        j.append_then(&entries(&[(Scope::Session, "c", 40)]), || ())
            .unwrap();
        drop(j);
        let p = path_in(dir.path());
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(good + 5).unwrap();
        let set = RevocationSet::new();
        let t = Ticker::new(ManualClock::new(0));
        assert_eq!(replay(dir.path(), &set, &t, 15), 2, "a is past the horizon");
        assert_eq!(set.get(Scope::Session, "b"), Some(30));
        assert_eq!(set.get(Scope::Session, "a"), None);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
        assert!(t.tick() > 30);
    }

    #[test]
    fn compaction_keeps_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        let set = RevocationSet::new();
        let big: Vec<(Scope, String, Micros)> = (0..500_000)
            .map(|i| (Scope::Session, format!("session-id-{i:016}"), i))
            .collect();
        let mut b = Vec::new();
        for (s, t, nb) in &big {
            wire::put_entry(&mut b, *s, t, *nb);
        }
        j.append_then(&b, || ()).unwrap();
        set.apply(Scope::User, "kept", 99);
        assert!(j.maybe_compact(&set).unwrap());
        j.append_then(&entries(&[(Scope::Session, "after", 100)]), || ())
            .unwrap();
        let back = RevocationSet::new();
        replay(dir.path(), &back, &Ticker::new(ManualClock::new(0)), 0);
        assert_eq!(back.len(), 2);
        assert_eq!(back.get(Scope::User, "kept"), Some(99));
        assert_eq!(back.get(Scope::Session, "after"), Some(100));
    }
}
