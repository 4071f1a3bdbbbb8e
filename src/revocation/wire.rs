//! The compact binary forms anti-entropy moves between nodes (and the sync journal
//! keeps on disk, and the Redis snapshot holds): a set of entries is a run of `[scope u8][len u16 LE][target][not
//! before i64 LE][meta len u16 LE][meta]`, where meta is the revocation's id, reason,
//! actor, node and (when it has one) external id separated by 0x1F (empty when unknown). About 33 bytes for a session
//! id without meta, instead of ~200 for a JSON log line; decoding copies nothing.

use crate::clock::Micros;
use crate::revocation::meta::MetaIndex;
use crate::revocation::set::{BUCKETS, RevocationSet, bucket_of};
use crate::revocation::{RevocationRecord, Scope};

pub const ENTRIES_MAGIC: &[u8; 4] = b"PCE2";
/// Separates the fields of an entry's meta.
const SEP: char = '\u{1f}';
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
    #[error("malformed meta at byte {0}")]
    Meta(usize),
}

/// One decoded entry; `meta` borrows from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub scope: Scope,
    pub target: &'a str,
    pub nb: Micros,
    /// id, reason, actor, node, external id ("" when none).
    pub meta: Option<[&'a str; 5]>,
}

impl Entry<'_> {
    /// The full record, when the entry carries its meta.
    pub fn record(&self) -> Option<RevocationRecord> {
        let [id, reason, actor, node, external_id] = self.meta?;
        Some(RevocationRecord {
            id: id.into(),
            scope: self.scope,
            target: self.target.into(),
            not_before_us: self.nb,
            reason: reason.into(),
            actor: actor.into(),
            node: node.into(),
            external_id: (!external_id.is_empty()).then(|| external_id.into()),
        })
    }
}

fn scope_byte(s: Scope) -> u8 {
    s as u8
}

fn scope_of(b: u8) -> Option<Scope> {
    Scope::ALL.into_iter().find(|s| *s as u8 == b)
}

/// Appends one entry (no header), with the record's meta when given.
pub fn put_entry(
    buf: &mut Vec<u8>,
    scope: Scope,
    target: &str,
    nb: Micros,
    rec: Option<&RevocationRecord>,
) {
    // (Cut, if ever, on a character boundary too: the decoder wants UTF-8.)
    let t = &target.as_bytes()[..target.floor_char_boundary(MAX_TARGET_BYTES)];
    buf.push(scope_byte(scope));
    buf.extend_from_slice(&(t.len() as u16).to_le_bytes());
    buf.extend_from_slice(t);
    buf.extend_from_slice(&nb.to_le_bytes());
    let len_at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    if let Some(r) = rec {
        let mut fields = vec![&r.id, &r.reason, &r.actor, &r.node];
        fields.extend(r.external_id.as_ref());
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                buf.push(SEP as u8);
            }
            put_field(buf, f);
        }
        let n = (buf.len() - len_at - 2).min(MAX_TARGET_BYTES);
        buf.truncate(len_at + 2 + n);
        buf[len_at..len_at + 2].copy_from_slice(&(n as u16).to_le_bytes());
    }
}

/// At most this many bytes of each meta field go on the wire.
const MAX_META_FIELD: usize = 1024;

/// Appends one meta field: without separators (one inside would shift the others), cut
/// to [`MAX_META_FIELD`] bytes on a character boundary so that it stays UTF-8 (cut
/// inside a character, the entry would not decode: found by `fuzz/` sync_wire).
fn put_field(buf: &mut Vec<u8>, field: &str) {
    let mut room = MAX_META_FIELD;
    for c in field.chars().filter(|&c| c != SEP) {
        let Some(left) = room.checked_sub(c.len_utf8()) else {
            break;
        };
        room = left;
        buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

/// The entries of `set` (all of them, or those in the buckets `want` marks) with the
/// header: magic, then the entry count.
pub fn encode_set(set: &RevocationSet, meta: &MetaIndex, want: Option<&[bool]>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + set.len() * 36);
    buf.extend_from_slice(ENTRIES_MAGIC);
    buf.extend_from_slice(&0u64.to_le_bytes());
    let mut n = 0u64;
    let with_meta = !meta.is_empty();
    set.for_each(|scope, target, nb| {
        if want.is_none_or(|w| w[bucket_of(scope, target)]) {
            let rec = if with_meta {
                meta.get(scope, target, nb)
            } else {
                None
            };
            put_entry(&mut buf, scope, target, nb, rec.as_deref());
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

impl<'a> Entries<'a> {
    /// Like `next`, with the entry's own bytes (to copy it on without re-encoding).
    pub fn next_raw(&mut self) -> Option<Result<(Entry<'a>, &'a [u8]), WireError>> {
        let start = self.pos;
        let data = self.data;
        self.next().map(|r| r.map(|e| (e, &data[start..self.pos])))
    }

    fn fail(&mut self, e: WireError) -> Option<Result<Entry<'a>, WireError>> {
        self.pos = self.data.len();
        Some(Err(e))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, WireError>;
    fn next(&mut self) -> Option<Self::Item> {
        let d = self.data;
        let p = self.pos;
        if p >= d.len() {
            return None;
        }
        if d.len() < p + 3 {
            return self.fail(WireError::Truncated(p));
        }
        let Some(scope) = scope_of(d[p]) else {
            return self.fail(WireError::Scope(d[p]));
        };
        let len = u16::from_le_bytes([d[p + 1], d[p + 2]]) as usize;
        let nb_at = p + 3 + len;
        let meta_at = nb_at + 8;
        if d.len() < meta_at + 2 {
            return self.fail(WireError::Truncated(p));
        }
        let Ok(target) = std::str::from_utf8(&d[p + 3..nb_at]) else {
            return self.fail(WireError::Utf8(p));
        };
        let mut nb = [0u8; 8];
        nb.copy_from_slice(&d[nb_at..meta_at]);
        let mlen = u16::from_le_bytes([d[meta_at], d[meta_at + 1]]) as usize;
        let end = meta_at + 2 + mlen;
        if d.len() < end {
            return self.fail(WireError::Truncated(p));
        }
        let meta = match parse_meta(&d[meta_at + 2..end]) {
            Ok(m) => m,
            Err(()) => return self.fail(WireError::Meta(p)),
        };
        self.pos = end;
        Some(Ok(Entry {
            scope,
            target,
            nb: i64::from_le_bytes(nb),
            meta,
        }))
    }
}

/// Four fields, or five with an external id.
fn parse_meta(raw: &[u8]) -> Result<Option<[&str; 5]>, ()> {
    if raw.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(raw).map_err(|_| ())?;
    let mut parts = text.split(SEP);
    let mut out = [""; 5];
    for slot in &mut out[..4] {
        *slot = parts.next().ok_or(())?;
    }
    out[4] = parts.next().unwrap_or("");
    if parts.next().is_some() {
        return Err(());
    }
    Ok(Some(out))
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
        let meta = MetaIndex::default();
        let rec = RevocationRecord {
            id: "id1".into(),
            scope: Scope::User,
            target: "u@x.com".into(),
            not_before_us: 20,
            reason: "offboarding".into(),
            actor: "ops".into(),
            node: "n1".into(),
            external_id: None,
        };
        meta.insert(rec.clone());
        let hooked = RevocationRecord {
            id: "id2".into(),
            scope: Scope::Group,
            target: "ünïcode".into(),
            not_before_us: 7,
            reason: "siem".into(),
            actor: "hook:splunk".into(),
            node: "n1".into(),
            external_id: Some("alert-42".into()),
        };
        meta.insert(hooked.clone());
        let enc = encode_set(&a, &meta, None);
        let (n, body) = entries_body(&enc).unwrap();
        assert_eq!(n, 4);
        let b = RevocationSet::new();
        let mut records = Vec::new();
        for e in Entries::new(body) {
            let e = e.unwrap();
            b.apply(e.scope, e.target, e.nb);
            records.extend(e.record());
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(records, vec![rec, hooked]);
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
        let part = encode_set(&b, &MetaIndex::default(), Some(&diff));
        assert_eq!(entries_body(&part).unwrap().0, 1);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(entries_body(b"nope").is_err());
        assert!(entries_body(b"XXXX\0\0\0\0\0\0\0\0").is_err());
        for junk in [
            &b"\x09\x01\x00a"[..],
            b"\x00\xff\xffab",
            b"\x00\x02\x00\xff\xfe12345678\x00\x00",
            b"\x00\x01\x00a12345678\x03\x00a\x1fb",
            b"\x00\x01\x00a12345678",
        ] {
            let r: Vec<_> = Entries::new(junk).collect();
            assert_eq!(r.len(), 1);
            assert!(r[0].is_err());
        }
        let set = RevocationSet::new();
        assert!(differing_buckets(&set, b"PCB1").is_err());
    }
}
