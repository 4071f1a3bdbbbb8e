//! Applying a signal once, whichever node it reaches and however often it is sent: a
//! Security Event Token's `jti`, a webhook's `event_id`.
//!
//! Two marks, because neither alone is enough: a short cluster-wide claim
//! (`SharedState::claim_once`) keeps two nodes from applying the same delivery at the
//! same moment, and a durable, replicated "seen" document (kept for as long as the
//! sender may retry) remembers it across restarts. The document is written only after
//! the signal was applied, so a delivery that failed half-way is applied again when
//! the sender retries.

use crate::cluster::ClusterError;
use crate::cluster::accounts::SEEN;
use crate::cluster::docs::{Doc, DocError};
use crate::triggers::Signals;
use serde_json::json;
use std::time::Duration;

/// How long a delivery being applied keeps others away.
const IN_FLIGHT: Duration = Duration::from_secs(60);

/// Whether a delivery is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    First,
    /// Applied before (or being applied now by another node).
    Repeat,
}

impl Signals {
    /// Claims `key` for applying now.
    /// Also brings the documents up to date first (with Redis, another node's recent
    /// writes: its marks, and the account flags the signal may change).
    pub(super) async fn begin_once(&self, key: &str) -> Result<Delivery, ClusterError> {
        self.docs.catch_up().await;
        if self.docs.get(SEEN, key).is_some() {
            return Ok(Delivery::Repeat);
        }
        let first = self
            .shared
            .claim_once(&format!("signal:{key}"), IN_FLIGHT)
            .await?;
        Ok(if first {
            Delivery::First
        } else {
            Delivery::Repeat
        })
    }

    /// Remembers `key` as applied, on every node, for `keep`.
    pub(super) async fn applied_once(&self, key: &str, keep: Duration) -> Result<(), DocError> {
        let now = self.docs.now_us();
        let doc = Doc {
            ns: SEEN.into(),
            id: key.into(),
            version: self.docs.next_version(),
            node: self.docs.node_id().into(),
            deleted: false,
            keys: Vec::new(),
            expires_us: Some(now + keep.as_micros().min(i64::MAX as u128) as i64),
            body: json!({}),
        };
        let expected = self.docs.get(SEEN, key).map(|d| d.version);
        match self.docs.put(doc, expected).await {
            Ok(_) | Err(DocError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
