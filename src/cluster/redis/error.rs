//! The one error type of the Redis backend. Callers mostly ask one question of it:
//! [`RedisError::is_unavailable`] (Redis could not be reached in time: keep going on
//! local state, queue what must reach Redis later) versus everything else (a bug, bad
//! data or a misconfiguration that retrying will not fix).

use ::redis::{ErrorKind, ServerErrorKind};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis config: {0}")]
    Config(String),
    #[error("redis unreachable during {op}: {detail}")]
    Unavailable { op: &'static str, detail: String },
    #[error("redis did not answer {op} within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("redis refused {op}: {detail}")]
    Server { op: &'static str, detail: String },
    #[error("unexpected data from redis in {op}: {detail}")]
    Data { op: &'static str, detail: String },
    #[error("encoding for redis: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Outbox(#[from] super::outbox::OutboxError),
}

impl RedisError {
    /// Redis could not be reached or did not answer in time: worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RedisError::Unavailable { .. } | RedisError::Timeout { .. }
        )
    }

    pub(super) fn from_redis(op: &'static str, e: ::redis::RedisError) -> RedisError {
        let detail = e.to_string();
        if is_connection_trouble(&e) {
            RedisError::Unavailable { op, detail }
        } else if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
            RedisError::Data { op, detail }
        } else {
            RedisError::Server { op, detail }
        }
    }

    pub(super) fn data(op: &'static str, detail: impl Into<String>) -> RedisError {
        RedisError::Data {
            op,
            detail: detail.into(),
        }
    }
}

/// The connection is gone or not there yet (refused, reset, timed out, Redis still
/// loading its append-only file after a restart).
pub(super) fn is_connection_trouble(e: &::redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::BusyLoading)
                | ErrorKind::Server(ServerErrorKind::MasterDown)
                | ErrorKind::Server(ServerErrorKind::TryAgain)
        )
}

/// Worth one immediate retry on a fresh connection: the request most likely never
/// reached a live server (the old socket died under us, e.g. Redis restarted).
pub(super) fn is_retriable(e: &::redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_unrecoverable_error()
}
