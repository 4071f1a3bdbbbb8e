//! Following the revocation stream: a task that runs `XREAD BLOCK` on a connection of its
//! own (a blocking read would stall every other call on the shared one), hands entries
//! to the consumer in stream order, and when Redis goes away reconnects with backoff
//! and resumes after the last entry it handed over.
//!
//! When the stream lost entries this node never saw (Redis came back without its data,
//! or entries were trimmed past our position), the tail reloads the snapshot hash and
//! hands it over as a [`TailEvent::Resync`] before it goes on.

use super::health::HealthState;
use super::keys::Keys;
use super::revocations::{self, FIELD, Position};
use super::snapshot::{self, Snapshot};
use super::{RedisError, RedisStore, Req, StreamId};
use crate::revocation::RevocationRecord;
use ::redis::AsyncConnectionConfig;
use ::redis::aio::MultiplexedConnection;
use ::redis::streams::StreamReadReply;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Entries read per `XREAD`.
const BATCH: usize = 1_000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the tail hands the consumer, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailEvent {
    /// New stream entries, oldest first.
    Records(Vec<(StreamId, RevocationRecord)>),
    /// The stream lost entries this node had not seen: here is every record in force
    /// again (apply them all); the tail goes on after `position`.
    Resync {
        records: Vec<RevocationRecord>,
        position: StreamId,
        reason: ResyncReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// The stream is behind the position we had (Redis lost its data).
    StreamRegressed,
    /// Entries after our position were trimmed or deleted.
    Trimmed,
}

/// A running tail. Dropping it stops the task and closes its connection.
pub struct Tail {
    rx: mpsc::Receiver<TailEvent>,
    task: JoinHandle<()>,
    health: Arc<HealthState>,
}

impl Tail {
    /// The next event; `None` only if the task ended (it does not end on errors). The
    /// event counts as applied when handed over (health's `last_applied`).
    pub async fn next(&mut self) -> Option<TailEvent> {
        let ev = self.rx.recv().await?;
        match &ev {
            TailEvent::Records(v) => {
                if let Some((id, _)) = v.last() {
                    self.health.applied(*id);
                }
            }
            TailEvent::Resync { position, .. } => self.health.applied(*position),
        }
        Some(ev)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisStore {
    /// Follows the stream from just after `from` (the position [`RedisStore::snapshot`]
    /// returned, or `StreamId::ZERO` for everything); everything up to `from` counts as
    /// applied. Must be called within a tokio runtime. Never fails: while Redis is away
    /// the tail keeps trying, and health says so.
    pub fn tail(&self, from: StreamId) -> Tail {
        self.inner.health.applied(from);
        let (tx, rx) = mpsc::channel(64);
        let follower = Follower {
            client: self.inner.client.clone(),
            keys: self.keys().clone(),
            block: self.inner.cfg.block,
            op_timeout: self.inner.cfg.op_timeout,
            connect_timeout: self.inner.cfg.connect_timeout,
            health: self.inner.health.clone(),
            tx,
            cursor: from,
        };
        Tail {
            rx,
            task: tokio::spawn(follower.run()),
            health: self.inner.health.clone(),
        }
    }
}

struct Follower {
    client: ::redis::Client,
    keys: Keys,
    block: Duration,
    op_timeout: Duration,
    connect_timeout: Duration,
    health: Arc<HealthState>,
    tx: mpsc::Sender<TailEvent>,
    cursor: StreamId,
}

/// Why a connected session ended.
enum End {
    /// The consumer is gone: stop.
    Closed,
    /// Redis went away (after `connected` or before).
    Lost { err: RedisError, connected: bool },
}

impl Follower {
    async fn run(mut self) {
        let mut delay = MIN_BACKOFF;
        loop {
            match self.session().await {
                End::Closed => return,
                End::Lost { err, connected } => {
                    self.health.down(&err);
                    tracing::debug!(error = %err, cursor = %self.cursor, "redis tail: reconnecting");
                    if connected {
                        delay = MIN_BACKOFF;
                    }
                }
            }
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: connect, check the stream did not lose what we have not
    /// seen, then read until something fails.
    async fn session(&mut self) -> End {
        let lost = |err, connected| End::Lost { err, connected };
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => return lost(e, false),
        };
        match self.check_continuity(&mut conn).await {
            Ok(true) => {}
            Ok(false) => return End::Closed,
            Err(e) => return lost(e, false),
        }
        self.health.up();
        loop {
            let entries = match self.read(&mut conn).await {
                Ok(v) => v,
                Err(e) => return lost(e, true),
            };
            self.health.up();
            if entries.is_empty() {
                self.health.tip(self.cursor);
                continue;
            }
            if entries.len() >= BATCH {
                // There may be more behind this batch: learn the tip for the lag figure.
                let req = revocations::position_req(&self.keys);
                let raw = Req::Script(&req).send(&mut conn).await;
                if let Ok(p) = raw
                    .map_err(|e| RedisError::from_redis("tail position", e))
                    .and_then(|r| revocations::parse_position("tail position", r))
                {
                    self.health.tip(p.last);
                }
            }
            let (last, records) = decode(self.cursor, entries);
            self.cursor = last;
            self.health.tip(last);
            if !records.is_empty() && self.tx.send(TailEvent::Records(records)).await.is_err() {
                return End::Closed;
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.block + self.op_timeout));
        let bound = self.connect_timeout + self.op_timeout;
        match tokio::time::timeout(
            bound,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(RedisError::from_redis("tail connect", e)),
            Err(_) => Err(RedisError::Timeout {
                op: "tail connect",
                after: bound,
            }),
        }
    }

    /// Compares our position with the stream's. `Ok(false)`: the consumer is gone.
    async fn check_continuity(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<bool, RedisError> {
        let req = revocations::position_req(&self.keys);
        let raw = bounded(
            "tail position",
            self.op_timeout,
            Req::Script(&req).send(conn),
        )
        .await?;
        let pos = revocations::parse_position("tail position", raw)?;
        let Some(reason) = gap(self.cursor, &pos) else {
            self.health.tip(pos.last);
            return Ok(true);
        };
        tracing::warn!(cursor = %self.cursor, last = %pos.last, max_deleted = %pos.max_deleted, ?reason,
            "redis tail: the stream lost entries this node had not read; reloading the snapshot");
        let records = self.load_snapshot(conn).await?;
        self.cursor = pos.last;
        self.health.reset_tip(pos.last);
        let ev = TailEvent::Resync {
            records,
            position: pos.last,
            reason,
        };
        Ok(self.tx.send(ev).await.is_ok())
    }

    async fn load_snapshot(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Vec<RevocationRecord>, RedisError> {
        let mut snap = Snapshot::default();
        for legacy in [false, true] {
            let mut cursor = 0;
            loop {
                let cmd = snapshot::scan_cmd(&self.keys, legacy, cursor);
                let (next, values): snapshot::Page =
                    bounded("tail snapshot", self.op_timeout, Req::Cmd(&cmd).send(conn)).await?;
                snap.add_page(legacy, values, "tail snapshot");
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(snap.records())
    }

    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Vec<::redis::streams::StreamId>, RedisError> {
        let reply: Option<StreamReadReply> = ::redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(self.cursor.to_string())
            .query_async(conn)
            .await
            .map_err(|e| RedisError::from_redis("tail read", e))?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }
}

/// Whether the stream lost entries after `cursor` that we have not read: it is behind
/// us (Redis lost its data), or entries after us were deleted or trimmed. A cursor at
/// the newest entry has nothing after it to lose.
fn gap(cursor: StreamId, pos: &Position) -> Option<ResyncReason> {
    if cursor > pos.last {
        Some(ResyncReason::StreamRegressed)
    } else if cursor < pos.last && (pos.max_deleted > cursor || pos.trimmed_before > cursor) {
        Some(ResyncReason::Trimmed)
    } else {
        None
    }
}

/// The entries' records in order, and the last id (undecodable entries are skipped
/// with a warning, but the position moves past them).
fn decode(
    mut last: StreamId,
    entries: Vec<::redis::streams::StreamId>,
) -> (StreamId, Vec<(StreamId, RevocationRecord)>) {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Ok(id) = e.id.parse::<StreamId>() else {
            tracing::warn!(id = %e.id, "redis tail: skipping entry with a bad id");
            continue;
        };
        last = id;
        let rec = e
            .get::<String>(FIELD)
            .ok_or_else(|| "no record field".to_owned())
            .and_then(|j| serde_json::from_str::<RevocationRecord>(&j).map_err(|e| e.to_string()));
        match rec {
            Ok(r) => out.push((id, r)),
            Err(why) => tracing::warn!(%id, why, "redis tail: skipping undecodable entry"),
        }
    }
    (last, out)
}

async fn bounded<T>(
    op: &'static str,
    after: Duration,
    f: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(after, f).await {
        Ok(r) => r.map_err(|e| RedisError::from_redis(op, e)),
        Err(_) => Err(RedisError::Timeout { op, after }),
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    #[test]
    fn detects_regressed_and_trimmed_streams() {
        let pos = |last, max_deleted, trimmed| Position {
            last: id(last),
            max_deleted: id(max_deleted),
            exists: true,
            trimmed_before: id(trimmed),
        };
        assert_eq!(gap(id(5), &pos(9, 0, 0)), None);
        assert_eq!(gap(id(5), &pos(9, 5, 5)), None, "gone up to where we are");
        assert_eq!(gap(id(5), &pos(9, 6, 0)), Some(ResyncReason::Trimmed));
        assert_eq!(gap(id(5), &pos(9, 0, 7)), Some(ResyncReason::Trimmed));
        assert_eq!(
            gap(id(9), &pos(9, 0, 20)),
            None,
            "at the newest entry: nothing missed"
        );
        assert_eq!(
            gap(id(12), &pos(9, 0, 0)),
            Some(ResyncReason::StreamRegressed)
        );
        assert_eq!(gap(StreamId::ZERO, &pos(0, 0, 0)), None);
    }
}
