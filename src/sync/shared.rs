//! The peer backend's [`SharedState`]: every node keeps the markers and failure times
//! in memory and tells the others.
//!
//! - A single-use claim is marked here first, then every reachable peer is asked to mark
//!   it too (`POST /v1/peer/claim`); the claim holds only if no peer had it already.
//!   Two nodes claiming the same key at the same moment both see the other's mark and
//!   both refuse: never two winners. A peer that cannot be reached within the claim
//!   timeout does not block the claim (a partitioned cluster keeps signing people in).
//! - A failed sign-in is recorded here and pushed to every peer without waiting
//!   (`POST /v1/peer/failure`); people type slower than a push travels.

use super::client::PeerClient;
use crate::clock::{Micros, Ticker};
use crate::cluster::memory::{Claim, Memory};
use crate::cluster::{ClusterError, SharedState};
use futures_util::future::BoxFuture;
use http::Method;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a claim waits for each peer's answer.
const CLAIM_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Serialize, Deserialize)]
pub struct ClaimRequest {
    pub key: String,
    pub ttl_ms: u64,
}

#[derive(Serialize, Deserialize)]
pub struct ClaimAnswer {
    pub first: bool,
}

/// A failure to record, or (`clear`) the failures of a key to forget.
#[derive(Serialize, Deserialize)]
pub struct FailureNote {
    pub key: String,
    #[serde(default)]
    pub at: Micros,
    #[serde(default)]
    pub window_ms: u64,
    #[serde(default)]
    pub clear: bool,
}

pub struct PeerShared {
    memory: Memory,
    client: Arc<PeerClient>,
    ticker: Arc<Ticker>,
}

fn micros(d: Duration) -> Micros {
    d.as_micros().min(i64::MAX as u128) as Micros
}

impl PeerShared {
    /// `max_claims` live single-use markers and `max_failures` failure histories at
    /// most (`[limits]`, read at start).
    pub fn new(
        client: Arc<PeerClient>,
        ticker: Arc<Ticker>,
        max_claims: usize,
        max_failures: usize,
    ) -> Self {
        Self {
            memory: Memory::bounded(max_claims, max_failures),
            client,
            ticker,
        }
    }

    /// `POST /v1/peer/claim`: a peer marks a key.
    pub fn on_claim(&self, req: &ClaimRequest) -> ClaimAnswer {
        let now = self.ticker.now_us();
        let ttl = micros(Duration::from_millis(req.ttl_ms.min(24 * 3600 * 1000)));
        ClaimAnswer {
            // A full map cannot hold the mark; it never had the key either.
            first: self.memory.claim(&req.key, now, now + ttl) != Claim::Used,
        }
    }

    /// `POST /v1/peer/failure`: a peer recorded (or cleared) failures.
    pub fn on_failure(&self, note: &FailureNote) {
        if note.clear {
            self.memory.clear_failures(&note.key);
        } else {
            let window = micros(Duration::from_millis(note.window_ms));
            self.memory.record_failure(&note.key, note.at, window);
        }
    }

    /// What the in-memory maps hold, for the metrics page.
    pub fn stats(&self) -> crate::cluster::memory::MemoryStats {
        self.memory.stats()
    }

    /// Forgets expired markers and old failures.
    pub fn sweep(&self, window: Duration) {
        self.memory.sweep(self.ticker.now_us(), micros(window));
    }

    async fn ask_peers(&self, key: &str, ttl: Duration) -> bool {
        let body = serde_json::to_vec(&ClaimRequest {
            key: key.to_string(),
            ttl_ms: ttl.as_millis() as u64,
        });
        let Ok(body) = body else { return true };
        let peers = self.client.peers();
        let asks = peers.iter().map(|p| {
            self.client.call_with(
                p,
                Method::POST,
                "/v1/peer/claim",
                Some(body.clone()),
                CLAIM_TIMEOUT,
            )
        });
        let answers = futures_util::future::join_all(asks).await;
        // Any peer that had the key already wins it away; unreachable peers do not.
        !answers.into_iter().any(|a| {
            a.ok()
                .and_then(|b| serde_json::from_slice::<ClaimAnswer>(&b).ok())
                .is_some_and(|a| !a.first)
        })
    }

    fn tell_peers(&self, note: FailureNote) {
        let Ok(body) = serde_json::to_vec(&note) else {
            return;
        };
        for p in self.client.peers() {
            let (client, body) = (self.client.clone(), body.clone());
            tokio::spawn(async move {
                if let Err(e) = client
                    .call(&p, Method::POST, "/v1/peer/failure", Some(body))
                    .await
                {
                    tracing::debug!(peer = %p, error = %e, "could not tell a peer about a failed sign-in");
                }
            });
        }
    }
}

impl SharedState for PeerShared {
    fn claim_once<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async move {
            let now = self.ticker.now_us();
            match self.memory.claim(key, now, now + micros(ttl)) {
                Claim::First => {}
                Claim::Used => return Ok(false),
                Claim::Full => {
                    return Err(ClusterError::Unavailable(
                        "single-use markers full ([limits] max_single_use)".into(),
                    ));
                }
            }
            Ok(self.ask_peers(key, ttl).await)
        })
    }

    fn record_failure<'a>(
        &'a self,
        key: &'a str,
        at: Micros,
        window: Duration,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        self.memory.record_failure(key, at, micros(window));
        self.tell_peers(FailureNote {
            key: key.to_string(),
            at,
            window_ms: window.as_millis() as u64,
            clear: false,
        });
        Box::pin(async { Ok(()) })
    }

    fn failures<'a>(
        &'a self,
        key: &'a str,
        now: Micros,
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Micros>, ClusterError>> {
        let times = self.memory.failures(key, now, micros(window));
        Box::pin(async { Ok(times) })
    }

    fn clear_failures<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        self.memory.clear_failures(key);
        self.tell_peers(FailureNote {
            key: key.to_string(),
            at: 0,
            window_ms: 0,
            clear: true,
        });
        Box::pin(async { Ok(()) })
    }
}
