//! The durable record log (`store::RecordLog`, through `portcullis::fuzzing`): replay and
//! torn-tail recovery at open, for each framing, on fuzzed file contents.
//!
//! Input: a control byte (framing, truncation point), then the file's bytes.
//! Checked: open never panics and returns what `read_all` reads from the file it left;
//! a second open changes nothing; records appended then are replayed after the earlier
//! ones; and records appended to a fresh log, cut at any byte, replay as exactly those
//! whose frames ended before the cut.
#![no_main]

use fuzz_common::scratch;
use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::{Framing, LogSync, RecordLog};

fn framing(ctl: u8) -> Framing {
    match ctl % 3 {
        0 => Framing::Lines,
        1 => Framing::CheckedLines,
        _ => Framing::Frames(b"FUZZ"),
    }
}

/// Payloads the framing can carry (Lines: no newline), made from the input.
fn payloads(f: Framing, data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|b| *b == b'|')
        .map(|p| match f {
            Framing::Lines | Framing::CheckedLines => {
                p.iter().copied().filter(|b| *b != b'\n').collect()
            }
            Framing::Frames(_) => p.to_vec(),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, file)) = data.split_first() else {
        return;
    };
    let f = framing(ctl);
    let dir = scratch("record-log");
    let path = dir.join("log");
    std::fs::write(&path, file).expect("write");

    let (log, records) = RecordLog::open(&path, f).expect("open");
    let after = std::fs::read(&path).expect("read");
    assert!(file.starts_with(&after), "open may only cut the tail");
    assert_eq!(RecordLog::read_all(&path, f).expect("read_all"), records);
    drop(log);
    let (log, again) = RecordLog::open(&path, f).expect("open again");
    assert_eq!(again, records);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        after,
        "a second open changed the file"
    );

    let more = payloads(f, file);
    log.append(&more, LogSync::Buffered).expect("append");
    drop(log);
    let (_, all) = RecordLog::open(&path, f).expect("open after append");
    assert_eq!(all[..records.len()], records[..]);
    assert_eq!(all[records.len()..], more[..]);

    // A fresh log of those records, cut at a point the control byte picks.
    let fresh = dir.join("fresh");
    let (log, none) = RecordLog::open(&fresh, f).expect("create");
    assert!(none.is_empty());
    let mut ends = Vec::new();
    for p in &more {
        log.append(&[p], LogSync::Buffered).expect("append");
        ends.push(log.len_bytes());
    }
    drop(log);
    let len = ends.last().copied().unwrap_or(0);
    let cut = len * u64::from(ctl) / 255;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fresh)
        .and_then(|h| h.set_len(cut))
        .expect("truncate");
    let (_, kept) = RecordLog::open(&fresh, f).expect("open the cut log");
    let whole = ends.iter().filter(|e| **e <= cut).count();
    assert_eq!(kept, more[..whole], "cut at {cut} of {len}");
    assert_eq!(
        std::fs::metadata(&fresh).expect("stat").len(),
        ends[..whole].last().copied().unwrap_or(0)
    );
});
