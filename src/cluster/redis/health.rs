//! What metrics and `/readyz` say about the Redis backend: connected or not, how often
//! it reconnected, the last stream entry this node applied, and how far behind the
//! stream that is. Every call and the tail report here; reading it never touches Redis.

use super::StreamId;
use crate::clock::{Clock, Micros};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A point-in-time copy of the backend's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The last exchange with Redis (a call or a tail read) succeeded.
    pub connected: bool,
    /// Times a connection came back after being lost.
    pub reconnects: u64,
    /// The newest stream entry the consumer took from the tail, and when.
    pub last_applied: Option<StreamId>,
    pub last_applied_at_us: Option<Micros>,
    /// The newest stream entry the tail knows exists.
    pub stream_tip: Option<StreamId>,
    /// `stream_tip` minus `last_applied`, in stream (Redis server) milliseconds; None
    /// before this node applied anything (no tail started yet).
    pub lag_ms: Option<u64>,
    /// The last time Redis answered anything (for `max_staleness`).
    pub last_contact_us: Option<Micros>,
}

#[derive(Default)]
struct Positions {
    applied: Option<(StreamId, Micros)>,
    tip: Option<StreamId>,
}

/// The live counters behind [`Health`]; shared by the store and its tails.
pub(super) struct HealthState {
    clock: Arc<dyn Clock>,
    connected: AtomicBool,
    ever_connected: AtomicBool,
    reconnects: AtomicU64,
    last_contact_us: AtomicI64,
    /// The same moment on the monotonic clock, for staleness (a step of the wall clock
    /// must not make a cut-off node think Redis answered recently).
    last_contact_at: Mutex<Option<Instant>>,
    positions: Mutex<Positions>,
}

impl HealthState {
    pub(super) fn new(clock: Arc<dyn Clock>) -> HealthState {
        HealthState {
            clock,
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            last_contact_us: AtomicI64::new(0),
            last_contact_at: Mutex::new(None),
            positions: Mutex::default(),
        }
    }

    /// Redis answered.
    pub(super) fn up(&self) {
        self.last_contact_us
            .store(self.clock.now_us(), Ordering::Relaxed);
        *self
            .last_contact_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        if !self.connected.swap(true, Ordering::AcqRel) {
            if self.ever_connected.swap(true, Ordering::AcqRel) {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!("redis: connection restored");
            } else {
                tracing::info!("redis: connected");
            }
        }
    }

    /// Redis could not be reached.
    pub(super) fn down(&self, why: &dyn std::fmt::Display) {
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %why, "redis: connection lost");
        }
    }

    /// How long since Redis last answered (`None`: never since this node started).
    pub(super) fn silent_for(&self) -> Option<Duration> {
        self.last_contact_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|at| at.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn applied(&self, id: StreamId) {
        let now = self.clock.now_us();
        let mut p = self.lock();
        p.applied = Some((id, now));
        if p.tip.is_none_or(|t| t < id) {
            p.tip = Some(id);
        }
    }

    pub(super) fn tip(&self, id: StreamId) {
        let mut p = self.lock();
        if p.tip.is_none_or(|t| t < id) {
            p.tip = Some(id);
        }
    }

    /// Forget the tip (the stream was lost and starts again).
    pub(super) fn reset_tip(&self, id: StreamId) {
        self.lock().tip = Some(id);
    }

    pub(super) fn snapshot(&self) -> Health {
        let p = self.lock();
        let lag_ms = match (p.tip, p.applied) {
            (Some(t), Some((a, _))) => Some(t.ms.saturating_sub(a.ms)),
            (None, Some(_)) => Some(0),
            (_, None) => None,
        };
        let contact = self.last_contact_us.load(Ordering::Relaxed);
        Health {
            connected: self.connected.load(Ordering::Acquire),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_applied: p.applied.map(|a| a.0),
            last_applied_at_us: p.applied.map(|a| a.1),
            stream_tip: p.tip,
            lag_ms,
            last_contact_us: (contact != 0).then_some(contact),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn counts_reconnects_after_the_first_connection_only() {
        let clock = ManualClock::new(1_000);
        let h = HealthState::new(clock.clone());
        assert!(!h.snapshot().connected);
        h.up();
        h.up();
        assert_eq!(h.snapshot().reconnects, 0);
        h.down(&"gone");
        h.down(&"gone");
        assert!(!h.snapshot().connected);
        clock.set(2_000);
        h.up();
        let s = h.snapshot();
        assert!(s.connected);
        assert_eq!(s.reconnects, 1);
        assert_eq!(s.last_contact_us, Some(2_000));
    }

    #[test]
    fn lag_is_tip_minus_applied() {
        let h = HealthState::new(ManualClock::new(5));
        h.tip(StreamId { ms: 900, seq: 0 });
        assert_eq!(h.snapshot().lag_ms, None, "nothing applied yet");
        h.applied(StreamId { ms: 400, seq: 2 });
        let s = h.snapshot();
        assert_eq!(s.lag_ms, Some(500));
        assert_eq!(s.last_applied_at_us, Some(5));
        h.applied(StreamId { ms: 900, seq: 0 });
        assert_eq!(h.snapshot().lag_ms, Some(0));
    }
}
