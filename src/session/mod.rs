//! Sessions: cookies, token mint and verify, the key ring and JWKS.

pub mod authn;
pub mod cookies;
pub mod keys;
pub mod registry;
pub mod seal;
pub mod token;
