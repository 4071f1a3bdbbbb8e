//! Durable storage primitives shared by every journal of the gateway.

pub mod record_log;

pub use record_log::{Framing, RecordLog, StoreError, Sync};
