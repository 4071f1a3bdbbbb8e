//! What the triggers share: revoking through the engine on behalf of a trigger (actor,
//! external id, reason), audit lines for changes that revoke nothing (a reactivation,
//! an account enabled again), and finding the people and sessions a Shared Signals
//! subject names.

use super::Signals;
use crate::audit::AuditEvent;
use crate::config::idp::IdpConfig;
use crate::revocation::Scope;
use crate::revocation::engine::{RevokeError, RevokeRequest};
use crate::runtime::Runtime;
use crate::signals::scim::ScimStore;
use crate::signals::ssf::{SsfSession, SsfUser};
use std::collections::BTreeSet;

/// Longest reason the engine keeps.
const MAX_REASON: usize = 128;

/// Who asked, under which id, and why.
#[derive(Debug, Clone)]
pub(super) struct Cause {
    pub actor: String,
    pub external_id: Option<String>,
    pub reason: String,
}

impl Cause {
    pub fn new(actor: String, external_id: Option<&str>, reason: &str) -> Cause {
        let reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_REASON)
            .collect();
        let mut reason = reason.trim().to_string();
        while reason.len() > MAX_REASON {
            reason.pop();
        }
        Cause {
            actor,
            external_id: external_id.map(str::to_string),
            reason,
        }
    }
}

impl Signals {
    /// Revokes `targets` of `scope` with one fsync; returns how many were revoked.
    pub(super) async fn revoke(
        &self,
        scope: Scope,
        targets: impl IntoIterator<Item = String>,
        cause: &Cause,
        action: &'static str,
    ) -> Result<u64, RevokeError> {
        let reqs: Vec<RevokeRequest> = targets
            .into_iter()
            .map(|target| RevokeRequest {
                scope,
                target,
                reason: cause.reason.clone(),
                actor: cause.actor.clone(),
                external_id: cause.external_id.clone(),
            })
            .collect();
        if reqs.is_empty() {
            return Ok(0);
        }
        let out = self.engine.revoke_batch(reqs, action).await?;
        Ok(out.len() as u64)
    }

    /// An audit line for a change that revokes nothing.
    pub(super) async fn note(&self, action: &str, target: &str, cause: &Cause) {
        let ev = AuditEvent {
            time_us: self.engine.now_us(),
            actor: cause.actor.clone(),
            action: action.to_string(),
            scope: None,
            target: Some(target.to_string()),
            reason: Some(cause.reason.clone()),
            sessions_revoked: None,
            node: self.engine.node_id().to_string(),
            id: crate::secrets::random_b64(12),
            external_id: cause.external_id.clone(),
        };
        self.engine.audit(vec![ev]).await;
    }

    /// The email addresses a subject names: itself, or for an `iss_sub` subject the
    /// users that identity provider signed in with that `sub` (from the cluster's
    /// sessions, ended ones included) and the SCIM users whose `externalId` is that
    /// `sub`.
    pub(super) async fn users_named(&self, rt: &Runtime, user: &SsfUser) -> Vec<String> {
        let (iss, sub) = match user {
            SsfUser::Email { email } => return vec![email.trim().to_ascii_lowercase()],
            SsfUser::IssSub { iss, sub } => (iss, sub),
        };
        let idps = idps_of(&rt.config.idps, iss);
        let mut out = BTreeSet::new();
        if !idps.is_empty() {
            // Ended sessions still say who signed in with that `sub`.
            let d = self.directory.created_since(0).await;
            for s in d.sessions {
                if idps.contains(&s.info.idp.as_str()) && s.info.idp_sub == *sub {
                    out.insert(s.info.user.to_ascii_lowercase());
                }
            }
        }
        for u in self.accounts.scim().users() {
            if !u.deleted && u.external_id.as_deref() == Some(sub.as_str()) {
                out.insert(u.email());
            }
        }
        out.into_iter().collect()
    }

    /// The global sessions started from the identity provider's session `s`.
    pub(super) async fn sessions_named(&self, rt: &Runtime, s: &SsfSession) -> Vec<String> {
        let idps = s.iss.as_deref().map(|iss| idps_of(&rt.config.idps, iss));
        let d = self.directory.live(None).await;
        d.sessions
            .into_iter()
            .filter(|v| v.info.idp_sid == s.id && !v.info.idp_sid.is_empty())
            .filter(|v| {
                idps.as_ref()
                    .is_none_or(|names| names.contains(&v.info.idp.as_str()))
            })
            .map(|v| v.info.sid)
            .collect()
    }
}

/// The names of the `[[idp]]`s whose issuer is `iss` (a trailing slash aside).
fn idps_of<'a>(idps: &'a [IdpConfig], iss: &str) -> Vec<&'a str> {
    let iss = iss.trim_end_matches('/');
    idps.iter()
        .filter(|i| i.issuer.trim_end_matches('/') == iss)
        .map(|i| i.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_and_printable() {
        let c = Cause::new(
            "ssf:x".into(),
            Some("j"),
            &format!("a\nb{}", "é".repeat(200)),
        );
        assert!(c.reason.len() <= MAX_REASON);
        assert!(c.reason.starts_with("ab"));
        assert!(!c.reason.chars().any(char::is_control));
    }
}
