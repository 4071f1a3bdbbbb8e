//! The Redis backend for the cluster's documents (`docs`: SCIM state, account flags,
//! signals already applied), over the storage layer's last-writer-wins documents
//! (`RedisStore::put_doc` / `list_docs`: one hash per namespace).
//!
//! - [`RedisDocs`] is the [`DocReplicator`]: a document written here is put in Redis
//!   (the whole document, tombstones included, as JSON) before the writer is answered.
//! - [`run`] keeps this node and Redis in step every `every`: documents Redis holds that
//!   are newer than this node's are merged here, and documents this node holds that
//!   Redis lacks or holds older (written while Redis was away) are put there. Nodes
//!   learn each other's writes within one round; revocations themselves travel on the
//!   revocation stream at once.
//!
//! Redis orders writes by version alone (at an equal version the first write stays),
//! the nodes by version then node id; two nodes writing the same document in the same
//! microsecond could keep different versions until one of them writes it again.

use super::accounts::NAMESPACES;
use super::docs::{Doc, DocPropagation, DocReplicator, DocStore};
use super::redis::{RedisError, RedisStore};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct RedisDocs {
    redis: RedisStore,
}

impl RedisDocs {
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }
}

async fn put(redis: &RedisStore, d: &Doc) -> Result<bool, RedisError> {
    let json = serde_json::to_string(d).map_err(|e| RedisError::Config(e.to_string()))?;
    redis
        .put_doc(&d.ns, &d.id, &json, d.version.max(0) as u64)
        .await
}

impl DocReplicator for RedisDocs {
    /// Acknowledged (`acked` 1 of 1) when Redis stored every document, or holds a newer
    /// version of it already.
    fn publish<'a>(&'a self, docs: &'a [Doc]) -> BoxFuture<'a, DocPropagation> {
        Box::pin(async move {
            let mut ok = true;
            for d in docs {
                if let Err(e) = put(&self.redis, d).await {
                    tracing::warn!(ns = %d.ns, id = %d.id, error = %e, "cannot put a document in Redis; the next round retries");
                    ok = false;
                }
            }
            DocPropagation {
                acked: usize::from(ok),
                peers: 1,
            }
        })
    }
}

/// One round: Redis → here, then here → Redis. Returns (merged here, put there).
pub async fn sync_round(
    docs: &Arc<DocStore>,
    redis: &RedisStore,
) -> Result<(usize, usize), String> {
    let mut merged = 0;
    let mut pushed = 0;
    for ns in NAMESPACES {
        let theirs: Vec<Doc> = redis
            .list_docs(ns)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|d| serde_json::from_str::<Doc>(&d.json).ok())
            .filter(|d| d.ns == ns)
            .collect();
        let held: HashMap<String, (i64, String)> = theirs
            .iter()
            .map(|d| (d.id.clone(), (d.version, d.node.clone())))
            .collect();
        let s = docs.clone();
        merged += tokio::task::spawn_blocking(move || s.merge(theirs))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let now = docs.now_us();
        for d in docs.list(ns) {
            let behind = held
                .get(&d.id)
                .is_none_or(|(v, node)| (d.version, d.node.as_str()) > (*v, node.as_str()));
            if behind && !d.expired(now) && put(redis, &d).await.map_err(|e| e.to_string())? {
                pushed += 1;
            }
        }
    }
    Ok((merged, pushed))
}

/// Keeps this node's documents and Redis in step until shutdown: a round at once,
/// then one every `every`.
pub async fn run(
    docs: Arc<DocStore>,
    redis: RedisStore,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match sync_round(&docs, &redis).await {
            Ok((0, 0)) => {}
            Ok((merged, pushed)) => {
                tracing::info!(merged, pushed, "documents brought in step with Redis")
            }
            Err(e) => tracing::debug!(error = %e, "document round with Redis failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every.max(Duration::from_millis(10))) => {}
            _ = shutdown.changed() => return,
        }
    }
}
