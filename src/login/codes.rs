//! One-time hand-off codes: the auth domain gives the browser a short-lived random code
//! (never a token) that the app host redeems once at `/.portcullis/callback`.

use crate::clock::Micros;
use dashmap::DashMap;

#[derive(Debug, Clone)]
pub struct Pending {
    pub session: crate::session::token::Claims,
    pub app: String,
    /// Path and query on the app host to land on.
    pub return_path: String,
    pub expires_us: Micros,
}

#[derive(Default)]
pub struct Codes {
    pending: DashMap<String, Pending>,
}

impl Codes {
    pub fn issue(&self, p: Pending) -> String {
        let code = crate::secrets::random_b64(32);
        self.pending.insert(code.clone(), p);
        code
    }

    /// Removes and returns the code's grant: a code works once, and only before it expires.
    pub fn redeem(&self, code: &str, now: Micros) -> Option<Pending> {
        let (_, p) = self.pending.remove(code)?;
        (now < p.expires_us).then_some(p)
    }

    pub fn sweep(&self, now: Micros) {
        self.pending.retain(|_, p| now < p.expires_us);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}
