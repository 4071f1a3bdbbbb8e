//! Peer sync: one revocation set across all gateway nodes.
//!
//! - Push: a revocation taken here is durable and enforced first, then sent to every
//!   peer at once; `[sync] ack` decides how long the API waits for their answers.
//! - Anti-entropy: every `anti_entropy_interval` each node compares its set digest with
//!   each peer's and pulls the peer's entries when they differ; entries merge by
//!   keeping the latest instant per key, so order and repetition do not matter.
//! - Staleness: the last time each peer answered is tracked; in `on_stale = "refuse"`
//!   mode a node cut off from every peer for longer than `max_staleness` fails closed.

pub mod peer;

use crate::config::file::{AckMode, OnStale};
use crate::gateway::Gateway;
use crate::revocation::RevocationRecord;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
pub struct PushResult {
    pub acked: usize,
    pub peers: usize,
    /// Sessions each revocation ended on the peers, by revocation id.
    pub remote_sessions: HashMap<String, u64>,
}

/// When each peer last answered (microseconds), for staleness and metrics.
#[derive(Default)]
pub struct PeerHealth {
    last_heard: DashMap<String, i64>,
}

impl PeerHealth {
    pub fn heard(&self, peer: &str, now: i64) {
        self.last_heard.insert(peer.to_string(), now);
    }
    pub fn last_heard(&self, peer: &str) -> Option<i64> {
        self.last_heard.get(peer).map(|v| *v)
    }
}

/// Sends freshly taken revocations to every peer, waiting as `[sync] ack` says.
pub async fn push(gw: &Arc<Gateway>, records: &[RevocationRecord]) -> PushResult {
    let rt = gw.runtime.load_full();
    let sync = &rt.config.sync;
    let peers = sync.peers.clone();
    if peers.is_empty() || records.is_empty() {
        return PushResult::default();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(peers.len());
    for p in &peers {
        let (gw, p, tx, records) = (gw.clone(), p.clone(), tx.clone(), records.to_vec());
        tokio::spawn(async move {
            let res = peer::push_records(&gw, &p, &records).await;
            if let Err(e) = &res {
                tracing::warn!(peer = %p, error = %e, "push to peer failed; anti-entropy will retry");
            }
            let _ = tx.send(res.ok()).await;
        });
    }
    drop(tx);
    let mut out = PushResult {
        peers: peers.len(),
        ..Default::default()
    };
    let need = match sync.ack {
        AckMode::Local => return out,
        AckMode::All => peers.len(),
        // A majority of the cluster, counting this node.
        AckMode::Quorum => (peers.len() + 1) / 2,
    };
    let deadline = tokio::time::sleep(sync.ack_timeout);
    tokio::pin!(deadline);
    while out.acked < need {
        tokio::select! {
            got = rx.recv() => match got {
                Some(Some(ack)) => {
                    out.acked += 1;
                    for (id, n) in ack.sessions {
                        *out.remote_sessions.entry(id).or_default() += n;
                    }
                }
                Some(None) => {}
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    out
}

/// Starts anti-entropy (which also does the startup catch-up that gates readiness).
pub fn spawn(gw: Arc<Gateway>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![tokio::spawn(anti_entropy(gw, shutdown))]
}

async fn anti_entropy(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let rt = gw.runtime.load_full();
    let peers = rt.config.sync.peers.clone();
    if peers.is_empty() {
        gw.ready.store(true, Ordering::SeqCst);
        return;
    }
    // Catch up before reporting ready: bounded, and says so when no peer answered.
    let startup = rt.config.sync.startup_sync_timeout;
    let caught_up = tokio::time::timeout(startup, round(&gw, &peers, true)).await;
    match caught_up {
        Ok(n) if n > 0 => tracing::info!(peers_answered = n, "caught up with peers"),
        _ => tracing::warn!("no peer answered the startup catch-up; serving what this node holds"),
    }
    gw.ready.store(true, Ordering::SeqCst);
    loop {
        let every = gw.runtime.load().config.sync.anti_entropy_interval;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let peers = gw.runtime.load().config.sync.peers.clone();
        round(&gw, &peers, false).await;
    }
}

/// One comparison with every peer at once; returns how many answered.
async fn round(gw: &Arc<Gateway>, peers: &[String], startup: bool) -> usize {
    let mut set = tokio::task::JoinSet::new();
    for p in peers {
        let (gw, p) = (gw.clone(), p.clone());
        set.spawn(async move {
            match peer::reconcile(&gw, &p).await {
                Ok(pulled) => {
                    if pulled > 0 {
                        tracing::info!(peer = %p, pulled, startup, "pulled missed revocations from a peer");
                    }
                    true
                }
                Err(e) => {
                    tracing::debug!(peer = %p, error = %e, "anti-entropy with peer failed");
                    false
                }
            }
        });
    }
    let mut answered = 0;
    while let Some(r) = set.join_next().await {
        if matches!(r, Ok(true)) {
            answered += 1;
        }
    }
    answered
}

/// In refuse mode, whether this node has been cut off from every peer for too long.
pub fn stale_reason(gw: &Gateway) -> Option<String> {
    let rt = gw.runtime.load();
    let s = &rt.config.sync;
    let max = s.max_staleness?;
    if s.on_stale != OnStale::Refuse || s.peers.is_empty() {
        return None;
    }
    let now = gw.now_us();
    let limit = max.as_micros() as i64;
    let newest = s
        .peers
        .iter()
        .filter_map(|p| gw.peers.last_heard(p))
        .max()
        .unwrap_or(gw.started_us);
    (now - newest > limit).then(|| {
        format!(
            "cut off from all {} peers for {}s (max_staleness {}s): refusing to serve protected apps",
            s.peers.len(),
            (now - newest) / 1_000_000,
            max.as_secs()
        )
    })
}

pub fn peer_metrics(gw: &Gateway) -> String {
    let rt = gw.runtime.load();
    let now = gw.now_us();
    let mut s = String::from(
        "# HELP portcullis_peer_last_heard_seconds Seconds since each peer last answered.\n# TYPE portcullis_peer_last_heard_seconds gauge\n",
    );
    for p in &rt.config.sync.peers {
        let age = gw
            .peers
            .last_heard(p)
            .map_or(-1.0, |t| (now - t) as f64 / 1e6);
        s.push_str(&format!(
            "portcullis_peer_last_heard_seconds{{peer=\"{p}\"}} {age}\n"
        ));
    }
    s
}

pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
