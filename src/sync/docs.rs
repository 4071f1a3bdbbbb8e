//! The peer backend for the cluster's documents (`cluster::docs`: SCIM state, account
//! flags, signals already applied).
//!
//! - Push ([`PeerDocs`], the [`DocReplicator`]): a document written here is sent to
//!   every peer at once (`POST /v1/peer/docs`); the writer waits for every peer's answer,
//!   bounded by `ack_timeout`, whatever `[sync] ack` says for revocations: an identity
//!   provider's next SCIM request may reach another node and must find what this one
//!   wrote. A peer makes what it receives durable before it answers.
//! - Anti-entropy ([`run`]): every `anti_entropy_interval` this node compares a digest
//!   of its documents with each peer's (`GET /v1/peer/docs/digest`) and, when they
//!   differ, pulls the peer's documents (`GET /v1/peer/docs`: there are few) and merges
//!   them. Documents merge last-writer-wins, so order and repetition do not matter.

use super::client::PeerClient;
use crate::cluster::docs::{Doc, DocPropagation, DocReplicator, DocStore};
use crate::runtime::Live;
use crate::web::body::{self, Body};
use futures_util::future::BoxFuture;
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Serialize, Deserialize)]
pub struct DocsBody {
    pub from: String,
    pub docs: Vec<Doc>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct DocsAck {
    pub applied: usize,
}

#[derive(Serialize, Deserialize)]
pub struct DocsDigest {
    pub digest: String,
    pub count: usize,
}

/// The peer backend's [`DocReplicator`].
pub struct PeerDocs {
    live: Arc<Live>,
    client: Arc<PeerClient>,
}

impl PeerDocs {
    pub fn new(live: Arc<Live>, client: Arc<PeerClient>) -> Self {
        Self { live, client }
    }
}

impl DocReplicator for PeerDocs {
    fn publish<'a>(&'a self, docs: &'a [Doc]) -> BoxFuture<'a, DocPropagation> {
        Box::pin(push(&self.live, &self.client, docs))
    }
}

async fn push(live: &Live, client: &Arc<PeerClient>, docs: &[Doc]) -> DocPropagation {
    let rt = live.load_full();
    let sync = &rt.config.sync;
    let peers = sync.peers.clone();
    let body = serde_json::to_vec(&DocsBody {
        from: client.node_id().to_string(),
        docs: docs.to_vec(),
    });
    let (Ok(body), false) = (body, peers.is_empty()) else {
        return DocPropagation::default();
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(peers.len());
    for p in &peers {
        let (client, p, tx, body) = (client.clone(), p.clone(), tx.clone(), body.clone());
        tokio::spawn(async move {
            let r = client
                .call(&p, Method::POST, "/v1/peer/docs", Some(body))
                .await;
            if let Err(e) = &r {
                tracing::warn!(peer = %p, error = %e, "pushing documents to a peer failed; anti-entropy will retry");
            }
            let _ = tx.send(r.is_ok()).await;
        });
    }
    drop(tx);
    let mut out = DocPropagation {
        acked: 0,
        peers: peers.len(),
    };
    let need = peers.len();
    let deadline = tokio::time::sleep(sync.ack_timeout);
    tokio::pin!(deadline);
    while out.acked < need {
        tokio::select! {
            got = rx.recv() => match got {
                Some(true) => out.acked += 1,
                Some(false) => {}
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    out
}

fn bad(msg: impl Into<String>) -> Response<Body> {
    body::json(StatusCode::BAD_REQUEST, &json!({"error": msg.into()}))
}

/// `POST /v1/peer/docs`: documents a peer wrote; answered once they are durable here.
pub async fn receive(store: &Arc<DocStore>, req: &[u8]) -> Response<Body> {
    let b: DocsBody = match serde_json::from_slice(req) {
        Ok(b) => b,
        Err(e) => return bad(format!("invalid JSON: {e}")),
    };
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.merge(b.docs)).await {
        Ok(Ok(applied)) => {
            if applied > 0 {
                tracing::debug!(from = %b.from, applied, "applied documents pushed by a peer");
            }
            body::json(StatusCode::OK, &json!(DocsAck { applied }))
        }
        Ok(Err(e)) => body::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
        Err(e) => body::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
    }
}

/// `GET /v1/peer/docs/digest`.
pub fn digest(store: &DocStore) -> Response<Body> {
    body::json(
        StatusCode::OK,
        &json!(DocsDigest {
            digest: store.digest(),
            count: store.len(),
        }),
    )
}

/// `GET /v1/peer/docs`: every document this node holds.
pub fn list(store: &DocStore) -> Response<Body> {
    body::json(StatusCode::OK, &json!({"docs": store.all()}))
}

#[derive(Deserialize)]
struct DocList {
    docs: Vec<Doc>,
}

/// Compares digests with one peer and pulls its documents when they differ. Returns
/// how many documents moved this node forward.
pub async fn reconcile(
    store: &Arc<DocStore>,
    client: &PeerClient,
    peer: &str,
) -> Result<usize, String> {
    let theirs = client
        .call(peer, Method::GET, "/v1/peer/docs/digest", None)
        .await
        .map_err(|e| e.to_string())?;
    let theirs: DocsDigest = serde_json::from_slice(&theirs).map_err(|e| e.to_string())?;
    if theirs.digest == store.digest() {
        return Ok(0);
    }
    let all = client
        .call(peer, Method::GET, "/v1/peer/docs", None)
        .await
        .map_err(|e| e.to_string())?;
    let list: DocList = serde_json::from_slice(&all).map_err(|e| e.to_string())?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.merge(list.docs))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Anti-entropy for documents, until shutdown: a round at once, then one every
/// `anti_entropy_interval`.
pub async fn run(
    store: Arc<DocStore>,
    client: Arc<PeerClient>,
    live: Arc<Live>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        for p in client.peers() {
            match reconcile(&store, &client, &p).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(peer = %p, pulled = n, "pulled missed documents from a peer")
                }
                Err(e) => {
                    tracing::debug!(peer = %p, error = %e, "document anti-entropy with a peer failed")
                }
            }
        }
        let every = live
            .load()
            .config
            .sync
            .anti_entropy_interval
            .max(Duration::from_millis(10));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
