//! Integration tests: one test crate (faster to build than many), one module per area.

mod common;
mod origin;
mod proxy;
mod sessions;
