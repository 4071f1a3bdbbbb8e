//! Portcullis: an identity-aware reverse proxy with cluster-wide instant revocation.
//!
//! The request path is a pipeline of plain functions (`proxy::route` → `auth` →
//! policy → `proxy::forward`); state lives in [`gateway::Gateway`], and the server in
//! [`server`] wires listeners, reload and shutdown around it.

pub mod access_log;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod control;
pub mod cpus;
pub mod error;
pub mod gateway;
pub mod login;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod revocation;
pub mod secrets;
pub mod server;
pub mod session;
pub mod sync;
pub mod tls;
