//! Cluster backends: the shared state that lets every node of a fleet answer any request.
//! For now only the Redis backend's storage layer lives here; the lead wires it behind
//! the revocation engine's `Notifier` and the cluster-state interface.

pub mod redis;
