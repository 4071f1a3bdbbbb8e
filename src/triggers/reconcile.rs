//! Recovery: a SCIM change is durable before its revocations are taken, so a crash in
//! between would leave a deactivated (or deleted) user whose tokens still pass. This
//! pass finds every such user and revokes them: each address of every inactive or
//! deleted SCIM user must have a `user` revocation at least as new as the record.
//!
//! It runs once the node has caught up with the cluster, for every record, and then
//! periodically for records older than a grace period (younger ones are still being
//! applied by the node that took them). Records older than the revocation horizon need
//! nothing: no token from before them can still be alive, and sign-in is refused by
//! the SCIM state itself.

use super::Signals;
use super::apply::Cause;
use crate::revocation::Scope;
use crate::signals::scim::ScimStore;
use std::time::Duration;

impl Signals {
    /// Revokes the addresses of deactivated SCIM users whose revocation is missing;
    /// returns how many revocations it took.
    pub async fn recover(&self, grace: Duration) -> u64 {
        let rt = self.live.load_full();
        let actor = match &rt.config.scim {
            Some(c) => format!("scim:{}", c.name),
            None => "scim".into(),
        };
        let now = self.engine.now_us();
        let horizon = now - rt.revocation_horizon_us();
        let newest = now - grace.as_micros() as i64;
        let set = self.engine.set();
        let mut total = 0;
        for u in self.accounts.scim().users() {
            if u.active && !u.deleted || u.version < horizon || u.version > newest {
                continue;
            }
            let missing: Vec<String> = std::iter::once(u.email())
                .chain(u.aliases())
                .filter(|a| a.contains('@'))
                .filter(|a| set.get(Scope::User, a).is_none_or(|nb| nb < u.version))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let cause = Cause::new(
                actor.clone(),
                Some(&u.id),
                "scim: user deactivated (recovered)",
            );
            match self
                .revoke(Scope::User, missing, &cause, "scim_recover")
                .await
            {
                Ok(n) => {
                    tracing::warn!(user_id = %u.id, email = %u.email(), revoked = n, "revoked a deactivated SCIM user whose revocation was missing");
                    self.metrics.applied(&actor, n);
                    total += n;
                }
                Err(e) => {
                    tracing::error!(error = %e, user_id = %u.id, "recovery revocation failed")
                }
            }
        }
        total
    }
}
