//! Integration tests: one test crate (faster to build than many), one module per area.

mod access_log;
mod browser;
mod cluster;
mod common;
mod console;
mod console_browser;
mod console_idp;
mod fleet;
mod hooks;
mod idp;
mod oidc_login;
mod origin;
mod origin_wire;
mod peer_tls;
mod proxy;
mod redis_backend;
mod revocation;
mod scim;
mod sessions;
mod signals_cluster;
mod signals_redis;
mod ssf;
mod support;
