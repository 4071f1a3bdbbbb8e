//! The Redis backend for the cluster's documents (`docs`: SCIM state, account flags,
//! signals already applied), over the storage layer's last-writer-wins documents
//! (`RedisStore::put_doc` / `list_docs`: one hash per namespace).
//!
//! - [`RedisDocs`] is the [`DocReplicator`]: a document written here is put in Redis
//!   (the whole document, tombstones included, as JSON) before the writer is answered.
//! - [`RedisDocs::catch_up`] merges here what other nodes wrote since it last looked
//!   (Redis keeps a counter of winning writes and which document each was: one round
//!   trip when nothing changed). Called before a SCIM request is served (the identity
//!   provider's previous request may have reached another node), before a token is
//!   issued from what the directory says, before revocations from a signal are
//!   enforced (the documents that trigger wrote first, such as a group without the
//!   user, are here before the token is re-issued), and every [`POLL`] by [`run`].
//! - [`run`] also brings this node and Redis in step every `every`: documents Redis
//!   holds that are newer than this node's are merged here, and documents this node
//!   holds that Redis lacks or holds older (written while Redis was away) are put there.
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

/// How often [`run`] looks for other nodes' writes.
pub const POLL: Duration = Duration::from_millis(100);
/// Changed documents read per round trip.
const BATCH: usize = 500;

/// How long a request waits for [`RedisDocs::catch_up`] before it goes on with what
/// this node has (Redis hung or away: requests must not queue behind it).
pub const CATCH_UP_LIMIT: Duration = Duration::from_millis(300);

pub struct RedisDocs {
    redis: RedisStore,
    /// The point of Redis' write counter this node has merged up to (None: not yet).
    /// Never held across a call to Redis: concurrent catch-ups run side by side
    /// (merging is idempotent) instead of queueing.
    cursor: std::sync::Mutex<Option<u64>>,
}

impl RedisDocs {
    pub fn new(redis: RedisStore) -> Self {
        Self {
            redis,
            cursor: std::sync::Mutex::new(None),
        }
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Merges here every document written to Redis since the last call; the first
    /// time, and when Redis lost its data (its counter went back), a whole round.
    /// Returns how many documents were merged.
    pub async fn catch_up(&self, docs: &Arc<DocStore>) -> Result<usize, String> {
        let start = *self.cursor();
        let Some(mut after) = start else {
            return self.whole_round(docs).await;
        };
        let mut merged = 0;
        loop {
            let ch = self
                .redis
                .doc_changes(after, BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if ch.seq < after {
                return self.whole_round(docs).await;
            }
            let mut fetched = Vec::with_capacity(ch.changed.len());
            for (at, ns, id) in &ch.changed {
                if let Some(d) = self
                    .redis
                    .get_doc(ns, id)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    fetched.extend(serde_json::from_str::<Doc>(&d.json).ok());
                }
                after = after.max(*at);
            }
            merged += merge(docs, fetched).await?;
            if ch.changed.len() < BATCH {
                let mut c = self.cursor();
                *c = Some(c.map_or(after, |c| c.max(after)));
                return Ok(merged);
            }
        }
    }

    /// A [`sync_round`], after which the counter read before it is this node's point.
    async fn whole_round(&self, docs: &Arc<DocStore>) -> Result<usize, String> {
        let seq = self
            .redis
            .doc_changes(u64::MAX, 0)
            .await
            .map_err(|e| e.to_string())?
            .seq;
        let (merged, _) = sync_round(docs, &self.redis).await?;
        *self.cursor() = Some(seq);
        Ok(merged)
    }
}

async fn merge(docs: &Arc<DocStore>, fetched: Vec<Doc>) -> Result<usize, String> {
    if fetched.is_empty() {
        return Ok(0);
    }
    let s = docs.clone();
    tokio::task::spawn_blocking(move || s.merge(fetched))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
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

    fn catch_up(&self, docs: Arc<DocStore>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match tokio::time::timeout(CATCH_UP_LIMIT, RedisDocs::catch_up(self, &docs)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read other nodes' documents from Redis; serving what this node has")
                }
                Err(_) => {
                    tracing::warn!(
                        "Redis did not answer in time for other nodes' documents; serving what this node has"
                    )
                }
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
        merged += merge(docs, theirs).await?;
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

/// Keeps this node's documents and Redis in step until shutdown: other nodes' writes
/// every [`POLL`], and a whole round at once and then every `every`.
pub async fn run(
    docs: Arc<DocStore>,
    redis: Arc<RedisDocs>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_round: Option<std::time::Instant> = None;
    loop {
        if last_round.is_none_or(|t| t.elapsed() >= every) {
            last_round = Some(std::time::Instant::now());
            match sync_round(&docs, &redis.redis).await {
                Ok((0, 0)) => {}
                Ok((merged, pushed)) => {
                    tracing::info!(merged, pushed, "documents brought in step with Redis")
                }
                Err(e) => tracing::debug!(error = %e, "document round with Redis failed"),
            }
        }
        match redis.catch_up(&docs).await {
            Ok(0) => {}
            Ok(merged) => tracing::debug!(merged, "documents from other nodes merged"),
            Err(e) => tracing::debug!(error = %e, "reading document changes from Redis failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL.min(every).max(Duration::from_millis(10))) => {}
            _ = shutdown.changed() => return,
        }
    }
}
