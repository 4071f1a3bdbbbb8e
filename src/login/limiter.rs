//! Failed-login limits per user and per client address, over a sliding window.

use crate::clock::Micros;
use dashmap::DashMap;

#[derive(Default)]
pub struct Limiter {
    failures: DashMap<String, Vec<Micros>>,
}

impl Limiter {
    /// Seconds to wait when `key` already has `max` failures inside `window`.
    pub fn blocked_for(&self, key: &str, max: u32, now: Micros, window: Micros) -> Option<u64> {
        let v = self.failures.get(key)?;
        let recent: Vec<Micros> = v.iter().copied().filter(|&t| t > now - window).collect();
        if recent.len() < max as usize {
            return None;
        }
        // Free again when the oldest failure that still counts leaves the window.
        let idx = recent.len() - max as usize;
        let until = recent[idx] + window;
        Some(((until - now).max(0) as u64).div_ceil(1_000_000).max(1))
    }

    pub fn record_failure(&self, key: &str, now: Micros, window: Micros) {
        let mut v = self.failures.entry(key.to_string()).or_default();
        v.retain(|&t| t > now - window);
        // Bound memory per key; older failures matter no more than the limit.
        if v.len() >= 256 {
            v.remove(0);
        }
        v.push(now);
    }

    pub fn clear(&self, key: &str) {
        self.failures.remove(key);
    }

    /// Forget keys with no failure inside the window.
    pub fn sweep(&self, now: Micros, window: Micros) {
        self.failures
            .retain(|_, v| v.iter().any(|&t| t > now - window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_and_frees_after_window() {
        let l = Limiter::default();
        let w = 60_000_000;
        for i in 0..3 {
            assert!(l.blocked_for("u", 3, i, w).is_none());
            l.record_failure("u", i, w);
        }
        assert!(l.blocked_for("u", 3, 10, w).is_some());
        assert!(l.blocked_for("u", 3, w + 1, w).is_none());
    }
}
