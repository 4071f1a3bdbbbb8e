//! The peer protocol: push bodies and answers, digests, and reconciling with one peer
//! (compare digests, pull what differs).

use super::client::{PULL_TIMEOUT, PeerClient};
use super::{PeerSync, wire};
use crate::revocation::set::{BUCKETS, RevocationSet};
use crate::revocation::{RevocationRecord, Scope};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a bucket must keep differing before its entries are pulled.
pub const SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no peer token configured")]
    NoToken,
    #[error("bad peer URL {0}")]
    Url(String),
    #[error("peer did not answer in time")]
    Timeout,
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer answered {0}")]
    Status(StatusCode),
    #[error("peer sent something unreadable: {0}")]
    Decode(String),
    #[error("{0}")]
    Apply(String),
}

#[derive(Serialize, Deserialize)]
pub struct PushBody {
    pub from: String,
    pub records: Vec<RevocationRecord>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct PushAck {
    pub applied: usize,
    /// Sessions each revocation ended on the peer, by revocation id.
    pub sessions: HashMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
pub struct Digest {
    pub node: String,
    pub digest: String,
    pub count: usize,
}

/// Entries as compact tuples: (scope, target, not_before_us). The JSON form of
/// `GET /v1/peer/entries`, kept for tools; nodes pull with `POST /v1/peer/pull`.
#[derive(Serialize, Deserialize)]
pub struct Entries {
    pub node: String,
    pub entries: Vec<(Scope, String, i64)>,
}

/// `POST /v1/peer/pull`: the buckets wanted (none: every entry).
#[derive(Serialize, Deserialize, Default)]
pub struct PullRequest {
    #[serde(default)]
    pub buckets: Option<Vec<u16>>,
}

pub fn push_body(from: &str, records: &[RevocationRecord]) -> Result<Vec<u8>, PeerError> {
    serde_json::to_vec(&PushBody {
        from: from.to_string(),
        records: records.to_vec(),
    })
    .map_err(|e| PeerError::Decode(e.to_string()))
}

pub async fn push_encoded(
    client: &PeerClient,
    peer: &str,
    body: Vec<u8>,
) -> Result<PushAck, PeerError> {
    let bytes = client
        .call(peer, Method::POST, "/v1/peer/revocations", Some(body))
        .await?;
    serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode(e.to_string()))
}

pub async fn push_records(
    client: &PeerClient,
    peer: &str,
    records: &[RevocationRecord],
) -> Result<PushAck, PeerError> {
    push_encoded(client, peer, push_body(client.node_id(), records)?).await
}

/// Which buckets differ between this node's set and the peer's, right now.
async fn differing(
    client: &PeerClient,
    set: &RevocationSet,
    peer: &str,
) -> Result<Vec<bool>, PeerError> {
    let b = client
        .call(peer, Method::GET, "/v1/peer/buckets", None)
        .await?;
    wire::differing_buckets(set, &b).map_err(|e| PeerError::Decode(e.to_string()))
}

/// Compares digests with `peer` and, when they differ, pulls the entries of the buckets
/// that still differ a moment later (every entry when this node holds none or most
/// buckets differ). Returns how many entries moved this node's set forward.
pub async fn reconcile(sync: &Arc<PeerSync>, peer: &str) -> Result<usize, PeerError> {
    let (client, set) = (&sync.client, sync.engine.set());
    let bytes = client
        .call(peer, Method::GET, "/v1/peer/digest", None)
        .await?;
    let theirs: Digest =
        serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode(e.to_string()))?;
    if theirs.digest == set.digest() || theirs.count == 0 {
        return Ok(0);
    }
    let want = if set.is_empty() {
        None
    } else {
        let first = differing(client, set, peer).await?;
        let n = first.iter().filter(|d| **d).count();
        if n == 0 {
            return Ok(0);
        }
        if n > BUCKETS / 4 {
            // Far behind: everything.
            None
        } else {
            // A bucket differs for a moment whenever a push is in flight (all the time
            // while revocations stream in). Only buckets that still differ a moment
            // later are real misses worth a pull (which costs the peer a pass over its
            // set); the others have settled by themselves.
            tokio::time::sleep(SETTLE).await;
            let second = differing(client, set, peer).await?;
            let ids: Vec<u16> = first
                .iter()
                .zip(&second)
                .enumerate()
                .filter(|(_, (a, b))| **a && **b)
                .map(|(i, _)| i as u16)
                .collect();
            if ids.is_empty() {
                return Ok(0);
            }
            Some(ids)
        }
    };
    let t0 = std::time::Instant::now();
    let asked = want.as_ref().map_or(BUCKETS, Vec::len);
    let req = serde_json::to_vec(&PullRequest { buckets: want })
        .map_err(|e| PeerError::Decode(e.to_string()))?;
    let bytes = client
        .call_with(peer, Method::POST, "/v1/peer/pull", Some(req), PULL_TIMEOUT)
        .await?;
    tracing::debug!(
        peer,
        buckets = asked,
        bytes = bytes.len(),
        millis = t0.elapsed().as_secs_f64() * 1e3,
        "pulled entries from a peer"
    );
    let s = sync.clone();
    tokio::task::spawn_blocking(move || {
        let (_, entries) =
            wire::entries_body(&bytes).map_err(|e| PeerError::Decode(e.to_string()))?;
        s.apply_pulled(entries)
    })
    .await
    .map_err(|e| PeerError::Apply(e.to_string()))?
}
