//! Integration tests: one test crate (faster to build than many), one module per area.

mod access_log;
mod browser;
mod cluster;
mod common;
mod origin;
mod origin_wire;
mod proxy;
mod revocation;
mod sessions;
