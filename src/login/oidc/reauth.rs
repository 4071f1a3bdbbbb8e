//! Re-authentication after a revocation. When a user's sessions were revoked, the next
//! sign-in must not be completed silently by the IdP's own session (an attacker holding
//! a stolen IdP cookie would ride straight back in on it): the IdP is asked for a fresh
//! authentication (`prompt=login`, `max_age=0`, the MFA `acr_values`), and an ID token
//! whose `auth_time` is older than the revocation is refused.
//!
//! Two moments decide it:
//! - before the IdP, from this browser's own session cookie (kept on the auth domain
//!   after it was revoked): revoked by an operator → ask for a fresh authentication
//!   right away ([`Login::browser_revoked_at`]);
//! - after the code exchange, once the user is known, from the revocation set: a
//!   revocation of the user, of one of the groups the IdP reports, of everything, or of
//!   the user's most recent session ([`Login::reauth_required`]). An older `auth_time`
//!   restarts the sign-in once with the fresh-authentication request.
//!
//! A user's own logout and the IdP's back-channel logout end sessions too, but they are
//! no reason to distrust the IdP's session: their revocations (actors `user:` and
//! `idp:`) are left out.

use super::Login;
use crate::clock::Micros;
use crate::idp::IdpIdentity;
use crate::revocation::Scope;
use crate::revocation::meta::MetaIndex;
use crate::revocation::set::RevocationSet;
use crate::runtime::Runtime;
use crate::session::cookies::GatewayCookies;
use crate::session::token::Subject;
use http::HeaderMap;

/// Whether the revocation `(scope, target, nb)` was an operator's (or a signal's)
/// decision, rather than a user's logout or the IdP's own logout. Unknown: assume so.
fn by_operator(meta: &MetaIndex, scope: Scope, target: &str, nb: Micros) -> bool {
    meta.get(scope, target, nb)
        .is_none_or(|r| !(r.actor.starts_with("user:") || r.actor.starts_with("idp:")))
}

/// The latest revocation (at or after the session's creation) that ended the session
/// `claims` describe and calls for re-authentication.
fn revoked_at(set: &RevocationSet, meta: &MetaIndex, claims: &impl Subject) -> Option<Micros> {
    let created = claims.iat_us();
    let covering = |scope: Scope, key: &str| set.get(scope, key).filter(|nb| *nb >= created);
    let session = covering(Scope::Session, claims.sid())
        .filter(|nb| by_operator(meta, Scope::Session, claims.sid(), *nb));
    let groups = claims
        .groups()
        .iter()
        .filter_map(|g| covering(Scope::Group, g))
        .max();
    [
        covering(Scope::All, "*"),
        covering(Scope::User, claims.sub()),
        groups,
        session,
    ]
    .into_iter()
    .flatten()
    .max()
}

impl Login {
    /// The instant of the revocation that ended this browser's global session, when it
    /// calls for a fresh authentication at the IdP (None: no session cookie, a live
    /// one, an expired one, or one the user logged out of).
    pub(super) fn browser_revoked_at(&self, rt: &Runtime, h: &HeaderMap) -> Option<Micros> {
        let token = GatewayCookies::parse(h).ok()?.session?;
        let iss = &rt.config.issuer;
        let v = self.auth.verify(token, iss, iss).ok()?;
        revoked_at(self.auth.revocations(), self.engine.meta(), &*v.claims)
    }

    /// The instant the IdP sign-in of `identity` must not be older than, if any: the
    /// latest revocation of the user, of one of its groups, of everything, or of its
    /// most recent session.
    pub(super) async fn reauth_required(
        &self,
        rt: &Runtime,
        identity: &IdpIdentity,
        now: Micros,
    ) -> Option<Micros> {
        let set = self.auth.revocations();
        let groups = identity
            .groups
            .iter()
            .filter_map(|g| set.get(Scope::Group, g))
            .max();
        let direct = [
            set.get(Scope::All, "*"),
            set.get(Scope::User, &identity.email),
            groups,
        ]
        .into_iter()
        .flatten()
        .max();
        let session = self.latest_session_revoked(rt, &identity.email, now).await;
        direct.max(session)
    }

    /// When an operator revoked the user's most recent session (by its session id):
    /// that revocation's instant. Single-session revocations by operators are rare, so
    /// the cluster-wide session list is only asked for while one is in force.
    async fn latest_session_revoked(
        &self,
        rt: &Runtime,
        email: &str,
        now: Micros,
    ) -> Option<Micros> {
        let set = self.auth.revocations();
        let mut sessions = Vec::new();
        set.for_each(|scope, sid, nb| {
            if scope == Scope::Session {
                sessions.push((sid.to_string(), nb));
            }
        });
        let meta = self.engine.meta();
        sessions.retain(|(sid, nb)| by_operator(meta, Scope::Session, sid, *nb));
        if sessions.is_empty() {
            return None;
        }
        let since = now - rt.config.session.global_duration.as_micros() as i64;
        let known = self.directory.created_since(since).await;
        let latest = known
            .sessions
            .iter()
            .filter(|s| s.info.user.eq_ignore_ascii_case(email))
            .max_by_key(|s| s.info.created_us)?;
        sessions
            .iter()
            .find(|(sid, nb)| *sid == latest.info.sid && *nb >= latest.info.created_us)
            .map(|(_, nb)| *nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::RevocationRecord;
    use crate::session::token::Claims;

    fn claims(sid: &str, user: &str, groups: &[&str], iat_us: Micros) -> Claims {
        Claims {
            iss: "i".into(),
            aud: "i".into(),
            sub: user.into(),
            email: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            sid: sid.into(),
            jti: "j".into(),
            iat: iat_us / 1_000_000,
            exp: iat_us / 1_000_000 + 3600,
            nbf: None,
            iat_us,
            bnd: None,
        }
    }

    fn revoke(
        set: &RevocationSet,
        meta: &MetaIndex,
        scope: Scope,
        target: &str,
        nb: Micros,
        actor: &str,
    ) {
        set.apply(scope, target, nb);
        meta.insert(RevocationRecord {
            id: format!("r{nb}"),
            scope,
            target: target.into(),
            not_before_us: nb,
            reason: "r".into(),
            actor: actor.into(),
            node: "n".into(),
            external_id: None,
        });
    }

    #[test]
    fn which_revocations_call_for_a_fresh_sign_in() {
        let (set, meta) = (RevocationSet::new(), MetaIndex::default());
        let c = claims("s1", "a@x.com", &["staff"], 1_000);
        assert_eq!(revoked_at(&set, &meta, &c), None);
        // The user's own logout: no reason to distrust the IdP.
        revoke(&set, &meta, Scope::Session, "s1", 2_000, "user:a@x.com");
        assert_eq!(revoked_at(&set, &meta, &c), None);
        revoke(&set, &meta, Scope::Session, "s1", 3_000, "idp:corp");
        assert_eq!(revoked_at(&set, &meta, &c), None);
        // An operator's revocation of the session does.
        revoke(&set, &meta, Scope::Session, "s1", 4_000, "ops");
        assert_eq!(revoked_at(&set, &meta, &c), Some(4_000));
        // Group and user revocations count; the latest wins; older than the session: not.
        revoke(&set, &meta, Scope::Group, "staff", 5_000, "scim:hr");
        assert_eq!(revoked_at(&set, &meta, &c), Some(5_000));
        revoke(&set, &meta, Scope::User, "a@x.com", 6_000, "ops");
        assert_eq!(revoked_at(&set, &meta, &c), Some(6_000));
        let later = claims("s2", "a@x.com", &["staff"], 7_000);
        assert_eq!(revoked_at(&set, &meta, &later), None);
        revoke(&set, &meta, Scope::All, "*", 8_000, "ops");
        assert_eq!(revoked_at(&set, &meta, &later), Some(8_000));
    }
}
