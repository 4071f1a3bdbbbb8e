//! Small versioned documents every node holds the same: SCIM users and groups, account
//! flags set by Shared Signals, and the ids of signals already applied.
//!
//! [`DocStore`] is an in-memory replica made durable in a [`RecordLog`] under the state
//! dir. A document is a whole value with a `version` (microseconds) and the node that
//! wrote it; of two writes to one (namespace, id) the later version wins, and at equal
//! versions the greater node id, so replicas that saw the same writes hold the same
//! documents whatever the order they arrived in (last writer wins, a join: merging is
//! commutative, associative and idempotent). Deletions are tombstones (`deleted`), so a
//! late older write cannot bring a document back. Documents may carry an expiry
//! (`expires_us`, for "already seen" markers) after which they are dropped.
//!
//! A local write ([`DocStore::put_local`]) is conditional on the version the writer
//! read, durable (fsync) and applied here before it returns; [`DocStore::put`] then
//! hands it to the [`DocReplicator`] (the cluster backend) and returns once that has
//! published it. Documents from other nodes enter through [`DocStore::merge`].
//! Each document lists `keys` it can be found by ([`DocStore::find`]): an index that
//! replicates with the document (the email addresses of a SCIM user, for example).

use crate::clock::{Micros, Ticker};
use crate::store::{Framing, RecordLog, StoreError, Sync as Durability};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Longest namespace, id or index key accepted (from peers too).
const MAX_NAME: usize = 512;
/// Compact the log when it holds this many more lines than there are documents.
const COMPACT_SLACK: usize = 1024;

/// One versioned document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub ns: String,
    pub id: String,
    /// Microseconds since the epoch; the later version wins.
    pub version: Micros,
    /// The node that wrote this version (breaks ties between equal versions).
    pub node: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// What [`DocStore::find`] finds this document by, within its namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Forgotten after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_us: Option<Micros>,
    #[serde(default)]
    pub body: serde_json::Value,
}

impl Doc {
    /// Whether this version replaces `other` (a later version, or the same version from
    /// a greater node id).
    pub fn wins_over(&self, other: &Doc) -> bool {
        (self.version, self.node.as_str()) > (other.version, other.node.as_str())
    }

    pub fn expired(&self, now: Micros) -> bool {
        self.expires_us.is_some_and(|t| t <= now)
    }

    fn well_formed(&self) -> bool {
        let ok = |s: &str| !s.is_empty() && s.len() <= MAX_NAME && !s.chars().any(char::is_control);
        ok(&self.ns)
            && ok(&self.id)
            && ok(&self.node)
            && self.keys.iter().all(|k| k.len() <= MAX_NAME)
    }
}

/// What the cluster said about documents handed to it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DocPropagation {
    pub acked: usize,
    pub peers: usize,
}

/// Hands this node's writes to the other nodes and resolves when as many have
/// confirmed as the backend's ack policy asks (like the engine's `Notifier`).
pub trait DocReplicator: Send + Sync {
    fn publish<'a>(&'a self, docs: &'a [Doc]) -> BoxFuture<'a, DocPropagation>;

    /// Brings `docs` up to date with every write the other nodes' `publish` completed
    /// so far, where the backend can tell (Redis); backends that push (peers) have
    /// nothing to do.
    fn catch_up(&self, _docs: Arc<DocStore>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A single node: nobody to tell.
pub struct NoReplication;

impl DocReplicator for NoReplication {
    fn publish<'a>(&'a self, _: &'a [Doc]) -> BoxFuture<'a, DocPropagation> {
        Box::pin(async { DocPropagation::default() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The stored version is not the one the write expected.
    #[error("the document changed since it was read")]
    Conflict,
    #[error("document store: {0}")]
    Store(#[from] StoreError),
    #[error("document store: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("document store: {0}")]
    Task(String),
}

type Key = (String, String);

#[derive(Default)]
struct State {
    docs: HashMap<Key, Arc<Doc>>,
    /// (namespace, index key) -> ids.
    index: HashMap<Key, BTreeSet<String>>,
}

impl State {
    /// Puts `doc` in place of whatever it replaces, index included.
    fn apply(&mut self, doc: Doc) {
        let key = (doc.ns.clone(), doc.id.clone());
        if let Some(old) = self.docs.get(&key).cloned() {
            self.unindex(&old);
        }
        for k in &doc.keys {
            self.index
                .entry((doc.ns.clone(), k.clone()))
                .or_default()
                .insert(doc.id.clone());
        }
        self.docs.insert(key, Arc::new(doc));
    }

    fn unindex(&mut self, old: &Doc) {
        for k in &old.keys {
            let ik = (old.ns.clone(), k.clone());
            if let Some(ids) = self.index.get_mut(&ik) {
                ids.remove(&old.id);
                if ids.is_empty() {
                    self.index.remove(&ik);
                }
            }
        }
    }

    /// Whether `doc` would replace what this state holds for its key.
    fn wins(&self, doc: &Doc, now: Micros) -> bool {
        match self.docs.get(&(doc.ns.clone(), doc.id.clone())) {
            None => true,
            Some(have) => doc.wins_over(have) || (have.expired(now) && !doc.expired(now)),
        }
    }
}

pub struct DocStore {
    node_id: String,
    ticker: Arc<Ticker>,
    log: RecordLog,
    state: RwLock<State>,
    /// Serialises writers: the version check, the log append and the apply.
    writer: Mutex<()>,
    replicator: Arc<dyn DocReplicator>,
}

impl std::fmt::Debug for DocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocStore")
            .field("path", &self.log.path())
            .field("docs", &self.len())
            .finish()
    }
}

const FRAMING: Framing = Framing::CheckedLines;

impl DocStore {
    /// Opens (creating if needed) the log at `path` and replays it; rewrites it when it
    /// holds much more than the documents in force.
    pub fn open(
        path: &Path,
        node_id: &str,
        ticker: Arc<Ticker>,
        replicator: Arc<dyn DocReplicator>,
    ) -> Result<DocStore, StoreError> {
        let (log, lines) = RecordLog::open(path, FRAMING)?;
        let now = ticker.now_us();
        let mut state = State::default();
        let n_lines = lines.len();
        for line in lines {
            match serde_json::from_slice::<Doc>(&line) {
                Ok(d) if d.well_formed() && !d.expired(now) && state.wins(&d, now) => {
                    ticker.observe(d.version);
                    state.apply(d);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "document log: skipping an unreadable record")
                }
            }
        }
        let store = DocStore {
            node_id: node_id.to_string(),
            ticker,
            log,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            replicator,
        };
        if n_lines > store.len() + COMPACT_SLACK {
            store.compact()?;
        }
        tracing::debug!(path = %path.display(), docs = store.len(), "document log replayed");
        Ok(store)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn now_us(&self) -> Micros {
        self.ticker.now_us()
    }

    /// A fresh version: later than every one this node handed out or saw.
    pub fn next_version(&self) -> Micros {
        self.ticker.tick()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The document (tombstones included, expired ones not).
    pub fn get(&self, ns: &str, id: &str) -> Option<Arc<Doc>> {
        let now = self.now_us();
        self.read()
            .docs
            .get(&(ns.to_string(), id.to_string()))
            .filter(|d| !d.expired(now))
            .cloned()
    }

    /// Every document of `ns` (tombstones included), in no particular order.
    pub fn list(&self, ns: &str) -> Vec<Arc<Doc>> {
        let now = self.now_us();
        self.read()
            .docs
            .values()
            .filter(|d| d.ns == ns && !d.expired(now))
            .cloned()
            .collect()
    }

    /// The documents of `ns` listing `key` among their keys.
    pub fn find(&self, ns: &str, key: &str) -> Vec<Arc<Doc>> {
        let now = self.now_us();
        let st = self.read();
        let Some(ids) = st.index.get(&(ns.to_string(), key.to_string())) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| st.docs.get(&(ns.to_string(), id.clone())))
            .filter(|d| !d.expired(now))
            .cloned()
            .collect()
    }

    /// Every document this node holds (for a peer's pull).
    pub fn all(&self) -> Vec<Doc> {
        let now = self.now_us();
        self.read()
            .docs
            .values()
            .filter(|d| !d.expired(now))
            .map(|d| (**d).clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A digest of every (namespace, id, version, node) in force: equal on nodes that
    /// hold the same documents.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let now = self.now_us();
        let st = self.read();
        let mut keys: Vec<(&str, &str, Micros, &str)> = st
            .docs
            .values()
            .filter(|d| !d.expired(now))
            .map(|d| (d.ns.as_str(), d.id.as_str(), d.version, d.node.as_str()))
            .collect();
        keys.sort_unstable();
        let mut h = Sha256::new();
        for (ns, id, v, node) in keys {
            h.update(ns.as_bytes());
            h.update([0]);
            h.update(id.as_bytes());
            h.update([0]);
            h.update(v.to_le_bytes());
            h.update(node.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// Writes `doc` (stamped with this node's id) if the stored version is `expected`
    /// (`None`: nothing, or only an expired document, is stored). Blocking: durable
    /// (fsync) and applied here when it returns. Call [`DocStore::publish`] after.
    pub fn put_local(&self, mut doc: Doc, expected: Option<Micros>) -> Result<Doc, DocError> {
        doc.node = self.node_id.clone();
        if !doc.well_formed() {
            return Err(DocError::Task(format!(
                "malformed document {}/{}",
                doc.ns, doc.id
            )));
        }
        let _one = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.now_us();
        {
            let st = self.read();
            let have = st
                .docs
                .get(&(doc.ns.clone(), doc.id.clone()))
                .filter(|d| !d.expired(now));
            if have.map(|d| d.version) != expected || have.is_some_and(|h| !doc.wins_over(h)) {
                return Err(DocError::Conflict);
            }
        }
        self.log
            .append(&[serde_json::to_vec(&doc)?], Durability::Durable)?;
        self.ticker.observe(doc.version);
        self.write().apply(doc.clone());
        Ok(doc)
    }

    /// Hands documents written here to the other nodes; resolves as the replicator's
    /// ack policy says.
    pub async fn publish(&self, docs: &[Doc]) -> DocPropagation {
        if docs.is_empty() {
            return DocPropagation::default();
        }
        self.replicator.publish(docs).await
    }

    /// Every write another node finished is here once this returns (with the Redis
    /// backend; the peers push theirs before they answer). Before reading on behalf of
    /// a request that may follow one made at another node.
    pub async fn catch_up(self: &Arc<Self>) {
        self.replicator.catch_up(self.clone()).await
    }

    /// [`DocStore::put_local`] off the async threads, then [`DocStore::publish`].
    pub async fn put(
        self: &Arc<Self>,
        doc: Doc,
        expected: Option<Micros>,
    ) -> Result<(Doc, DocPropagation), DocError> {
        let me = self.clone();
        let written = tokio::task::spawn_blocking(move || me.put_local(doc, expected))
            .await
            .map_err(|e| DocError::Task(e.to_string()))??;
        let sent = self.publish(std::slice::from_ref(&written)).await;
        Ok((written, sent))
    }

    /// Documents from other nodes: the ones that win over what this node holds are made
    /// durable, then applied. Blocking. Returns how many were applied.
    pub fn merge(&self, docs: Vec<Doc>) -> Result<usize, DocError> {
        let _one = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.now_us();
        let mut fresh: Vec<Doc> = Vec::new();
        {
            let st = self.read();
            for d in docs {
                if d.well_formed()
                    && !d.expired(now)
                    && st.wins(&d, now)
                    && fresh
                        .iter()
                        .all(|f| f.ns != d.ns || f.id != d.id || d.wins_over(f))
                {
                    fresh.retain(|f| f.ns != d.ns || f.id != d.id);
                    fresh.push(d);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let lines = fresh
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()?;
        self.log.append(&lines, Durability::Durable)?;
        let n = fresh.len();
        let mut st = self.write();
        for d in fresh {
            self.ticker.observe(d.version);
            st.apply(d);
        }
        Ok(n)
    }

    /// Forgets expired documents and rewrites the log when it has grown well past the
    /// documents in force. Blocking.
    pub fn maintain(&self) -> Result<(), StoreError> {
        let now = self.now_us();
        let dropped = {
            let _one = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let mut st = self.write();
            let expired: Vec<Arc<Doc>> = st
                .docs
                .values()
                .filter(|d| d.expired(now))
                .cloned()
                .collect();
            for d in &expired {
                st.unindex(d);
                st.docs.remove(&(d.ns.clone(), d.id.clone()));
            }
            expired.len()
        };
        let lines = (self.log.len_bytes() / 128) as usize;
        if dropped > 0 || lines > self.len() + COMPACT_SLACK {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the log with only the documents in force.
    fn compact(&self) -> Result<(), StoreError> {
        let _one = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let lines: Vec<Vec<u8>> = self
            .read()
            .docs
            .values()
            .filter_map(|d| serde_json::to_vec(&**d).ok())
            .collect();
        self.log.rewrite(|_| lines)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use serde_json::json;

    fn doc(ns: &str, id: &str, version: Micros, node: &str) -> Doc {
        Doc {
            ns: ns.into(),
            id: id.into(),
            version,
            node: node.into(),
            deleted: false,
            keys: vec![format!("k-{id}")],
            expires_us: None,
            body: json!({"v": version}),
        }
    }

    fn open(dir: &Path, node: &str, clock: &Arc<ManualClock>) -> DocStore {
        let ticker = Arc::new(Ticker::new(clock.clone()));
        DocStore::open(&dir.join("docs.log"), node, ticker, Arc::new(NoReplication)).unwrap()
    }

    #[test]
    fn local_writes_are_conditional_durable_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let s = open(dir.path(), "n1", &clock);
        s.put_local(doc("u", "a", 10, "x"), None).unwrap();
        assert!(matches!(
            s.put_local(doc("u", "a", 11, "x"), None),
            Err(DocError::Conflict)
        ));
        assert!(matches!(
            s.put_local(doc("u", "a", 9, "x"), Some(10)),
            Err(DocError::Conflict)
        ));
        let mut next = doc("u", "a", 11, "x");
        next.keys = vec!["k-new".into()];
        s.put_local(next, Some(10)).unwrap();
        assert_eq!(
            s.get("u", "a").unwrap().node,
            "n1",
            "stamped with this node"
        );
        assert!(s.find("u", "k-a").is_empty(), "old keys leave the index");
        assert_eq!(s.find("u", "k-new").len(), 1);
        drop(s);
        let s = open(dir.path(), "n1", &clock);
        assert_eq!(s.get("u", "a").unwrap().version, 11);
        assert_eq!(s.find("u", "k-new").len(), 1);
        assert!(
            s.next_version() > 11,
            "versions move past what was replayed"
        );
    }

    #[test]
    fn merges_converge_whatever_the_order() {
        let clock = ManualClock::new(1_000);
        let writes = [
            doc("u", "a", 5, "n1"),
            doc("u", "a", 7, "n1"),
            doc("u", "a", 7, "n2"),
            doc("u", "b", 3, "n3"),
            Doc {
                deleted: true,
                ..doc("u", "b", 4, "n1")
            },
        ];
        let mut digests = Vec::new();
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]] {
            let dir = tempfile::tempdir().unwrap();
            let s = open(dir.path(), "me", &clock);
            for i in order {
                s.merge(vec![writes[i].clone()]).unwrap();
                s.merge(vec![writes[i].clone()]).unwrap();
            }
            assert_eq!(
                s.get("u", "a").unwrap().node,
                "n2",
                "ties go to the greater node"
            );
            assert!(s.get("u", "b").unwrap().deleted, "a later tombstone wins");
            digests.push(s.digest());
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]));
        // Nothing older applies, and malformed documents are refused.
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), "me", &clock);
        assert_eq!(s.merge(writes.to_vec()).unwrap(), 2);
        assert_eq!(s.merge(vec![doc("u", "a", 6, "n9")]).unwrap(), 0);
        assert_eq!(s.merge(vec![doc("", "x", 6, "n9")]).unwrap(), 0);
    }

    #[test]
    fn expired_documents_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let s = open(dir.path(), "n1", &clock);
        let mut d = doc("seen", "jti-1", 1_000, "x");
        d.expires_us = Some(2_000);
        s.put_local(d.clone(), None).unwrap();
        assert!(s.get("seen", "jti-1").is_some());
        let before = s.digest();
        clock.set(2_000);
        assert!(s.get("seen", "jti-1").is_none());
        assert_ne!(s.digest(), before);
        // An expired marker can be written again.
        d.version = 2_001;
        d.expires_us = Some(3_000);
        s.put_local(d, None).unwrap();
        clock.set(3_000);
        s.maintain().unwrap();
        assert!(s.is_empty());
        drop(s);
        assert!(open(dir.path(), "n1", &clock).is_empty());
    }
}
