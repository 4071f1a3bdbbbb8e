//! One configured IdP and whether it can be used right now. Discovery runs at start,
//! on reload and, while it fails, again every so often; an IdP that cannot be reached
//! never stops the gateway: its slot says "unavailable, because ..." (for the sign-in
//! button and the log) until a discovery succeeds.

use super::provider::Provider;
use super::{IdpConfig, IdpError, micros};
use crate::clock::Micros;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

/// Whether an IdP can take sign-ins.
#[derive(Debug)]
pub enum IdpStatus {
    Ready(Arc<Provider>),
    Unavailable {
        reason: String,
        /// When the last discovery attempt failed (µs).
        since: Micros,
    },
}

pub struct IdpSlot {
    cfg: IdpConfig,
    status: ArcSwap<IdpStatus>,
    last_attempt: std::sync::Mutex<Option<Micros>>,
}

impl IdpSlot {
    /// A slot not discovered yet (unavailable until [`IdpSlot::discover`] succeeds).
    pub fn new(cfg: IdpConfig, now: Micros) -> IdpSlot {
        IdpSlot {
            cfg,
            status: ArcSwap::from_pointee(IdpStatus::Unavailable {
                reason: "discovery has not run yet".into(),
                since: now,
            }),
            last_attempt: std::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &IdpConfig {
        &self.cfg
    }

    pub fn status(&self) -> Arc<IdpStatus> {
        self.status.load_full()
    }

    /// The provider, or [`IdpError::Unavailable`] saying why not.
    pub fn provider(&self) -> Result<Arc<Provider>, IdpError> {
        match &**self.status.load() {
            IdpStatus::Ready(p) => Ok(p.clone()),
            IdpStatus::Unavailable { reason, .. } => Err(IdpError::Unavailable {
                idp: self.cfg.name.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Runs discovery now. On failure a provider discovered earlier keeps serving (its
    /// metadata is stale, not wrong); without one the slot becomes unavailable.
    pub async fn discover(&self, http: &reqwest::Client, now: Micros) -> Result<(), IdpError> {
        self.note_attempt(now);
        match Provider::discover(self.cfg.clone(), http).await {
            Ok(p) => {
                tracing::info!(idp = %self.cfg.name, issuer = %self.cfg.issuer, "identity provider discovered");
                self.status.store(Arc::new(IdpStatus::Ready(Arc::new(p))));
                Ok(())
            }
            Err(e) => {
                let ready = matches!(**self.status.load(), IdpStatus::Ready(_));
                tracing::warn!(idp = %self.cfg.name, issuer = %self.cfg.issuer, error = %e, keeps_previous = ready, "identity provider discovery failed");
                if !ready {
                    let reason = match &e {
                        IdpError::Unavailable { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    self.status
                        .store(Arc::new(IdpStatus::Unavailable { reason, since: now }));
                }
                Err(e)
            }
        }
    }

    /// Discovers again when the slot is unavailable and the last attempt is at least
    /// `every` old; call it from a periodic task. Returns whether it tried.
    pub async fn retry_if_due(&self, http: &reqwest::Client, now: Micros, every: Duration) -> bool {
        if matches!(**self.status.load(), IdpStatus::Ready(_)) {
            return false;
        }
        let due = self
            .last_attempt
            .lock()
            .map(|last| last.is_none_or(|t| now - t >= micros(every)))
            .unwrap_or(true);
        if due {
            let _ = self.discover(http, now).await;
        }
        due
    }

    fn note_attempt(&self, now: Micros) {
        if let Ok(mut last) = self.last_attempt.lock() {
            *last = Some(now);
        }
    }
}
