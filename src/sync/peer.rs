//! Calls to one peer's control port, authenticated with the shared peer token.

use super::PEER_TIMEOUT;
use crate::gateway::Gateway;
use crate::proxy::body;
use crate::revocation::engine;
use crate::revocation::set::entry_hash;
use crate::revocation::{RevocationRecord, Scope};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

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

/// Entries as compact tuples: (scope, target, not_before_us).
#[derive(Serialize, Deserialize)]
pub struct Entries {
    pub node: String,
    pub entries: Vec<(Scope, String, i64)>,
}

pub async fn call(
    gw: &Gateway,
    peer: &str,
    method: Method,
    path: &str,
    json: Option<Vec<u8>>,
) -> Result<Bytes, PeerError> {
    let token = gw
        .runtime
        .load()
        .peer_token
        .clone()
        .ok_or(PeerError::NoToken)?;
    let uri: http::Uri = format!("{peer}{path}")
        .parse()
        .map_err(|_| PeerError::Url(peer.to_string()))?;
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("portcullis-node", gw.node_id.as_str());
    let body = match json {
        Some(j) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            body::full(j)
        }
        None => body::empty(),
    };
    let req = b.body(body).map_err(|e| PeerError::Url(e.to_string()))?;
    let fut = async {
        let resp = gw
            .client
            .request(req)
            .await
            .map_err(|e| PeerError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| PeerError::Unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(PeerError::Status(status));
        }
        Ok(bytes)
    };
    let out = tokio::time::timeout(PEER_TIMEOUT, fut)
        .await
        .map_err(|_| PeerError::Timeout)??;
    gw.peers.heard(peer, gw.now_us());
    Ok(out)
}

pub async fn push_records(
    gw: &Gateway,
    peer: &str,
    records: &[RevocationRecord],
) -> Result<PushAck, PeerError> {
    let body = serde_json::to_vec(&PushBody {
        from: gw.node_id.clone(),
        records: records.to_vec(),
    })
    .map_err(|e| PeerError::Decode(e.to_string()))?;
    let bytes = call(gw, peer, Method::POST, "/v1/peer/revocations", Some(body)).await?;
    serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode(e.to_string()))
}

/// Compares digests with `peer` and pulls its entries when they differ. Returns how
/// many entries moved this node's set forward.
pub async fn reconcile(gw: &Arc<Gateway>, peer: &str) -> Result<usize, PeerError> {
    let bytes = call(gw, peer, Method::GET, "/v1/peer/digest", None).await?;
    let theirs: Digest =
        serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode(e.to_string()))?;
    if theirs.digest == gw.revocations.digest() {
        return Ok(0);
    }
    let bytes = call(gw, peer, Method::GET, "/v1/peer/entries", None).await?;
    let entries: Entries =
        serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode(e.to_string()))?;
    let horizon = gw.revocation_horizon();
    let records: Vec<RevocationRecord> = entries
        .entries
        .into_iter()
        .filter(|(scope, _, nb)| *scope == Scope::All || *nb >= horizon)
        .map(|(scope, target, nb)| {
            let [a, b] = entry_hash(scope, &target, nb);
            RevocationRecord {
                id: format!("sync-{a:016x}{b:016x}"),
                scope,
                target,
                not_before_us: nb,
                reason: "sync".into(),
                actor: format!("peer:{}", entries.node),
                node: entries.node.clone(),
            }
        })
        .collect();
    let (moved, _) = engine::apply_remote(gw, records)
        .await
        .map_err(|e| PeerError::Apply(e.to_string()))?;
    Ok(moved)
}
