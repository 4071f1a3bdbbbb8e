//! The sync journal: where entries learnt from peers by anti-entropy become durable
//! (`<state_dir>/sync.journal`). Revocations taken here or pushed by a peer go to the
//! revocation log with their full record; a catch-up can move a million entries, which
//! as JSON log lines would be ~200 MB to encode, write and replay, so pulled entries are
//! kept here in the compact wire form instead (~33 bytes each).
//!
//! A [`RecordLog`] of binary frames (`PCJ2`), each payload a run of wire entries (with
//! their meta when known). When the file outgrows what the live set needs, it is
//! rewritten as one snapshot frame of the whole set (pruned entries drop out then). A
//! journal of the earlier format (`PCJ1`, entries without meta) is migrated at open.

use super::wire::{self, Entries};
use crate::clock::{Micros, Ticker};
use crate::revocation::Scope;
use crate::revocation::meta::MetaIndex;
use crate::revocation::set::RevocationSet;
use crate::store::{Framing, RecordLog, StoreError, Sync};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

const FRAMING: Framing = Framing::Frames(b"PCJ2");
const OLD_FRAMING: Framing = Framing::Frames(b"PCJ1");
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
    state_dir.join("peers.journal")
}

/// Where the earlier format lived.
fn old_path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("sync.journal")
}

/// Where replayed entries go.
pub struct Target<'a> {
    pub set: &'a RevocationSet,
    pub meta: &'a MetaIndex,
    pub ticker: &'a Ticker,
    pub horizon: Micros,
}

/// Applies one frame's entries (those newer than `horizon`, and every `all`).
fn replay_frame(payload: &[u8], t: &Target<'_>) -> usize {
    let live: Vec<wire::Entry<'_>> = Entries::new(payload)
        .map_while(Result::ok)
        .filter(|e| e.nb >= t.horizon || e.scope == Scope::All)
        .collect();
    if let Some(latest) = live.iter().map(|e| e.nb).max() {
        t.ticker.observe(latest);
    }
    for rec in live.iter().filter_map(wire::Entry::record) {
        t.meta.insert(rec);
    }
    let n = live.len();
    t.set
        .apply_batch(live.iter().map(|e| (e.scope, e.target, e.nb)));
    n
}

/// Entries of the earlier format: `[scope][len u16][target][nb i64]`, no meta.
fn old_entries(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 16);
    let mut p = 0;
    while p + 3 <= payload.len() {
        let Some(scope) = Scope::ALL.into_iter().find(|s| *s as u8 == payload[p]) else {
            break;
        };
        let len = u16::from_le_bytes([payload[p + 1], payload[p + 2]]) as usize;
        let end = p + 3 + len + 8;
        let Some(raw) = payload.get(p + 3..end) else {
            break;
        };
        let Ok(target) = std::str::from_utf8(&raw[..len]) else {
            break;
        };
        let mut nb = [0u8; 8];
        nb.copy_from_slice(&raw[len..]);
        wire::put_entry(&mut out, scope, target, i64::from_le_bytes(nb), None);
        p = end;
    }
    out
}

/// Moves a journal of the earlier format into `log`, then removes it.
fn migrate(state_dir: &Path, log: &RecordLog) -> Result<(), StoreError> {
    let old = old_path_in(state_dir);
    if !old.exists() {
        return Ok(());
    }
    let frames = RecordLog::read_all(&old, OLD_FRAMING)?;
    let converted: Vec<Vec<u8>> = frames.iter().map(|f| old_entries(f)).collect();
    log.append(&converted, Sync::Durable)?;
    std::fs::remove_file(&old).map_err(crate::store::record_log::io_err("remove", &old))?;
    tracing::info!(from = %old.display(), frames = converted.len(), "migrated the sync journal");
    Ok(())
}

impl Journal {
    /// Opens the journal under `state_dir`, replays it into `set` (entries older than
    /// `horizon` are skipped, except `all`) and says how many entries it applied. A
    /// damaged tail is cut off.
    pub fn open(state_dir: &Path, into: &Target<'_>) -> Result<(Journal, usize), StoreError> {
        let path = path_in(state_dir);
        let (log, _) = RecordLog::open(&path, FRAMING)?;
        migrate(state_dir, &log)?;
        let frames = RecordLog::read_all(&path, FRAMING)?;
        let applied: usize = frames.iter().map(|f| replay_frame(f, into)).sum();
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
    pub fn maybe_compact(&self, set: &RevocationSet, meta: &MetaIndex) -> Result<bool, StoreError> {
        let live = set.len() as u64 * 40;
        if self.len_bytes() <= 2 * live + COMPACT_SLACK {
            return Ok(false);
        }
        let _gate = self.gate();
        let snap = wire::encode_set(set, meta, None);
        let stats = self.log.rewrite(|_| vec![snap[12..].to_vec()])?;
        tracing::info!(path = %self.log.path().display(), bytes = stats.bytes_after, "sync journal compacted");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::revocation::RevocationRecord;

    fn entries(items: &[(Scope, &str, Micros)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (s, t, nb) in items {
            wire::put_entry(&mut b, *s, t, *nb, None);
        }
        b
    }

    struct Into {
        set: RevocationSet,
        meta: MetaIndex,
        ticker: Ticker,
    }

    impl Into {
        fn new() -> Self {
            Self {
                set: RevocationSet::new(),
                meta: MetaIndex::default(),
                ticker: Ticker::new(ManualClock::new(0)),
            }
        }
        fn target(&self, horizon: Micros) -> Target<'_> {
            Target {
                set: &self.set,
                meta: &self.meta,
                ticker: &self.ticker,
                horizon,
            }
        }
    }

    #[test]
    fn survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let first = Into::new();
        let (j, _) = Journal::open(dir.path(), &first.target(0)).unwrap();
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
        let back = Into::new();
        let (_, applied) = Journal::open(dir.path(), &back.target(15)).unwrap();
        assert_eq!(applied, 2, "a is past the horizon");
        assert_eq!(back.set.get(Scope::Session, "b"), Some(30));
        assert_eq!(back.set.get(Scope::Session, "a"), None);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
        assert!(back.ticker.tick() > 30);
    }

    #[test]
    fn compaction_keeps_the_set_and_its_meta() {
        let dir = tempfile::tempdir().unwrap();
        let live = Into::new();
        let (j, _) = Journal::open(dir.path(), &live.target(0)).unwrap();
        let mut b = Vec::new();
        for i in 0..500_000 {
            let t = format!("session-id-{i:016}");
            wire::put_entry(&mut b, Scope::Session, &t, i, None);
        }
        j.append_then(&b, || ()).unwrap();
        live.set.apply(Scope::User, "kept", 99);
        live.meta.insert(RevocationRecord {
            id: "r1".into(),
            scope: Scope::User,
            target: "kept".into(),
            not_before_us: 99,
            reason: "hr".into(),
            actor: "ops".into(),
            node: "n1".into(),
            external_id: None,
        });
        assert!(j.maybe_compact(&live.set, &live.meta).unwrap());
        j.append_then(&entries(&[(Scope::Session, "after", 100)]), || ())
            .unwrap();
        drop(j);
        let back = Into::new();
        Journal::open(dir.path(), &back.target(0)).unwrap();
        assert_eq!(back.set.len(), 2);
        assert_eq!(back.set.get(Scope::User, "kept"), Some(99));
        assert_eq!(back.meta.get(Scope::User, "kept", 99).unwrap().id, "r1");
        assert_eq!(back.set.get(Scope::Session, "after"), Some(100));
    }

    #[test]
    fn a_journal_of_the_earlier_format_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = Vec::new();
        for (t, nb) in [("s1", 10i64), ("s2", 20)] {
            old.push(Scope::Session as u8);
            old.extend_from_slice(&(t.len() as u16).to_le_bytes());
            old.extend_from_slice(t.as_bytes());
            old.extend_from_slice(&nb.to_le_bytes());
        }
        let (log, _) = RecordLog::open(&old_path_in(dir.path()), OLD_FRAMING).unwrap();
        log.append(&[old], Sync::Durable).unwrap();
        drop(log);
        let back = Into::new();
        let (_, applied) = Journal::open(dir.path(), &back.target(0)).unwrap();
        assert_eq!(applied, 2);
        assert_eq!(back.set.get(Scope::Session, "s2"), Some(20));
        assert!(!old_path_in(dir.path()).exists());
        let again = Into::new();
        assert_eq!(Journal::open(dir.path(), &again.target(0)).unwrap().1, 2);
    }
}
