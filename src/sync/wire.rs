//! The compact binary forms anti-entropy moves between nodes (and the sync journal
//! keeps on disk): a set of entries is a run of `[scope u8][len u16 LE][target][not
//! before i64 LE]`, about 33 bytes for a session id instead of ~200 for a JSON log line;
//! encoding and decoding copy bytes and allocate nothing per entry.

use crate::clock::Micros;
use crate::revocation::Scope;
use crate::revocation::set::{BUCKETS, RevocationSet, bucket_of};

pub const ENTRIES_MAGIC: &[u8; 4] = b"PCE1";
pub const BUCKETS_MAGIC: &[u8; 4] = b"PCB1";
pub const MAX_TARGET_BYTES: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("bad magic")]
    Magic,
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown scope {0}")]
    Scope(u8),
    #[error("target is not UTF-8 at byte {0}")]
    Utf8(usize),
    #[error("expected {want} entries, found {got}")]
    Count { want: u64, got: u64 },
}

fn scope_byte(s: Scope) -> u8 {
    s as u8
}

fn scope_of(b: u8) -> Option<Scope> {
    Scope::ALL.into_iter().find(|s| *s as u8 == b)
}

/// Appends one entry (no header).
pub fn put_entry(buf: &mut Vec<u8>, scope: Scope, target: &str, nb: Micros) {
    let t = &target.as_bytes()[..target.len().min(MAX_TARGET_BYTES)];
    buf.push(scope_byte(scope));
    buf.extend_from_slice(&(t.len() as u16).to_le_bytes());
    buf.extend_from_slice(t);
    buf.extend_from_slice(&nb.to_le_bytes());
}

/// The entries of `set` (all of them, or those in the buckets `want` marks) with the
/// header: magic, then the entry count.
pub fn encode_set(set: &RevocationSet, want: Option<&[bool]>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + set.len() * 34);
    buf.extend_from_slice(ENTRIES_MAGIC);
    buf.extend_from_slice(&0u64.to_le_bytes());
    let mut n = 0u64;
    set.for_each(|scope, target, nb| {
        if want.is_none_or(|w| w[bucket_of(scope, target)]) {
            put_entry(&mut buf, scope, target, nb);
            n += 1;
        }
    });
    buf[4..12].copy_from_slice(&n.to_le_bytes());
    buf
}

/// Walks a run of entries without a header.
pub struct Entries<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Entries<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(Scope, &'a str, Micros), WireError>;
    fn next(&mut self) -> Option<Self::Item> {
        let d = self.data;
        let p = self.pos;
        if p >= d.len() {
            return None;
        }
        let bad = |e| Some(Err(e));
        if d.len() < p + 3 {
            self.pos = d.len();
            return bad(WireError::Truncated(p));
        }
        let Some(scope) = scope_of(d[p]) else {
            self.pos = d.len();
            return bad(WireError::Scope(d[p]));
        };
        let len = u16::from_le_bytes([d[p + 1], d[p + 2]]) as usize;
        let end = p + 3 + len + 8;
        if d.len() < end {
            self.pos = d.len();
            return bad(WireError::Truncated(p));
        }
        let Ok(target) = std::str::from_utf8(&d[p + 3..p + 3 + len]) else {
            self.pos = d.len();
            return bad(WireError::Utf8(p));
        };
        let mut nb = [0u8; 8];
        nb.copy_from_slice(&d[p + 3 + len..end]);
        self.pos = end;
        Some(Ok((scope, target, i64::from_le_bytes(nb))))
    }
}

/// Checks the header of an entries message and returns (count, the entries' bytes).
pub fn entries_body(data: &[u8]) -> Result<(u64, &[u8]), WireError> {
    if data.len() < 12 {
        return Err(WireError::Truncated(data.len()));
    }
    if &data[..4] != ENTRIES_MAGIC {
        return Err(WireError::Magic);
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[4..12]);
    Ok((u64::from_le_bytes(n), &data[12..]))
}

/// Bucket digests: magic, bucket count (u32), entry count (u64), 16 bytes per bucket.
pub fn encode_buckets(set: &RevocationSet) -> Vec<u8> {
    let digests = set.bucket_digests();
    let mut buf = Vec::with_capacity(16 + digests.len() * 16);
    buf.extend_from_slice(BUCKETS_MAGIC);
    buf.extend_from_slice(&(digests.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(set.len() as u64).to_le_bytes());
    for [a, b] in digests {
        buf.extend_from_slice(&a.to_le_bytes());
        buf.extend_from_slice(&b.to_le_bytes());
    }
    buf
}

/// Which buckets differ between a peer's digests (as encoded) and `set`.
pub fn differing_buckets(set: &RevocationSet, theirs: &[u8]) -> Result<Vec<bool>, WireError> {
    if theirs.len() < 16 || &theirs[..4] != BUCKETS_MAGIC {
        return Err(WireError::Magic);
    }
    let n = u32::from_le_bytes([theirs[4], theirs[5], theirs[6], theirs[7]]) as usize;
    if n != BUCKETS || theirs.len() != 16 + n * 16 {
        return Err(WireError::Truncated(theirs.len()));
    }
    let ours = set.bucket_digests();
    Ok(ours
        .iter()
        .enumerate()
        .map(|(i, [a, b])| {
            let o = 16 + i * 16;
            let mut x = [0u8; 8];
            let mut y = [0u8; 8];
            x.copy_from_slice(&theirs[o..o + 8]);
            y.copy_from_slice(&theirs[o + 8..o + 16]);
            u64::from_le_bytes(x) != *a || u64::from_le_bytes(y) != *b
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_buckets() {
        let a = RevocationSet::new();
        a.apply(Scope::Session, "s1", 10);
        a.apply(Scope::User, "u@x.com", 20);
        a.apply(Scope::All, "*", 5);
        a.apply(Scope::Group, "ünïcode", 7);
        let enc = encode_set(&a, None);
        let (n, body) = entries_body(&enc).unwrap();
        assert_eq!(n, 4);
        let b = RevocationSet::new();
        for e in Entries::new(body) {
            let (s, t, nb) = e.unwrap();
            b.apply(s, t, nb);
        }
        assert_eq!(a.digest(), b.digest());
        assert!(
            !differing_buckets(&a, &encode_buckets(&b))
                .unwrap()
                .contains(&true)
        );
        b.apply(Scope::Session, "s2", 1);
        let diff = differing_buckets(&a, &encode_buckets(&b)).unwrap();
        assert_eq!(diff.iter().filter(|d| **d).count(), 1);
        assert!(diff[bucket_of(Scope::Session, "s2")]);
        // Only the differing bucket travels.
        let part = encode_set(&b, Some(&diff));
        assert_eq!(entries_body(&part).unwrap().0, 1);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(entries_body(b"nope").is_err());
        assert!(entries_body(b"XXXX\0\0\0\0\0\0\0\0").is_err());
        for junk in [
            &b"\x09\x01\x00a"[..],
            b"\x00\xff\xffab",
            b"\x00\x02\x00\xff\xfe12345678",
        ] {
            let r: Vec<_> = Entries::new(junk).collect();
            assert_eq!(r.len(), 1);
            assert!(r[0].is_err());
        }
        let set = RevocationSet::new();
        assert!(differing_buckets(&set, b"PCB1").is_err());
    }
}
