//! The sync wire format (`sync::wire`): entries messages a peer sends (`entries_body`,
//! `Entries`), bucket digests (`differing_buckets`), and their encoders.
//!
//! Input: the bytes of a message; the same bytes also drive a generator of entries.
//! Checked: decoding never panics and stops at the first error; each decoded entry
//! encodes back to an entry that decodes to itself; generated entries (any strings, any
//! instants, any meta) survive encode/decode, meta (four fields, five with an external
//! id; an empty one is none) with the separator dropped and each field cut to 1024 bytes on a character boundary; a set rebuilt from its own encoding
//! has the same digest and no differing buckets.
#![no_main]

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use portcullis::revocation::meta::MetaIndex;
use portcullis::revocation::set::RevocationSet;
use portcullis::revocation::{RevocationRecord, Scope};
use portcullis::sync::wire::{
    Entries, Entry, differing_buckets, encode_buckets, encode_set, entries_body, put_entry,
};

static EMPTY: std::sync::LazyLock<RevocationSet> = std::sync::LazyLock::new(RevocationSet::new);

fn reencode(e: &Entry<'_>) {
    let rec = e.record();
    let mut buf = Vec::new();
    put_entry(&mut buf, e.scope, e.target, e.nb, rec.as_ref());
    let back: Vec<_> = Entries::new(&buf).collect();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].as_ref().expect("our own encoding decodes"), e);
}

/// What a meta field becomes on the wire: separators dropped, at most 1024 bytes, cut
/// on a character boundary.
fn on_wire(field: &str) -> String {
    let mut out = String::new();
    for c in field.chars().filter(|c| *c != '\u{1f}') {
        if out.len() + c.len_utf8() > 1024 {
            break;
        }
        out.push(c);
    }
    out
}

fn generated(u: &mut Unstructured<'_>) -> ArbResult<Vec<RevocationRecord>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        out.push(RevocationRecord {
            id: u.arbitrary()?,
            scope: *u.choose(&Scope::ALL)?,
            target: u.arbitrary()?,
            not_before_us: u.arbitrary()?,
            reason: u.arbitrary()?,
            actor: u.arbitrary()?,
            node: u.arbitrary()?,
            external_id: u.arbitrary()?,
        });
    }
    Ok(out)
}

fn round_trip(recs: &[RevocationRecord], with_meta: &[bool]) {
    let mut buf = Vec::new();
    for (r, m) in recs.iter().zip(with_meta) {
        put_entry(
            &mut buf,
            r.scope,
            &r.target,
            r.not_before_us,
            m.then_some(r),
        );
    }
    let back: Vec<Entry<'_>> = Entries::new(&buf)
        .collect::<Result<_, _>>()
        .expect("our own encoding decodes");
    assert_eq!(back.len(), recs.len());
    for ((e, r), m) in back.iter().zip(recs).zip(with_meta) {
        assert_eq!(
            (e.scope, e.target, e.nb),
            (r.scope, r.target.as_str(), r.not_before_us)
        );
        let ext = r.external_id.as_deref().unwrap_or("");
        let want = m.then(|| [&r.id, &r.reason, &r.actor, &r.node, ext].map(on_wire));
        assert_eq!(e.meta.map(|m| m.map(str::to_string)), want);
        // An external id that is empty on the wire is none.
        let want_ext = Some(on_wire(ext)).filter(|x| !x.is_empty());
        assert_eq!(e.record().map(|r| r.external_id), m.then_some(want_ext));
    }
}

fn set_round_trip(entries: &[Entry<'_>]) {
    let a = RevocationSet::new();
    let meta = MetaIndex::default();
    for e in entries {
        a.apply(e.scope, e.target, e.nb);
        if let Some(r) = e.record() {
            meta.insert(r);
        }
    }
    let enc = encode_set(&a, &meta, None);
    let (n, body) = entries_body(&enc).expect("our own header");
    assert_eq!(n as usize, a.len());
    let b = RevocationSet::new();
    for e in Entries::new(body) {
        let e = e.expect("our own encoding decodes");
        b.apply(e.scope, e.target, e.nb);
    }
    assert_eq!(a.digest(), b.digest());
    let diff = differing_buckets(&a, &encode_buckets(&b)).expect("our own digests");
    assert!(!diff.contains(&true));
}

fuzz_target!(|data: &[u8]| {
    let body = entries_body(data).map_or(data, |(_, b)| b);
    let mut ok = Vec::new();
    let mut iter = Entries::new(body);
    for e in iter.by_ref() {
        match e {
            Ok(e) => ok.push(e),
            Err(_) => break,
        }
    }
    assert!(iter.next().is_none(), "decoding goes on after an error");
    for e in &ok {
        reencode(e);
    }
    if !ok.is_empty() {
        set_round_trip(&ok);
    }
    let _ = differing_buckets(&EMPTY, data);

    let mut u = Unstructured::new(data);
    if let Ok(recs) = generated(&mut u) {
        let with_meta: Vec<bool> = recs.iter().map(|_| u.arbitrary().unwrap_or(true)).collect();
        round_trip(&recs, &with_meta);
    }
});
