//! The configured identity providers of this node: one [`IdpSlot`] per `[[idp]]`, the
//! HTTP client they share, and their discovery. The composition root builds it from the
//! config, refreshes it on reload ([`Idps::reconfigure`]: an IdP whose settings did not
//! change keeps its slot and its discovered metadata), and runs [`Idps::run`] in the
//! background: discovery of new slots right away, and of unavailable ones again every
//! [`RETRY_EVERY`]. An IdP that cannot be reached never stops the gateway; its slot says
//! why, its sign-in button says it is unavailable.

use crate::clock::Micros;
use crate::idp::{IdpConfig, IdpError, IdpSlot, http_client};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// An unavailable IdP is asked again this often.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);
/// How often the background task looks for slots that are due.
const TICK: Duration = Duration::from_secs(2);

pub struct Idps {
    http: reqwest::Client,
    slots: ArcSwap<Vec<Arc<IdpSlot>>>,
    /// Woken when a reload added slots, so they are discovered now, not at the next tick.
    changed: Notify,
}

impl Idps {
    /// Slots for `configs`, not discovered yet (see [`Idps::run`]).
    pub fn new(configs: &[IdpConfig], now: Micros) -> Result<Idps, IdpError> {
        let slots = configs
            .iter()
            .map(|c| Arc::new(IdpSlot::new(c.clone(), now)))
            .collect();
        Ok(Idps {
            http: http_client()?,
            slots: ArcSwap::from_pointee(slots),
            changed: Notify::new(),
        })
    }

    /// Every slot, in config order.
    pub fn all(&self) -> Arc<Vec<Arc<IdpSlot>>> {
        self.slots.load_full()
    }

    pub fn get(&self, name: &str) -> Option<Arc<IdpSlot>> {
        self.slots
            .load()
            .iter()
            .find(|s| s.config().name == name)
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.load().is_empty()
    }

    /// Installs the IdPs of a reloaded config: a slot whose `IdpConfig` is unchanged is
    /// kept as it is; new or changed ones start undiscovered and are discovered at once.
    pub fn reconfigure(&self, configs: &[IdpConfig], now: Micros) {
        let old = self.slots.load_full();
        let mut fresh = 0;
        let slots = configs
            .iter()
            .map(|c| match old.iter().find(|s| s.config() == c) {
                Some(kept) => kept.clone(),
                None => {
                    fresh += 1;
                    Arc::new(IdpSlot::new(c.clone(), now))
                }
            })
            .collect();
        self.slots.store(Arc::new(slots));
        if fresh > 0 {
            tracing::info!(
                new_or_changed = fresh,
                "identity providers reconfigured; discovering"
            );
            self.changed.notify_one();
        }
    }

    /// Discovers every slot that is unavailable and due (never tried, or last tried at
    /// least [`RETRY_EVERY`] ago), all at once.
    pub async fn discover_due(&self, now: Micros) {
        let slots = self.all();
        let attempts = slots
            .iter()
            .map(|s| s.retry_if_due(&self.http, now, RETRY_EVERY));
        futures_util::future::join_all(attempts).await;
    }

    /// The background task: discovers at start, after reloads that add IdPs, and
    /// retries unavailable IdPs, until `shutdown` says stop.
    pub async fn run(
        self: Arc<Self>,
        now: impl Fn() -> Micros + Send,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.discover_due(now()).await;
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
