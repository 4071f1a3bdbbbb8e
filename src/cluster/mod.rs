//! Cluster-wide state the browser flows and signal receivers need, behind one
//! interface ([`SharedState`]) with two backends: the built-in peer sync
//! (`sync::shared`, in memory on every node, changes pushed to the peers) and Redis.
//!
//! What lives here: single-use markers (hand-off codes, replayed tokens and events)
//! and the sign-in throttle's failure times. Revocations have their own path (the
//! engine's `Notifier`), as does the session inventory. Versioned documents (SCIM
//! state, account flags) live in [`docs`], replicated through a `DocReplicator`, and
//! [`accounts`] reads them for sign-in.

pub mod accounts;
pub mod docs;
pub mod docs_redis;
pub mod memory;
pub mod redis;

use crate::clock::Micros;
use crate::session::registry::SessionView;
use futures_util::future::BoxFuture;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster state unavailable: {0}")]
    Unavailable(String),
}

pub trait SharedState: Send + Sync {
    /// Marks `key` as used for `ttl`; true only for the first caller in the cluster.
    fn claim_once<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, ClusterError>>;

    /// Records a failed sign-in at `at` under `key` (kept for `window`).
    fn record_failure<'a>(
        &'a self,
        key: &'a str,
        at: Micros,
        window: Duration,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// The failure times under `key` within `window` before `now`, oldest first.
    fn failures<'a>(
        &'a self,
        key: &'a str,
        now: Micros,
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Micros>, ClusterError>>;

    /// Forgets the failures under `key` (after a successful sign-in).
    fn clear_failures<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
}

/// Sessions as the whole cluster knows them, and which nodes could not answer.
#[derive(Debug, Default)]
pub struct Directory {
    pub sessions: Vec<SessionView>,
    pub answered: usize,
    pub missing: Vec<String>,
}

/// The cluster-wide session inventory.
pub trait SessionDirectory: Send + Sync {
    /// Live sessions (of `user` when given), one view each (see `registry::merge`),
    /// newest first; sessions revoked anywhere are left out.
    fn live<'a>(&'a self, user: Option<&'a str>) -> BoxFuture<'a, Directory>;

    /// Every session, live or not, created since `since` (for the monthly user list).
    fn created_since(&self, since: Micros) -> BoxFuture<'_, Directory>;
}

/// What a backend tells `/readyz` and the metrics page about itself.
pub trait BackendStatus: Send + Sync {
    /// `peers` or `redis`.
    fn name(&self) -> &'static str;
    /// Whether the node caught up since it started, and how far behind it is.
    fn readiness(&self) -> serde_json::Value;
    fn write_metrics(&self, w: &mut crate::metrics::Writer);
}

/// The cluster backend in force, seen through the interfaces the services use.
#[derive(Clone)]
pub struct Cluster {
    pub shared: std::sync::Arc<dyn SharedState>,
    pub directory: std::sync::Arc<dyn SessionDirectory>,
    pub freshness: std::sync::Arc<dyn crate::revocation::Freshness>,
    pub status: std::sync::Arc<dyn BackendStatus>,
}

/// Seconds to wait when `times` (failures inside the window, oldest first) already
/// hold `max`: until the oldest failure that still counts leaves the window.
pub fn blocked_for(times: &[Micros], max: u32, now: Micros, window: Micros) -> Option<u64> {
    let recent: Vec<Micros> = times
        .iter()
        .copied()
        .filter(|&t| t > now - window)
        .collect();
    if max == 0 || recent.len() < max as usize {
        return None;
    }
    let until = recent[recent.len() - max as usize] + window;
    Some(((until - now).max(0) as u64).div_ceil(1_000_000).max(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_after_max_and_frees_after_window() {
        let w = 60_000_000;
        assert_eq!(super::blocked_for(&[0, 1], 3, 10, w), None);
        assert_eq!(super::blocked_for(&[0, 1, 2], 3, 10, w), Some(60));
        assert_eq!(super::blocked_for(&[0, 1, 2], 3, w + 1, w), None);
    }
}
