//! Push: a revocation taken here is sent to every peer at once, and the caller waits
//! for as many confirmations as `[sync] ack` asks (none, a majority, all), bounded by
//! `ack_timeout`. A push that fails is left to anti-entropy.

use super::client::PeerClient;
use super::peer;
use crate::config::file::AckMode;
use crate::revocation::RevocationRecord;
use crate::revocation::engine::{Notifier, Propagation};
use crate::runtime::Live;
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// Records per push request, so a large bulk revocation stays under the peer's body limit.
const PUSH_CHUNK: usize = 5_000;

/// The peer backend's [`Notifier`].
pub struct PeerPush {
    live: Arc<Live>,
    client: Arc<PeerClient>,
}

impl PeerPush {
    pub fn new(live: Arc<Live>, client: Arc<PeerClient>) -> Self {
        Self { live, client }
    }
}

impl Notifier for PeerPush {
    fn publish<'a>(&'a self, records: &'a [RevocationRecord]) -> BoxFuture<'a, Propagation> {
        Box::pin(push(&self.live, &self.client, records))
    }
}

/// Sends `records` to one peer, chunk by chunk; the confirmation sums the chunks'.
async fn push_to(client: &PeerClient, p: &str, bodies: &[Vec<u8>]) -> Option<peer::PushAck> {
    let mut ack = peer::PushAck::default();
    for body in bodies {
        match peer::push_encoded(client, p, body.clone()).await {
            Ok(a) => {
                ack.applied += a.applied;
                ack.sessions.extend(a.sessions);
            }
            Err(e) => {
                client.health.push_failed(p);
                tracing::warn!(peer = %p, error = %e, "push to peer failed; anti-entropy will retry");
                return None;
            }
        }
    }
    Some(ack)
}

async fn push(live: &Live, client: &Arc<PeerClient>, records: &[RevocationRecord]) -> Propagation {
    let rt = live.load_full();
    let sync = &rt.config.sync;
    let peers = sync.peers.clone();
    if peers.is_empty() || records.is_empty() {
        return Propagation::default();
    }
    // Encoded once for every peer.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        records
            .chunks(PUSH_CHUNK)
            .filter_map(|c| peer::push_body(client.node_id(), c).ok())
            .collect(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(peers.len());
    for p in &peers {
        let (client, p, tx, bodies) = (client.clone(), p.clone(), tx.clone(), bodies.clone());
        tokio::spawn(async move {
            let _ = tx.send(push_to(&client, &p, &bodies).await).await;
        });
    }
    drop(tx);
    let mut out = Propagation {
        peers: peers.len(),
        ..Default::default()
    };
    let need = match sync.ack {
        AckMode::Local => return out,
        AckMode::All => peers.len(),
        // A majority of the cluster, counting this node.
        AckMode::Quorum => peers.len().div_ceil(2),
    };
    let count = |out: &mut Propagation, ack: peer::PushAck| {
        out.acked += 1;
        for (id, n) in ack.sessions {
            *out.remote_sessions.entry(id).or_default() += n;
        }
    };
    let deadline = tokio::time::sleep(sync.ack_timeout);
    tokio::pin!(deadline);
    while out.acked < need {
        tokio::select! {
            got = rx.recv() => match got {
                Some(Some(ack)) => count(&mut out, ack),
                Some(None) => {}
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    // Count the confirmations that are already in as well.
    while let Ok(got) = rx.try_recv() {
        if let Some(ack) = got {
            count(&mut out, ack);
        }
    }
    out
}
