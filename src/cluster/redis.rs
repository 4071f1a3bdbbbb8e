//! The Redis backend's storage layer: everything a fleet of gateways shares through one
//! Redis (or Valkey), with no knowledge of HTTP or of the gateway around it.
//!
//! - Revocations: [`RedisStore::publish`] appends records to a Stream and keeps a
//!   snapshot hash of the records in force, atomically (a Lua script);
//!   [`RedisStore::snapshot`] returns that set and the stream position to tail from;
//!   [`RedisStore::tail`] follows the stream on its own connection with `XREAD BLOCK`,
//!   reconnecting and resuming by itself; [`RedisStore::prune`] forgets what no live
//!   token can depend on any more.
//! - Small cluster-wide state for the browser flows: single-use keys
//!   ([`RedisStore::claim_once`]), sliding-window failure counters (sign-in throttle), a
//!   session registry, and last-writer-wins documents (SCIM).
//! - [`Outbox`]: revocations not yet handed to Redis, durable on local disk until
//!   [`RedisStore::flush_outbox`] hands them over.
//!
//! Every call is bounded by `op_timeout` and fails with a typed [`RedisError`] when Redis
//! is away; nothing here ever waits for Redis to come back. See `keys.rs` for the layout.

mod clocks;
mod config;
mod docs;
mod error;
mod health;
mod keys;
mod limits;
mod outbox;
mod revocations;
mod sessions;
mod snapshot;
mod stream_id;
mod tail;

pub use config::{DEFAULT_PREFIX, RedisConfig, redact_url};
pub use docs::{Doc, DocChanges};
pub use error::RedisError;
pub use health::Health;
pub use outbox::{Outbox, OutboxError};
pub use revocations::PruneStats;
pub use sessions::SessionRecord;
pub use snapshot::Snapshot;
pub use stream_id::{BadStreamId, StreamId};
pub use tail::{ResyncReason, Tail, TailEvent};

use crate::clock::Clock;
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{Cmd, FromRedisValue, Pipeline, ScriptInvocation};
use health::HealthState;
use keys::Keys;
use std::sync::Arc;
use std::time::Duration;

/// A handle on the shared Redis state. Cheap to clone; all clones share one multiplexed
/// connection (re-established by `redis`'s `ConnectionManager`) and one [`Health`].
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: ::redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    cfg: RedisConfig,
    health: Arc<HealthState>,
}

impl RedisStore {
    /// Builds the store without connecting: a node must start even while Redis is down.
    /// Fails only on a bad configuration, or when called outside a tokio runtime.
    pub fn new(cfg: RedisConfig, clock: Arc<dyn Clock>) -> Result<RedisStore, RedisError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::Config(
                "the redis backend must be created inside a tokio runtime".into(),
            ));
        }
        let client = cfg.client()?;
        // One connection attempt per call (the call's own timeout bounds it); the next
        // call tries again. Retrying inside the manager would only hold callers longer.
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(cfg.op_timeout)
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.op_timeout));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), mgr_cfg)
            .map_err(|e| RedisError::Config(e.to_string()))?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                conn,
                keys: Keys::new(&cfg.prefix),
                cfg,
                health: Arc::new(HealthState::new(clock)),
            }),
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.inner.cfg
    }

    /// Connected, reconnects, last entry applied, lag. Never touches Redis.
    pub fn health(&self) -> Health {
        self.inner.health.snapshot()
    }

    /// How long since Redis last answered (`None`: never since this store was made).
    pub fn silent_for(&self) -> Option<std::time::Duration> {
        self.inner.health.silent_for()
    }

    /// One round trip to Redis.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let cmd = ::redis::cmd("PING");
        self.run::<String>("ping", Req::Cmd(&cmd)).await.map(|_| ())
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Sends `req` on the shared connection within `op_timeout`, retrying once at once
    /// when the connection turned out to be dead (Redis restarted under it), and reports
    /// the outcome to the health counters.
    async fn run<T: FromRedisValue>(
        &self,
        op: &'static str,
        req: Req<'_>,
    ) -> Result<T, RedisError> {
        let after = self.inner.cfg.op_timeout;
        let attempt = async {
            let mut conn = self.inner.conn.clone();
            match req.send(&mut conn).await {
                Err(e) if error::is_retriable(&e) => {
                    tracing::debug!(op, error = %e, "redis: retrying on a fresh connection");
                    req.send(&mut conn).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(after, attempt).await {
            Ok(Ok(v)) => {
                self.inner.health.up();
                Ok(v)
            }
            Ok(Err(e)) => {
                let err = RedisError::from_redis(op, e);
                if err.is_unavailable() {
                    self.inner.health.down(&err);
                } else {
                    self.inner.health.up();
                }
                Err(err)
            }
            Err(_) => {
                let err = RedisError::Timeout { op, after };
                self.inner.health.down(&err);
                Err(err)
            }
        }
    }
}

/// One request: a command, a pipeline (possibly MULTI/EXEC) or a Lua script call.
#[derive(Clone, Copy)]
enum Req<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
    Script(&'a ScriptInvocation<'a>),
}

impl Req<'_> {
    async fn send<T: FromRedisValue>(self, c: &mut impl ConnectionLike) -> ::redis::RedisResult<T> {
        match self {
            Req::Cmd(cmd) => cmd.query_async(c).await,
            Req::Pipe(p) => p.query_async(c).await,
            Req::Script(s) => s.invoke_async(c).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn outside_a_runtime_new_is_an_error_not_a_panic() {
        let r = RedisStore::new(
            RedisConfig::new("redis://127.0.0.1:1/0"),
            Arc::new(SystemClock),
        );
        assert!(matches!(r, Err(RedisError::Config(_))));
    }

    #[tokio::test]
    async fn inside_a_runtime_new_connects_to_nothing_yet() {
        let r = RedisStore::new(
            RedisConfig::new("redis://127.0.0.1:1/0"),
            Arc::new(SystemClock),
        );
        let store = r.expect("a store even with nothing listening");
        assert!(!store.health().connected);
    }
}
