//! Portcullis: an identity-aware reverse proxy with cluster-wide instant revocation.
//!
//! Modules in layers; each uses only the ones listed before it:
//! - leaves: [`clock`], [`secrets`], [`timefmt`], [`store`] (durable record log),
//!   [`web`] (HTTP building blocks), [`metrics`];
//! - [`config`], [`tls`], [`session`] (keys, tokens, cookies, registry), [`audit`],
//!   [`origin`] (the HTTP/1 origin client), [`error`];
//! - [`revocation`] (set, log, engine), [`runtime`] (the live config), [`auth`],
//!   [`idp`] (OpenID Connect providers), [`signals`] (SCIM, Shared Signals, webhooks),
//!   [`cluster`] (shared state interface);
//! - [`sync`] (the peer backend), [`login`] (sign-in flows), [`triggers`] (the SCIM,
//!   Shared Signals and webhook endpoints, applied through the engine), [`console`] (the
//!   admin console);
//! - [`proxy`] (the data plane), [`control`] (the control port);
//! - [`server`]: builds the node's services and runs the listeners.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod control;
pub mod cpus;
pub(crate) mod error;
pub mod idp;
pub mod login;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod revocation;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod session;
pub mod signals;
pub(crate) mod store;
pub mod sync;
pub(crate) mod timefmt;
pub mod tls;
pub mod triggers;
pub(crate) mod web;
