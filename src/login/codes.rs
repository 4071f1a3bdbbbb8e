//! One-time hand-off codes: the auth domain gives the browser a short-lived code (never
//! a token) that the app host redeems once at `/.portcullis/callback`. The code is the
//! grant itself, sealed (see `session::seal`), so whichever node the callback reaches
//! can open it; single use is enforced cluster-wide by the caller (`claim_once` on the
//! code's id).

use crate::clock::Micros;
use crate::session::seal::{Purpose, Sealer};
use crate::session::token::Claims;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Random id: the key of the code's single use.
    pub id: String,
    pub session: Claims,
    pub app: String,
    /// Path and query on the app host to land on.
    pub return_path: String,
    pub expires_us: Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("not a code this cluster issued")]
    Invalid,
    #[error("the code has expired")]
    Expired,
}

/// Seals the grant into a code.
pub fn issue(sealer: &Sealer, p: &Pending) -> Option<String> {
    let json = serde_json::to_vec(p).ok()?;
    sealer.seal(Purpose::Handoff, &json)
}

/// Opens a code: its grant, if it is genuine and not expired. (Not yet used: the
/// caller claims `id` once across the cluster.)
pub fn open(sealer: &Sealer, code: &str, now: Micros) -> Result<Pending, CodeError> {
    let json = sealer
        .open(Purpose::Handoff, code)
        .ok_or(CodeError::Invalid)?;
    let p: Pending = serde_json::from_slice(&json).map_err(|_| CodeError::Invalid)?;
    if now >= p.expires_us {
        return Err(CodeError::Expired);
    }
    Ok(p)
}
