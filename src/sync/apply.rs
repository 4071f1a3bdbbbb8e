//! Revocations learnt in bulk (pulled by anti-entropy, read from Redis) take one step:
//! keep the entries that move this node's set forward, make them durable in the sync
//! journal, enforce them (set and meta), and end the sessions they cover.

use super::journal::Journal;
use super::wire::{self, WireError};
use crate::clock::Micros;
use crate::revocation::Scope;
use crate::revocation::engine::{Engine, canonical};
use crate::revocation::set::RevocationSet;
use crate::store::StoreError;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("unreadable entries: {0}")]
    Decode(#[from] WireError),
    #[error("cannot make them durable: {0}")]
    Store(#[from] StoreError),
}

/// Applies `entries` (a run of wire entries); returns how many moved the set forward.
pub fn apply_durably(
    engine: &Engine,
    journal: &Journal,
    horizon: Micros,
    entries: &[u8],
) -> Result<usize, ApplyError> {
    let t0 = Instant::now();
    let set = engine.set();
    let (fresh, n) = fresh_entries(set, entries, horizon)?;
    let selected_ms = t0.elapsed().as_secs_f64() * 1e3;
    if n == 0 {
        return Ok(0);
    }
    let moved = journal
        .append_then(&fresh, || apply_entries(set, engine, &fresh, n))
        .inspect_err(|e| tracing::error!(error = %e, "cannot make revocations durable"))?;
    let ended = engine.end_revoked_sessions();
    tracing::debug!(
        received = n,
        moved,
        ended,
        selected_ms,
        millis = t0.elapsed().as_secs_f64() * 1e3,
        "applied revocations in bulk"
    );
    Ok(moved)
}

/// The entries of `entries` that would move `set` forward (and are in force and
/// well-formed), copied as they are, and how many there are.
fn fresh_entries(
    set: &RevocationSet,
    entries: &[u8],
    horizon: Micros,
) -> Result<(Vec<u8>, usize), WireError> {
    let mut fresh = Vec::with_capacity(entries.len().min(64 << 20));
    let mut n = 0usize;
    let mut it = wire::Entries::new(entries);
    while let Some(e) = it.next_raw() {
        let (e, raw) = e?;
        let (scope, target, nb) = (e.scope, e.target, e.nb);
        if (scope != Scope::All && nb < horizon)
            || !canonical(scope, target)
            || set.get(scope, target).is_some_and(|have| have >= nb)
        {
            continue;
        }
        fresh.extend_from_slice(raw);
        n += 1;
    }
    Ok((fresh, n))
}

/// Merges `n` wire entries into the set (in batches on several threads when there are
/// many) and makes later ticks come after them; returns how many moved the set forward.
fn apply_entries(set: &RevocationSet, engine: &Engine, entries: &[u8], n: usize) -> usize {
    let t0 = Instant::now();
    let decoded: Vec<wire::Entry<'_>> = wire::Entries::new(entries).flatten().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let meta = |part: &[wire::Entry<'_>]| {
        for e in part {
            if let Some(fields) = e.meta {
                engine.meta().insert_fields(e.scope, e.target, e.nb, fields);
            }
        }
    };
    let all: Vec<(Scope, &str, i64)> = decoded.iter().map(|e| (e.scope, e.target, e.nb)).collect();
    let latest = all.iter().map(|e| e.2).max().unwrap_or(i64::MIN);
    let moved = if n < 50_000 || threads < 2 {
        meta(&decoded);
        set.apply_batch(all.iter().copied())
    } else {
        // Both the set and the meta index are sharded maps: fill them on every core.
        let per = all.len().div_ceil(threads);
        std::thread::scope(|s| {
            let metas: Vec<_> = decoded
                .chunks(per)
                .map(|c| s.spawn(move || meta(c)))
                .collect();
            metas.into_iter().for_each(|h| drop(h.join()));
            let parts: Vec<_> = all
                .chunks(per)
                .map(|c| s.spawn(move || set.apply_batch(c.iter().copied())))
                .collect();
            parts.into_iter().filter_map(|h| h.join().ok()).sum()
        })
    };
    let merged_ms = t0.elapsed().as_secs_f64() * 1e3;
    engine.observe(latest);
    tracing::debug!(millis = merged_ms, "merged revocations");
    moved
}
