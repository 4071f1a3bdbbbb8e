//! Property tests of what the gateway keeps and carries: the durable record log replays
//! exactly the records appended before any truncation point (each framing), and sealed
//! values round-trip, open after a key rotation, and never open for another purpose,
//! under another cluster's key or once changed.

use portcullis::fuzzing::{Framing, LogSync, RecordLog};
use portcullis::session::seal::{Purpose, Sealer};
use proptest::prelude::*;

fn framing() -> impl Strategy<Value = Framing> {
    prop::sample::select(vec![
        Framing::Lines,
        Framing::CheckedLines,
        Framing::Frames(b"TEST"),
    ])
}

/// Payloads a framing can carry: no newline in a line-framed log.
fn payloads(f: Framing) -> BoxedStrategy<Vec<Vec<u8>>> {
    let one = match f {
        Framing::Frames(_) => prop::collection::vec(any::<u8>(), 0..64).boxed(),
        _ => prop::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..64,
        )
        .boxed(),
    };
    prop::collection::vec(one, 0..12).boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_record_log_replays_exactly_what_was_appended_before_any_cut(
        (f, recs) in framing().prop_flat_map(|f| (Just(f), payloads(f))),
        batch in 1usize..4,
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (log, none) = RecordLog::open(&path, f).unwrap();
        prop_assert!(none.is_empty());
        // Appended in batches: the same bytes as one record at a time.
        for part in recs.chunks(batch) {
            log.append(part, LogSync::Buffered).unwrap();
        }
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let mut record_ends = Vec::new();
        {
            // Where each record ends: append them one at a time to a second log.
            let p2 = dir.path().join("one-by-one");
            let (l2, _) = RecordLog::open(&p2, f).unwrap();
            for r in &recs {
                l2.append(&[r], LogSync::Buffered).unwrap();
                record_ends.push(l2.len_bytes());
            }
            prop_assert_eq!(std::fs::read(&p2).unwrap(), std::fs::read(&path).unwrap());
        }
        let at = cut.index(len as usize + 1) as u64;
        let f2 = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f2.set_len(at).unwrap();
        drop(f2);
        let (log, back) = RecordLog::open(&path, f).unwrap();
        let whole = record_ends.iter().filter(|e| **e <= at).count();
        prop_assert_eq!(&back[..], &recs[..whole]);
        // The torn tail is gone: what is appended now replays after them.
        let good = record_ends[..whole].last().copied().unwrap_or(0);
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        let tail = match f {
            Framing::Frames(_) => extra.clone(),
            _ => extra.iter().copied().filter(|b| *b != b'\n').collect(),
        };
        log.append(&[&tail], LogSync::Durable).unwrap();
        drop(log);
        let (_, again) = RecordLog::open(&path, f).unwrap();
        prop_assert_eq!(&again[..whole], &recs[..whole]);
        prop_assert_eq!(&again[whole..], &[tail][..]);
    }
}

/// Two different purposes.
fn purpose() -> impl Strategy<Value = (Purpose, Purpose)> {
    let all = [
        Purpose::Handoff,
        Purpose::SignInState,
        Purpose::ConsoleSession,
        Purpose::ConsoleForm,
        Purpose::SignInTime,
    ];
    let pairs: Vec<_> = all
        .iter()
        .flat_map(|a| all.iter().filter(move |b| *b != a).map(move |b| (*a, *b)))
        .collect();
    prop::sample::select(pairs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sealed_values_open_only_as_sealed(
        plain in prop::collection::vec(any::<u8>(), 0..200),
        (p, other) in purpose(),
        secret in prop::collection::vec(any::<u8>(), 1..64),
        at in any::<prop::sample::Index>(),
        to in 1usize..64,
    ) {
        let s = Sealer::new("k1", [("k1", secret.as_slice())]);
        let sealed = s.seal(p, &plain).unwrap();
        prop_assert_eq!(s.open(p, &sealed), Some(plain.clone()));
        prop_assert_eq!(s.open(other, &sealed), None);
        // After a rotation the old key still opens; before it, the new key's values do not.
        let rotated = Sealer::new("k2", [("k1", secret.as_slice()), ("k2", b"the next key".as_slice())]);
        prop_assert_eq!(rotated.open(p, &sealed), Some(plain.clone()));
        let newer = rotated.seal(p, &plain).unwrap();
        prop_assert_eq!(s.open(p, &newer), None);
        // Another cluster whose key has the same name cannot open it.
        let mut foreign = secret.clone();
        foreign.push(0);
        let other_cluster = Sealer::new("k1", [("k1", foreign.as_slice())]);
        prop_assert_eq!(other_cluster.open(p, &sealed), None);
        // Any one character changed (to another base64url character) and it is refused.
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bytes = sealed.clone().into_bytes();
        let i = 3 + at.index(bytes.len() - 3);
        let pos = B64.iter().position(|b| *b == bytes[i]).unwrap();
        bytes[i] = B64[(pos + to) % 64];
        prop_assert_eq!(s.open(p, std::str::from_utf8(&bytes).unwrap()), None);
    }
}
