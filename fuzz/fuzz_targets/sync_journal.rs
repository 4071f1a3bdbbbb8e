//! The sync journal's replay (`sync::journal::Journal::open`) on fuzzed file contents:
//! `peers.journal` (PCJ2 frames) and a journal of the earlier format (`sync.journal`,
//! PCJ1 frames) that is migrated at open.
//!
//! Input: a little-endian u16 (the length of the old journal's part), a horizon byte,
//! the old journal's bytes, then `peers.journal`'s bytes.
//! Checked: opening never panics; opening again gives the same set and count (the first
//! open cut the damage and migrated the old file for good); entries appended after
//! that are in the set at the next open.
#![no_main]

use fuzz_common::scratch;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis::clock::{ManualClock, Ticker};
use portcullis::revocation::Scope;
use portcullis::revocation::meta::MetaIndex;
use portcullis::revocation::set::RevocationSet;
use portcullis::sync::journal::{Journal, Target, path_in};
use portcullis::sync::wire::put_entry;
use std::path::Path;

struct Into {
    set: RevocationSet,
    meta: MetaIndex,
    ticker: Ticker,
}

fn open(dir: &Path, horizon: i64) -> (Journal, usize, Into) {
    let into = Into {
        set: RevocationSet::new(),
        meta: MetaIndex::default(),
        ticker: Ticker::new(ManualClock::new(0)),
    };
    let target = Target {
        set: &into.set,
        meta: &into.meta,
        ticker: &into.ticker,
        horizon,
    };
    let (j, n) = Journal::open(dir, &target).expect("the journal opens");
    (j, n, into)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let old_len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 3);
    let horizon = i64::from(data[2] as i8) * 1_000;
    let (old, new) = data[3..].split_at(old_len);
    let dir = scratch("journal");
    std::fs::write(path_in(&dir), new).expect("write");
    if !old.is_empty() {
        std::fs::write(dir.join("sync.journal"), old).expect("write");
    }

    let (j, applied, first) = open(&dir, horizon);
    drop(j);
    let (j, again, second) = open(&dir, horizon);
    assert_eq!(again, applied, "a second open applied another count");
    assert_eq!(second.set.digest(), first.set.digest());
    assert!(!dir.join("sync.journal").exists());

    // Append a few entries made from the input, as a pull would, then open again.
    let mut u = Unstructured::new(data);
    let mut batch = Vec::new();
    let mut items: Vec<(Scope, String, i64)> = Vec::new();
    for _ in 0..u.int_in_range(1..=4).unwrap_or(1) {
        let scope = *u.choose(&Scope::ALL).unwrap_or(&Scope::Session);
        let target: String = u.arbitrary().unwrap_or_default();
        let nb: i64 = u.arbitrary().unwrap_or_default();
        put_entry(&mut batch, scope, &target, nb, None);
        items.push((scope, target, nb));
    }
    j.append_then(&batch, || {
        second.set.apply_batch(
            items
                .iter()
                .filter(|(s, _, nb)| *nb >= horizon || *s == Scope::All)
                .map(|(s, t, nb)| (*s, t.as_str(), *nb)),
        )
    })
    .expect("append");
    drop(j);
    let (_, _, third) = open(&dir, horizon);
    assert_eq!(
        third.set.digest(),
        second.set.digest(),
        "appended entries lost"
    );
});
