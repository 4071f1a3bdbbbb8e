//! The sync journal: where entries learnt from peers by anti-entropy become durable
//! (`<state_dir>/sync.journal`). Revocations taken here or pushed by a peer go to the
//! revocation log with their full record; a catch-up can move a million entries, which
//! as JSON log lines would be ~200 MB to encode, write and replay, so pulled entries are
//! kept here in the compact wire form instead (~33 bytes each).
//!
//! A [`RecordLog`] of binary frames (`PCJ1`), each payload a run of wire entries. When
//! the file outgrows what the live set needs, it is rewritten as one snapshot frame of
//! the whole set (pruned entries drop out then).

use super::wire::{self, Entries};
use crate::clock::{Micros, Ticker};
use crate::revocation::Scope;
use crate::revocation::set::RevocationSet;
use crate::store::{Framing, RecordLog, StoreError, Sync};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

const FRAMING: Framing = Framing::Frames(b"PCJ1");
/// Batches at least this large are written while they are applied.
const OVERLAP_BYTES: usize = 1 << 20;
/// Rewrite when the file exceeds twice the live set's size plus this much.
const COMPACT_SLACK: u64 = 16 << 20;

pub struct Journal {
    log: RecordLog,
    /// Held while a batch is written and applied, and while a compaction snapshots the
    /// set, so a snapshot never misses entries that are on disk but not yet applied.
    gate: Mutex<()>,
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("sync.journal")
}

/// Applies one frame's entries (those newer than `horizon`, and every `all`) to `set`.
fn replay_frame(payload: &[u8], set: &RevocationSet, ticker: &Ticker, horizon: Micros) -> usize {
    let live: Vec<(Scope, &str, Micros)> = Entries::new(payload)
        .map_while(Result::ok)
        .filter(|(scope, _, nb)| *nb >= horizon || *scope == Scope::All)
        .collect();
    if let Some(latest) = live.iter().map(|e| e.2).max() {
        ticker.observe(latest);
    }
    let n = live.len();
    set.apply_batch(live);
    n
}

impl Journal {
    /// Opens the journal under `state_dir`, replays it into `set` (entries older than
    /// `horizon` are skipped, except `all`) and says how many entries it applied. A
    /// damaged tail is cut off.
    pub fn open(
        state_dir: &Path,
        set: &RevocationSet,
        ticker: &Ticker,
        horizon: Micros,
    ) -> Result<(Journal, usize), StoreError> {
        let path = path_in(state_dir);
        let (log, frames) = RecordLog::open(&path, FRAMING)?;
        let applied: usize = frames
            .iter()
            .map(|f| replay_frame(f, set, ticker, horizon))
            .sum();
        if applied > 0 {
            tracing::info!(path = %path.display(), applied, "sync journal replayed");
        }
        let journal = Journal {
            log,
            gate: Mutex::new(()),
        };
        Ok((journal, applied))
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `entries` (a run of wire entries) durable and runs `apply` (which enforces
    /// them), holding the gate so a compaction never drops entries that are on disk but
    /// not yet in the set.
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
    ) -> Result<R, StoreError> {
        let _gate = self.gate();
        if entries.is_empty() {
            return Ok(apply());
        }
        if entries.len() < OVERLAP_BYTES {
            self.log.append(&[entries], Sync::Durable)?;
            return Ok(apply());
        }
        std::thread::scope(|s| {
            let w = s.spawn(|| self.log.append(&[entries], Sync::Durable));
            let r = apply();
            match w.join() {
                Ok(res) => res.map(|()| r),
                Err(_) => Err(StoreError {
                    op: "append",
                    path: self.log.path().to_path_buf(),
                    source: std::io::Error::other("journal writer panicked"),
                }),
            }
        })
    }

    pub fn len_bytes(&self) -> u64 {
        self.log.len_bytes()
    }

    /// Rewrites the journal as one snapshot of `set` when it has grown well past it.
    pub fn maybe_compact(&self, set: &RevocationSet) -> Result<bool, StoreError> {
        let live = set.len() as u64 * 40;
        if self.len_bytes() <= 2 * live + COMPACT_SLACK {
            return Ok(false);
        }
        let _gate = self.gate();
        let snap = wire::encode_set(set, None);
        let stats = self.log.rewrite(|_| vec![snap[12..].to_vec()])?;
        tracing::info!(path = %self.log.path().display(), bytes = stats.bytes_after, "sync journal compacted");
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
        let t0 = Ticker::new(ManualClock::new(0));
        let (j, _) = Journal::open(dir.path(), &RevocationSet::new(), &t0, 0).unwrap();
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
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(good + 5).unwrap();
        let set = RevocationSet::new();
        let t = Ticker::new(ManualClock::new(0));
        let (_, applied) = Journal::open(dir.path(), &set, &t, 15).unwrap();
        assert_eq!(applied, 2, "a is past the horizon");
        assert_eq!(set.get(Scope::Session, "b"), Some(30));
        assert_eq!(set.get(Scope::Session, "a"), None);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
        assert!(t.tick() > 30);
    }

    #[test]
    fn compaction_keeps_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let set = RevocationSet::new();
        let (j, _) = Journal::open(dir.path(), &set, &Ticker::new(ManualClock::new(0)), 0).unwrap();
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
        drop(j);
        let back = RevocationSet::new();
        Journal::open(dir.path(), &back, &Ticker::new(ManualClock::new(0)), 0).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.get(Scope::User, "kept"), Some(99));
        assert_eq!(back.get(Scope::Session, "after"), Some(100));
    }
}
