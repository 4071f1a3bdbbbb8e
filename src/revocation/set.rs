//! The revocation set: for each (scope, target) the latest "not valid before" instant.
//! A token is refused when any entry matching it is later than or equal to its issue
//! time. Merging keeps the maximum, so applying entries in any order, any number of
//! times, gives the same set (a join-semilattice: that is why nodes converge).

use super::{ANY_GROUP, MEMBER_SEP, Scope, split_member};
use crate::clock::Micros;
use crate::session::token::Subject;
use dashmap::DashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

// foldhash: a keyed (per-process random seed) hasher several times faster than SipHash on
// short keys; the check does four or more lookups per request.
type Map = DashMap<Box<str>, Micros, foldhash::fast::RandomState>;

/// Bits in the presence filter: 16 Mi bits (2 MiB). At a million entries about one key
/// in sixteen is a false positive, which only costs the map lookup it would have done.
const FILTER_BITS: usize = 1 << 24;

/// A one-hash Bloom filter over every (scope, target) in the maps. Most tokens match no
/// entry, so the check answers from a few bit tests and touches no map, no lock.
struct Filter {
    words: Box<[AtomicU64]>,
}

impl Filter {
    fn new() -> Self {
        Self {
            words: (0..FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn mark(&self, h: u64) {
        let bit = h as usize & (FILTER_BITS - 1);
        self.words[bit / 64].fetch_or(1 << (bit % 64), Ordering::SeqCst);
    }
    fn may_contain(&self, h: u64) -> bool {
        let bit = h as usize & (FILTER_BITS - 1);
        self.words[bit / 64].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
    }
}

pub struct RevocationSet {
    all: AtomicI64,
    sessions: Map,
    users: Map,
    groups: Map,
    apps: Map,
    /// `member` entries, keyed `<email>:<group>`.
    members: Map,
    /// Whether any `member` entry was ever added: until then the check skips them.
    has_members: std::sync::atomic::AtomicBool,
    /// Bumped on every change; long-lived connections wait on it to re-check.
    version: tokio::sync::watch::Sender<u64>,
    changes: AtomicU64,
    /// Order-independent digest of every (scope, target, instant): XOR of entry hashes,
    /// kept up to date on each change so peers can compare sets cheaply.
    digest: [AtomicU64; 2],
    /// The same digest per bucket of keys (see [`bucket_of`]), so peers whose sets
    /// differ find which buckets to exchange instead of the whole set.
    buckets: Box<[[AtomicU64; 2]]>,
    /// The presence filter, and during a rebuild (after pruning) the one replacing it:
    /// writers mark both, so no key is ever missing from the filter readers use.
    filter: arc_swap::ArcSwap<Filter>,
    next_filter: arc_swap::ArcSwapOption<Filter>,
    rebuild: std::sync::Mutex<()>,
    hasher: foldhash::fast::RandomState,
}

/// Number of digest buckets (a power of two).
pub const BUCKETS: usize = 4096;

/// The digest bucket of a key: depends on the key only, so an entry stays in its
/// bucket when its instant moves forward.
pub fn bucket_of(scope: Scope, target: &str) -> usize {
    let mut h = crc32fast::Hasher::new();
    h.update(&[scope as u8]);
    h.update(target.as_bytes());
    h.finalize() as usize & (BUCKETS - 1)
}

/// A keyed-by-nothing 128-bit hash of one entry (SHA-256, truncated).
pub fn entry_hash(scope: Scope, target: &str, nb: Micros) -> [u64; 2] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([scope as u8]);
    h.update(target.as_bytes());
    h.update(nb.to_le_bytes());
    let d = h.finalize();
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&d[..8]);
    b.copy_from_slice(&d[8..16]);
    [u64::from_le_bytes(a), u64::from_le_bytes(b)]
}

impl Default for RevocationSet {
    fn default() -> Self {
        Self::new()
    }
}

impl RevocationSet {
    pub fn new() -> Self {
        Self {
            all: AtomicI64::new(i64::MIN),
            sessions: Map::default(),
            users: Map::default(),
            groups: Map::default(),
            apps: Map::default(),
            members: Map::default(),
            has_members: std::sync::atomic::AtomicBool::new(false),
            version: tokio::sync::watch::Sender::new(0),
            changes: AtomicU64::new(0),
            digest: [AtomicU64::new(0), AtomicU64::new(0)],
            buckets: (0..BUCKETS)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            filter: arc_swap::ArcSwap::from_pointee(Filter::new()),
            next_filter: arc_swap::ArcSwapOption::empty(),
            rebuild: std::sync::Mutex::new(()),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn key_hash(&self, scope: Scope, target: &str) -> u64 {
        use std::hash::BuildHasher;
        if scope == Scope::Member
            && let Some((email, group)) = split_member(target)
        {
            return self.member_hash(email, group);
        }
        self.hasher.hash_one((scope as u8, target))
    }

    /// The filter hash of a `member` key from its parts, so the check hashes a token's
    /// (subject, group) pairs without building the key.
    fn member_hash(&self, email: &str, group: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((Scope::Member as u8, email, group))
    }

    /// Marks a key present, in the live filter and in one being rebuilt. Called after
    /// the map insert, so a rebuild that scanned the map before the insert still gets it.
    fn mark(&self, scope: Scope, target: &str) {
        let h = self.key_hash(scope, target);
        self.filter.load().mark(h);
        if let Some(next) = self.next_filter.load().as_ref() {
            next.mark(h);
        }
    }

    fn toggle(&self, scope: Scope, target: &str, nb: Micros) {
        let [a, b] = entry_hash(scope, target, nb);
        self.digest[0].fetch_xor(a, Ordering::SeqCst);
        self.digest[1].fetch_xor(b, Ordering::SeqCst);
        let bucket = &self.buckets[bucket_of(scope, target)];
        bucket[0].fetch_xor(a, Ordering::SeqCst);
        bucket[1].fetch_xor(b, Ordering::SeqCst);
    }

    /// The digest of each bucket ([`BUCKETS`] of them), for anti-entropy.
    pub fn bucket_digests(&self) -> Vec<[u64; 2]> {
        self.buckets
            .iter()
            .map(|b| [b[0].load(Ordering::SeqCst), b[1].load(Ordering::SeqCst)])
            .collect()
    }

    /// The set's digest as 32 hex digits; equal sets have equal digests.
    pub fn digest(&self) -> String {
        format!(
            "{:016x}{:016x}",
            self.digest[0].load(Ordering::SeqCst),
            self.digest[1].load(Ordering::SeqCst)
        )
    }

    fn map(&self, scope: Scope) -> Option<&Map> {
        match scope {
            Scope::Session => Some(&self.sessions),
            Scope::User => Some(&self.users),
            Scope::Group => Some(&self.groups),
            Scope::App => Some(&self.apps),
            Scope::Member => Some(&self.members),
            Scope::All => None,
        }
    }

    /// Merges one entry; returns true when it moved the set forward.
    pub fn apply(&self, scope: Scope, target: &str, not_before: Micros) -> bool {
        let changed = self.merge(scope, target, not_before, &mut |s, t, nb| {
            self.toggle(s, t, nb)
        });
        if changed {
            let n = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
            self.version.send_replace(n);
        }
        changed
    }

    /// Merges many entries (a catch-up from a peer): the same result as [`Self::apply`]
    /// on each, but the digests are updated and watchers woken once for the batch, so
    /// threads applying batches side by side do not fight over shared counters.
    /// Returns how many entries moved the set forward.
    pub fn apply_batch<'a>(
        &self,
        entries: impl IntoIterator<Item = (Scope, &'a str, Micros)>,
    ) -> usize {
        let mut digest = [0u64; 2];
        let mut buckets = vec![[0u64; 2]; BUCKETS];
        let mut toggle = |scope: Scope, target: &str, nb: Micros| {
            let [a, b] = entry_hash(scope, target, nb);
            digest[0] ^= a;
            digest[1] ^= b;
            let k = &mut buckets[bucket_of(scope, target)];
            k[0] ^= a;
            k[1] ^= b;
        };
        let mut moved = 0;
        for (scope, target, nb) in entries {
            if self.merge(scope, target, nb, &mut toggle) {
                moved += 1;
            }
        }
        self.digest[0].fetch_xor(digest[0], Ordering::SeqCst);
        self.digest[1].fetch_xor(digest[1], Ordering::SeqCst);
        for (k, [a, b]) in buckets.into_iter().enumerate() {
            if a | b != 0 {
                self.buckets[k][0].fetch_xor(a, Ordering::SeqCst);
                self.buckets[k][1].fetch_xor(b, Ordering::SeqCst);
            }
        }
        if moved > 0 {
            let n = self.changes.fetch_add(moved as u64, Ordering::SeqCst) + moved as u64;
            self.version.send_replace(n);
        }
        moved
    }

    /// The merge itself; `toggle` is told every (scope, target, instant) that enters or
    /// leaves the set.
    fn merge(
        &self,
        scope: Scope,
        target: &str,
        not_before: Micros,
        toggle: &mut impl FnMut(Scope, &str, Micros),
    ) -> bool {
        use dashmap::mapref::entry::Entry;
        match self.map(scope) {
            None => {
                let prev = self.all.fetch_max(not_before, Ordering::SeqCst);
                if prev < not_before {
                    if prev != i64::MIN {
                        toggle(scope, "*", prev);
                    }
                    toggle(scope, "*", not_before);
                }
                prev < not_before
            }
            Some(map) => match map.entry(Box::from(target)) {
                Entry::Occupied(mut o) => {
                    let v = *o.get();
                    if v < not_before {
                        toggle(scope, target, v);
                        toggle(scope, target, not_before);
                        o.insert(not_before);
                        true
                    } else {
                        false
                    }
                }
                Entry::Vacant(e) => {
                    toggle(scope, target, not_before);
                    drop(e.insert(not_before));
                    self.mark(scope, target);
                    if scope == Scope::Member {
                        self.has_members.store(true, Ordering::SeqCst);
                    }
                    true
                }
            },
        }
    }

    /// The entry for one key, if any.
    pub fn get(&self, scope: Scope, target: &str) -> Option<Micros> {
        match self.map(scope) {
            None => {
                let v = self.all.load(Ordering::Acquire);
                (v != i64::MIN).then_some(v)
            }
            Some(map) => map.get(target).map(|v| *v),
        }
    }

    /// Whether a global session created at `created_us` is over: a session, user, group
    /// or `all` revocation at or after its creation covers it.
    pub fn revokes_session(
        &self,
        sid: &str,
        user: &str,
        groups: &[String],
        created_us: Micros,
    ) -> bool {
        let covers =
            |scope: Scope, key: &str| self.get(scope, key).is_some_and(|nb| nb >= created_us);
        covers(Scope::All, "*")
            || covers(Scope::Session, sid)
            || covers(Scope::User, user)
            || groups.iter().any(|g| covers(Scope::Group, g))
    }

    /// Which scope, if any, revokes a token with these claims. `app` says whether the
    /// token is an application token (the `app` scope matches its audience).
    pub fn check(&self, c: &impl Subject, app: bool) -> Option<Scope> {
        let iat = c.iat_us();
        if self.all.load(Ordering::Acquire) >= iat {
            return Some(Scope::All);
        }
        let filter = self.filter.load();
        let hit = |scope: Scope, m: &Map, k: &str| {
            filter.may_contain(self.key_hash(scope, k)) && m.get(k).is_some_and(|nb| *nb >= iat)
        };
        if hit(Scope::Session, &self.sessions, c.sid()) {
            return Some(Scope::Session);
        }
        if hit(Scope::User, &self.users, c.sub()) {
            return Some(Scope::User);
        }
        if app && hit(Scope::App, &self.apps, c.aud()) {
            return Some(Scope::App);
        }
        if c.groups()
            .iter()
            .any(|g| hit(Scope::Group, &self.groups, g))
        {
            return Some(Scope::Group);
        }
        if app && self.has_members.load(Ordering::Acquire) && self.member_hit(&filter, c) {
            return Some(Scope::Member);
        }
        None
    }

    /// Whether a `member` entry covers this app token: one for its subject and any of
    /// its groups, or for its subject and every group.
    fn member_hit(&self, filter: &Filter, c: &impl Subject) -> bool {
        let (sub, iat) = (c.sub(), c.iat_us());
        let hit = |group: &str| {
            filter.may_contain(self.member_hash(sub, group))
                && self
                    .members
                    .get(format!("{sub}{MEMBER_SEP}{group}").as_str())
                    .is_some_and(|nb| *nb >= iat)
        };
        hit(ANY_GROUP) || c.groups().iter().any(|g| hit(g))
    }

    /// Drops entries older than `horizon`: no token issued before it can still be alive.
    pub fn prune(&self, horizon: Micros) -> usize {
        let mut dropped = 0;
        for (scope, map) in [
            (Scope::Session, &self.sessions),
            (Scope::User, &self.users),
            (Scope::Group, &self.groups),
            (Scope::App, &self.apps),
            (Scope::Member, &self.members),
        ] {
            let before = map.len();
            map.retain(|k, nb| {
                let keep = *nb >= horizon;
                if !keep {
                    self.toggle(scope, k, *nb);
                }
                keep
            });
            dropped += before - map.len();
        }
        if dropped > 0 {
            self.rebuild_filter();
        }
        dropped
    }

    /// Replaces the filter with one holding only the keys still in the maps (a Bloom
    /// filter cannot forget). Writers mark the new filter too while it is being built.
    fn rebuild_filter(&self) {
        let _one_at_a_time = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = std::sync::Arc::new(Filter::new());
        self.next_filter.store(Some(fresh.clone()));
        for (scope, map) in [
            (Scope::Session, &self.sessions),
            (Scope::User, &self.users),
            (Scope::Group, &self.groups),
            (Scope::App, &self.apps),
            (Scope::Member, &self.members),
        ] {
            for e in map.iter() {
                fresh.mark(self.key_hash(scope, e.key()));
            }
        }
        self.filter.store(fresh);
        self.next_filter.store(None);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
            + self.users.len()
            + self.groups.len()
            + self.apps.len()
            + self.members.len()
            + usize::from(self.all.load(Ordering::Acquire) != i64::MIN)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len_by_scope(&self, scope: Scope) -> usize {
        match self.map(scope) {
            Some(m) => m.len(),
            None => usize::from(self.all.load(Ordering::Acquire) != i64::MIN),
        }
    }

    /// Every entry, for summaries and anti-entropy.
    pub fn entries(&self) -> Vec<(Scope, String, Micros)> {
        let mut out = Vec::with_capacity(self.len());
        for scope in Scope::ALL {
            match self.map(scope) {
                Some(m) => out.extend(m.iter().map(|e| (scope, e.key().to_string(), *e.value()))),
                None => {
                    if let Some(v) = self.get(Scope::All, "*") {
                        out.push((Scope::All, "*".to_string(), v));
                    }
                }
            }
        }
        out
    }

    /// Visits every entry without copying it (for snapshots and bulk transfers).
    pub fn for_each(&self, mut f: impl FnMut(Scope, &str, Micros)) {
        for scope in Scope::ALL {
            match self.map(scope) {
                Some(m) => m.iter().for_each(|e| f(scope, e.key(), *e.value())),
                None => {
                    if let Some(v) = self.get(Scope::All, "*") {
                        f(Scope::All, "*", v);
                    }
                }
            }
        }
    }

    /// Moves forward on every change that can revoke more tokens (never on pruning), so
    /// "not revoked at version v" stays true while the version is v.
    pub fn version(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::token::Claims;

    fn claims(iat_us: i64) -> Claims {
        Claims {
            iss: "i".into(),
            aud: "echo".into(),
            sub: "a@x.com".into(),
            email: "a@x.com".into(),
            groups: vec!["staff".into()],
            sid: "s1".into(),
            jti: "j".into(),
            iat: iat_us / 1_000_000,
            exp: iat_us / 1_000_000 + 60,
            nbf: None,
            iat_us,
            bnd: None,
        }
    }

    #[test]
    fn each_scope_matches_older_tokens_only() {
        for (scope, target) in [
            (Scope::Session, "s1"),
            (Scope::User, "a@x.com"),
            (Scope::Group, "staff"),
            (Scope::App, "echo"),
            (Scope::All, ""),
            (Scope::Member, "a@x.com:staff"),
        ] {
            let set = RevocationSet::new();
            set.apply(scope, target, 1_000_500);
            assert_eq!(set.check(&claims(1_000_400), true), Some(scope));
            // Same second, later microsecond: passes.
            assert_eq!(set.check(&claims(1_000_501), true), None);
        }
        let set = RevocationSet::new();
        set.apply(Scope::App, "echo", 10);
        assert_eq!(
            set.check(&claims(5), false),
            None,
            "app scope is for app tokens"
        );
    }

    #[test]
    fn member_entries_match_app_tokens_of_that_user_carrying_that_group() {
        let set = RevocationSet::new();
        assert_eq!(set.check(&claims(10), true), None);
        set.apply(Scope::Member, "a@x.com:staff", 100);
        assert_eq!(set.check(&claims(99), true), Some(Scope::Member));
        assert_eq!(set.check(&claims(101), true), None, "issued after");
        assert_eq!(set.check(&claims(99), false), None, "global sessions stay");
        let mut other = claims(99);
        other.groups = vec!["ops".into()];
        assert_eq!(set.check(&other, true), None, "without the group");
        other.sub = "b@x.com".into();
        other.groups = vec!["staff".into()];
        assert_eq!(set.check(&other, true), None, "another user");
        set.apply(Scope::Member, "b@x.com:*", 100);
        assert_eq!(set.check(&other, true), Some(Scope::Member), "every group");
        assert_eq!(set.len_by_scope(Scope::Member), 2);
        assert_eq!(set.prune(200), 2);
        assert_eq!(set.check(&claims(99), true), None);
    }

    #[test]
    fn merge_is_order_independent_and_idempotent() {
        let a = RevocationSet::new();
        let b = RevocationSet::new();
        let ops = [
            (Scope::User, "u", 5),
            (Scope::User, "u", 9),
            (Scope::User, "u", 7),
        ];
        for (s, t, v) in ops {
            a.apply(s, t, v);
            a.apply(s, t, v);
        }
        for (s, t, v) in ops.iter().rev() {
            b.apply(*s, t, *v);
        }
        assert_eq!(a.get(Scope::User, "u"), Some(9));
        assert_eq!(b.get(Scope::User, "u"), Some(9));
        assert!(!a.apply(Scope::User, "u", 8));
        assert_eq!(a.digest(), b.digest());
        a.apply(Scope::Session, "s", 3);
        assert_ne!(a.digest(), b.digest());
        a.prune(4);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.bucket_digests(), b.bucket_digests());
        // A batch gives the same set as one entry at a time.
        let c = RevocationSet::new();
        let batch = [
            (Scope::User, "u", 7),
            (Scope::User, "u", 9),
            (Scope::All, "*", 1),
            (Scope::All, "*", 2),
        ];
        assert_eq!(c.apply_batch(batch), 4);
        c.apply(Scope::User, "u", 5);
        a.apply(Scope::All, "*", 2);
        assert_eq!(c.digest(), a.digest());
        assert_eq!(c.bucket_digests(), a.bucket_digests());
        assert_eq!(c.apply_batch(batch), 0);
    }

    #[test]
    fn prune_drops_only_old_entries() {
        let set = RevocationSet::new();
        set.apply(Scope::Session, "old", 10);
        set.apply(Scope::Session, "new", 100);
        assert_eq!(set.prune(50), 1);
        assert_eq!(set.get(Scope::Session, "new"), Some(100));
        assert_eq!(set.get(Scope::Session, "old"), None);
    }

    #[test]
    fn filter_keeps_every_live_key_across_pruning() {
        let set = RevocationSet::new();
        for i in 0..2000 {
            set.apply(
                Scope::Session,
                &format!("s{i}"),
                if i % 2 == 0 { 10 } else { 1_000 },
            );
        }
        assert_eq!(set.prune(500), 1000);
        set.apply(Scope::Session, "late", 2_000);
        let mut c = claims(900);
        for i in (1..2000).step_by(2) {
            c.sid = format!("s{i}");
            assert_eq!(set.check(&c, true), Some(Scope::Session), "{}", c.sid);
        }
        c.sid = "late".into();
        assert_eq!(set.check(&c, true), Some(Scope::Session));
        c.sid = "s0".into();
        assert_eq!(set.check(&c, true), None, "pruned keys no longer match");
    }
}
