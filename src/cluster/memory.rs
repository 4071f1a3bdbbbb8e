//! Cluster state held in this process: the single-use markers and failure times, with
//! their expiry. The peer backend keeps one per node and pushes changes to the others.
//! Both maps grow with client input (codes, states, token ids; emails and addresses
//! that failed a sign-in), so each holds at most a configured number of keys.

use crate::clock::Micros;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Failure times kept per key at most (older ones matter no more than the limit).
const MAX_TIMES: usize = 256;
/// Keys kept at most per map when no bound is given (`[limits] max_single_use`,
/// `max_throttle_keys`).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

pub struct Memory {
    claims: DashMap<String, Micros>,
    failures: DashMap<String, Vec<Micros>>,
    max_claims: usize,
    max_failures: usize,
    claims_refused: AtomicU64,
    failures_dropped: AtomicU64,
}

/// The outcome of [`Memory::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now marked.
    First,
    /// The key is marked already.
    Used,
    /// The map is full of live markers: nothing was marked.
    Full,
}

/// What the maps hold and what their bounds cost, for the metrics page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    pub claims: usize,
    pub failures: usize,
    /// New single-use markers refused because the map was full of live ones.
    pub claims_refused: u64,
    /// Failure histories dropped to make room.
    pub failures_dropped: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Self::bounded(DEFAULT_MAX_KEYS, DEFAULT_MAX_KEYS)
    }
}

impl Memory {
    /// Keeps at most `max_claims` single-use markers and `max_failures` failure
    /// histories.
    pub fn bounded(max_claims: usize, max_failures: usize) -> Self {
        Self {
            claims: DashMap::new(),
            failures: DashMap::new(),
            max_claims: max_claims.max(1),
            max_failures: max_failures.max(2),
            claims_refused: AtomicU64::new(0),
            failures_dropped: AtomicU64::new(0),
        }
    }

    /// Marks `key` used until `until`. When the map is full of live markers a new one
    /// is refused ([`Claim::Full`], neither used nor granted): forgetting a live marker
    /// would let a code or token be used twice, and calling a new key used would
    /// drop a first delivery as a repeat.
    pub fn claim(&self, key: &str, now: Micros, until: Micros) -> Claim {
        if self.claims.len() >= self.max_claims {
            self.claims.retain(|_, until| *until > now);
            if self.claims.len() >= self.max_claims && !self.claims.contains_key(key) {
                self.claims_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    keys = self.claims.len(),
                    "single-use markers full; refusing a new one"
                );
                return Claim::Full;
            }
        }
        match self.claims.entry(key.to_string()) {
            dashmap::Entry::Occupied(mut e) if *e.get() <= now => {
                e.insert(until);
                Claim::First
            }
            dashmap::Entry::Occupied(_) => Claim::Used,
            dashmap::Entry::Vacant(e) => {
                e.insert(until);
                Claim::First
            }
        }
    }

    /// Records a failure for `key`. When the map is full after forgetting old
    /// failures, the half of the keys whose last failure is oldest is dropped.
    pub fn record_failure(&self, key: &str, at: Micros, window: Micros) {
        if self.failures.len() >= self.max_failures && !self.failures.contains_key(key) {
            self.failures
                .retain(|_, v| v.iter().any(|&t| t > at - window));
            if self.failures.len() >= self.max_failures {
                self.drop_oldest_failures();
            }
        }
        let mut v = self.failures.entry(key.to_string()).or_default();
        v.retain(|&t| t > at - window);
        if v.len() >= MAX_TIMES {
            v.remove(0);
        }
        let pos = v.partition_point(|&t| t <= at);
        v.insert(pos, at);
    }

    pub fn failures(&self, key: &str, now: Micros, window: Micros) -> Vec<Micros> {
        self.failures
            .get(key)
            .map(|v| v.iter().copied().filter(|&t| t > now - window).collect())
            .unwrap_or_default()
    }

    pub fn clear_failures(&self, key: &str) {
        self.failures.remove(key);
    }

    fn drop_oldest_failures(&self) {
        let mut last: Vec<Micros> = self
            .failures
            .iter()
            .map(|e| e.value().last().copied().unwrap_or(Micros::MIN))
            .collect();
        let mid = last.len() / 2;
        let (_, cut, _) = last.select_nth_unstable(mid);
        let cut = *cut;
        let before = self.failures.len();
        self.failures
            .retain(|_, v| v.last().copied().unwrap_or(Micros::MIN) > cut);
        let dropped = before.saturating_sub(self.failures.len());
        self.failures_dropped
            .fetch_add(dropped as u64, Ordering::Relaxed);
        tracing::warn!(
            dropped,
            "sign-in failure histories full; dropped the oldest"
        );
    }

    /// Keys held and what the bounds refused or dropped.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            claims: self.claims.len(),
            failures: self.failures.len(),
            claims_refused: self.claims_refused.load(Ordering::Relaxed),
            failures_dropped: self.failures_dropped.load(Ordering::Relaxed),
        }
    }

    /// Forgets expired markers and failures older than `window`.
    pub fn sweep(&self, now: Micros, window: Micros) {
        self.claims.retain(|_, until| *until > now);
        self.failures
            .retain(|_, v| v.iter().any(|&t| t > now - window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_once_until_expiry() {
        let m = Memory::default();
        assert_eq!(m.claim("k", 0, 10), Claim::First);
        assert_eq!(m.claim("k", 5, 15), Claim::Used);
        assert_eq!(
            m.claim("k", 10, 20),
            Claim::First,
            "expired markers can be claimed again"
        );
    }

    #[test]
    fn failures_stay_ordered_and_slide() {
        let m = Memory::default();
        m.record_failure("u", 30, 100);
        m.record_failure("u", 10, 100);
        m.record_failure("u", 20, 100);
        assert_eq!(m.failures("u", 50, 100), vec![10, 20, 30]);
        assert_eq!(m.failures("u", 115, 100), vec![20, 30]);
        m.clear_failures("u");
        assert!(m.failures("u", 50, 100).is_empty());
    }

    #[test]
    fn full_claims_refuse_new_markers_but_never_forget_live_ones() {
        let m = Memory::bounded(4, 4);
        for k in ["a", "b", "c", "d"] {
            assert_eq!(m.claim(k, 0, 100), Claim::First);
        }
        assert_eq!(
            m.claim("e", 10, 100),
            Claim::Full,
            "full of live markers: refused"
        );
        assert_eq!(
            m.claim("a", 10, 100),
            Claim::Used,
            "a live marker is still used"
        );
        assert_eq!(
            m.claim("e", 100, 200),
            Claim::First,
            "expired ones make room"
        );
        assert_eq!(m.stats().claims, 1);
        assert_eq!(m.stats().claims_refused, 1);
    }

    #[test]
    fn full_failures_drop_the_least_recent_keys() {
        let m = Memory::bounded(10, 10);
        for i in 0..10 {
            m.record_failure(&format!("k{i}"), 1000 + i, 10_000);
        }
        m.record_failure("new", 2000, 10_000);
        let n = m.stats().failures;
        assert!(n <= 10, "{n}");
        assert_eq!(m.failures("new", 2000, 10_000), vec![2000]);
        assert_eq!(
            m.failures("k9", 2000, 10_000),
            vec![1009],
            "recent keys stay"
        );
        assert!(m.failures("k0", 2000, 10_000).is_empty(), "the oldest went");
        for i in 0..1000 {
            m.record_failure(&format!("flood{i}"), 3000 + i, 10_000);
        }
        assert!(m.stats().failures <= 10);
        assert!(m.stats().failures_dropped >= 1000);
    }
}
