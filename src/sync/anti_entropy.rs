//! Anti-entropy: every `anti_entropy_interval` each node compares its set digest with
//! each peer's and pulls what it misses (see [`peer::reconcile`]); each peer is
//! reconciled on its own, so a slow or hung peer never delays the others. At startup the
//! same pull from every peer gates readiness (bounded by `startup_sync_timeout`).

use super::{PeerSync, StartupSync, peer};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

type Reconciled = Result<usize, peer::PeerError>;

/// The reconciles in flight, one per peer at most; dropping it (when the anti-entropy
/// task is aborted at shutdown) aborts them all.
#[derive(Default)]
struct Inflight {
    tasks: JoinSet<Reconciled>,
    peers: HashMap<tokio::task::Id, String>,
}

impl Inflight {
    fn start(&mut self, sync: &Arc<PeerSync>, p: &str) {
        if self.peers.values().any(|q| q == p) {
            return;
        }
        let (s, q) = (sync.clone(), p.to_string());
        let h = self
            .tasks
            .spawn(async move { peer::reconcile(&s, &q).await });
        self.peers.insert(h.id(), p.to_string());
    }

    /// The next finished reconcile: its peer and result (None when it panicked).
    async fn next(&mut self) -> Option<(String, Option<Reconciled>)> {
        let (id, r) = match self.tasks.join_next_with_id().await? {
            Ok((id, r)) => (id, Some(r)),
            Err(e) => (e.id(), None),
        };
        Some((self.peers.remove(&id).unwrap_or_default(), r))
    }
}

fn note(sync: &PeerSync, p: &str, r: &Option<Reconciled>, startup: bool) -> Option<usize> {
    match r {
        Some(Ok(pulled)) => {
            if *pulled > 0 {
                tracing::info!(peer = %p, pulled, startup, "pulled missed revocations from a peer");
            }
            Some(*pulled)
        }
        Some(Err(e)) => {
            sync.client.health.failed(p);
            if startup {
                tracing::warn!(peer = %p, error = %e, "startup catch-up with peer failed");
            } else {
                tracing::debug!(peer = %p, error = %e, "anti-entropy with peer failed");
            }
            None
        }
        None => {
            tracing::error!(peer = %p, "anti-entropy with peer panicked");
            None
        }
    }
}

/// How often to talk to peers: the configured interval, but often enough that a
/// healthy cluster never looks stale.
fn interval(sync: &PeerSync) -> Duration {
    let rt = sync.live.load();
    let s = &rt.config.sync;
    let mut every = s.anti_entropy_interval;
    if let Some(max) = s.max_staleness {
        every = every.min(max / 3);
    }
    every.max(Duration::from_millis(10))
}

pub async fn run(sync: Arc<PeerSync>, mut shutdown: watch::Receiver<bool>) {
    let mut inflight = Inflight::default();
    let status = catch_up(&sync, &mut inflight).await;
    if let Ok(mut s) = sync.startup.lock() {
        *s = Some(status);
    }
    sync.ready.store(true, Ordering::SeqCst);

    let mut every = interval(&sync);
    let mut tick = ticker(every).await;
    let mut rounds: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((p, r)) = inflight.next(), if !inflight.tasks.is_empty() => {
                note(&sync, &p, &r, false);
                continue;
            }
            _ = shutdown.changed() => return,
        }
        rounds += 1;
        // A reload may change the peers or the interval.
        let now_every = interval(&sync);
        if now_every != every {
            every = now_every;
            tick = ticker(every).await;
        }
        for p in &sync.client.peers() {
            inflight.start(&sync, p);
        }
        if rounds.is_multiple_of(64) {
            compact_journal(&sync).await;
        }
    }
}

/// A tick every `every`, its immediate first tick consumed.
async fn ticker(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tick
}

/// Pulls from every peer before the node reports ready: bounded by
/// `startup_sync_timeout`, and says so when no peer answered. Pulls still running at
/// the deadline carry on in the background.
async fn catch_up(sync: &Arc<PeerSync>, inflight: &mut Inflight) -> StartupSync {
    let peers = sync.client.peers();
    let timeout = sync.live.load().config.sync.startup_sync_timeout;
    let t0 = Instant::now();
    for p in &peers {
        inflight.start(sync, p);
    }
    let mut status = StartupSync {
        peers: peers.len(),
        peers_answered: 0,
        entries_pulled: 0,
        millis: 0,
        timed_out: false,
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while !inflight.tasks.is_empty() {
        tokio::select! {
            Some((p, r)) = inflight.next() => {
                if let Some(n) = note(sync, &p, &r, true) {
                    status.peers_answered += 1;
                    status.entries_pulled += n;
                }
            }
            _ = &mut deadline => {
                status.timed_out = true;
                break;
            }
        }
    }
    status.millis = t0.elapsed().as_millis() as u64;
    if peers.is_empty() {
        tracing::debug!("no peers configured");
    } else if status.peers_answered > 0 {
        tracing::info!(
            peers_answered = status.peers_answered,
            peers = status.peers,
            pulled = status.entries_pulled,
            millis = status.millis,
            "caught up with peers"
        );
    } else {
        tracing::warn!("no peer answered the startup catch-up; serving what this node holds");
    }
    status
}

async fn compact_journal(sync: &Arc<PeerSync>) {
    let s = sync.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = s.journal.maybe_compact(s.engine.set(), s.engine.meta()) {
            tracing::error!(error = %e, "sync journal compaction failed");
        }
    })
    .await;
}
