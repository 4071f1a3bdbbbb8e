//! Cluster state held in this process: the single-use markers and failure times, with
//! their expiry. The peer backend keeps one per node and pushes changes to the others.

use crate::clock::Micros;
use dashmap::DashMap;

/// Failure times kept per key at most (older ones matter no more than the limit).
const MAX_TIMES: usize = 256;
/// Keys kept at most per map, so hostile input cannot grow them without bound; past it
/// the oldest-expiring half is dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Default)]
pub struct Memory {
    claims: DashMap<String, Micros>,
    failures: DashMap<String, Vec<Micros>>,
}

impl Memory {
    /// Marks `key` used until `until`; false when it already was.
    pub fn claim(&self, key: &str, now: Micros, until: Micros) -> bool {
        if self.claims.len() >= MAX_KEYS {
            self.sweep(now, 0);
        }
        match self.claims.entry(key.to_string()) {
            dashmap::Entry::Occupied(mut e) if *e.get() <= now => {
                e.insert(until);
                true
            }
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(e) => {
                e.insert(until);
                true
            }
        }
    }

    pub fn record_failure(&self, key: &str, at: Micros, window: Micros) {
        if self.failures.len() >= MAX_KEYS {
            self.sweep(at, window);
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
        assert!(m.claim("k", 0, 10));
        assert!(!m.claim("k", 5, 15));
        assert!(m.claim("k", 10, 20), "expired markers can be claimed again");
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
}
