//! Revocation triggers from outside, served: the SCIM 2.0 service provider
//! (`https://<auth_domain>/scim/v2/...`), the Shared Signals push receiver
//! (`POST https://<auth_domain>/ssf/<name>/events`) and signed SIEM/SOAR webhooks
//! (`POST /v1/hooks/<name>` on the control port).
//!
//! The protocols themselves live in `signals` (plain data in and out); this module
//! authenticates each delivery, keeps SCIM state in the cluster's documents, applies
//! what a signal asks for through the revocation engine (durable, enforced here,
//! propagated, audited with the trigger as actor `scim:<name>` / `ssf:<name>` /
//! `hook:<name>` and its own id as `external_id`), makes retransmissions harmless
//! (cluster-wide, durable de-duplication of SET `jti`s and webhook `event_id`s), and
//! counts everything per trigger. [`Signals::spawn`] runs the recovery pass that makes
//! sure no deactivated SCIM user lacks its revocation after a crash.

mod apply;
mod dedup;
mod hooks;
pub mod metrics;
mod reconcile;
mod scim;
mod ssf;

use crate::cluster::accounts::Accounts;
use crate::cluster::docs::DocStore;
use crate::cluster::{SessionDirectory, SharedState};
use crate::error::GatewayError;
use crate::metrics::Writer;
use crate::revocation::Freshness;
use crate::revocation::engine::Engine;
use crate::runtime::{Live, Runtime};
use crate::web::body::Body;
use crate::web::ctx::ReqCtx;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use metrics::TriggerMetrics;

/// The path prefix of the SCIM service on the auth domain.
pub const SCIM_PREFIX: &str = "/scim/v2";
/// The path prefix of the Shared Signals receivers on the auth domain.
pub const SSF_PREFIX: &str = "/ssf/";

/// How often the upkeep runs: the recovery pass and the document store's upkeep.
const UPKEEP_EVERY: Duration = Duration::from_secs(30);
/// A deactivation younger than this is left to the node applying it.
const RECOVERY_GRACE: Duration = Duration::from_secs(60);

/// The signal endpoints and what they apply through.
pub struct Signals {
    live: Arc<Live>,
    engine: Arc<Engine>,
    docs: Arc<DocStore>,
    accounts: Accounts,
    shared: Arc<dyn SharedState>,
    directory: Arc<dyn SessionDirectory>,
    freshness: Arc<dyn Freshness>,
    metrics: TriggerMetrics,
    receivers: Mutex<Option<Arc<ssf::Receivers>>>,
}

pub struct SignalsParts {
    pub live: Arc<Live>,
    pub engine: Arc<Engine>,
    pub docs: Arc<DocStore>,
    pub shared: Arc<dyn SharedState>,
    pub directory: Arc<dyn SessionDirectory>,
    pub freshness: Arc<dyn Freshness>,
}

impl Signals {
    pub fn new(p: SignalsParts) -> Self {
        Self {
            accounts: Accounts::new(p.docs.clone()),
            live: p.live,
            engine: p.engine,
            docs: p.docs,
            shared: p.shared,
            directory: p.directory,
            freshness: p.freshness,
            metrics: TriggerMetrics::default(),
            receivers: Mutex::new(None),
        }
    }

    /// What sign-in and token minting ask about accounts.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn metrics(&self) -> &TriggerMetrics {
        &self.metrics
    }

    /// Whether a path on the auth domain is one of these endpoints.
    pub fn serves(path: &str) -> bool {
        path == SCIM_PREFIX || path.starts_with("/scim/v2/") || path.starts_with(SSF_PREFIX)
    }

    /// A request on the auth domain under `/scim/v2` or `/ssf/`.
    pub async fn handle(
        &self,
        rt: &Arc<Runtime>,
        ctx: &ReqCtx,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        if req.uri().path().starts_with(SSF_PREFIX) {
            return self.ssf(rt, req).await;
        }
        Ok(self.scim(rt, ctx, req).await)
    }

    /// The signal counters on the metrics page.
    pub fn write_metrics(&self, w: &mut Writer) {
        self.metrics.write(w);
    }

    /// The upkeep task: once this node has caught up with the cluster, the recovery
    /// pass for every deactivation; then, every 30 s, the pass for deactivations older
    /// than a minute and the document store's upkeep.
    pub fn spawn(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while me.freshness.not_ready().is_some() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = shutdown.changed() => return,
                }
            }
            me.recover(Duration::ZERO).await;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(UPKEEP_EVERY) => {}
                    _ = shutdown.changed() => return,
                }
                me.recover(RECOVERY_GRACE).await;
                let docs = me.docs.clone();
                match tokio::task::spawn_blocking(move || docs.maintain()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "document store upkeep failed"),
                    Err(e) => tracing::error!(error = %e, "document store upkeep failed"),
                }
            }
        })
    }
}
