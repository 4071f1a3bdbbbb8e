//! What a SCIM write means for access, found by comparing the resource before and after
//! the write, and the read-side questions sign-in and token minting ask.
//!
//! The gateway applies each [`Effect`] through its revocation engine and writes the SCIM
//! resource id into the audit line. The SCIM store stays the source of truth for
//! "may this person sign in" ([`is_inactive`]) and "which groups go in the token"
//! ([`groups_of`]), so an effect lost in a crash leaves no account usable that SCIM
//! says is inactive.

use super::model::{GroupRecord, UserRecord, norm_email};
use super::store::ScimStore;
use serde::Serialize;
use std::collections::BTreeSet;

/// A change in access, for the revocation engine. `email` is the address the gateway
/// knows the user by; `aliases` are the user's other addresses, to be treated alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Revoke every session and token of the user; sign-in is refused while inactive.
    Deactivated {
        user_id: String,
        email: String,
        aliases: Vec<String>,
    },
    /// Same as `Deactivated`; the account is gone from SCIM (sign-in stays refused).
    Deleted {
        user_id: String,
        email: String,
        aliases: Vec<String>,
    },
    /// Sign-in is allowed again (nothing to revoke).
    Reactivated {
        user_id: String,
        email: String,
        aliases: Vec<String>,
    },
    /// Revoke the user's app tokens that carry `group`; the global session stays and the
    /// next navigation re-issues a token without it.
    LeftGroup {
        user_id: String,
        email: String,
        aliases: Vec<String>,
        group_id: String,
        group: String,
    },
    /// Tokens issued from now on carry `group` (nothing to revoke).
    JoinedGroup {
        user_id: String,
        email: String,
        aliases: Vec<String>,
        group_id: String,
        group: String,
    },
}

impl Effect {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Deactivated { .. } => "deactivated",
            Effect::Deleted { .. } => "deleted",
            Effect::Reactivated { .. } => "reactivated",
            Effect::LeftGroup { .. } => "left_group",
            Effect::JoinedGroup { .. } => "joined_group",
        }
    }
    /// The SCIM user id, for the audit line.
    pub fn user_id(&self) -> &str {
        match self {
            Effect::Deactivated { user_id, .. }
            | Effect::Deleted { user_id, .. }
            | Effect::Reactivated { user_id, .. }
            | Effect::LeftGroup { user_id, .. }
            | Effect::JoinedGroup { user_id, .. } => user_id,
        }
    }
    pub fn email(&self) -> &str {
        match self {
            Effect::Deactivated { email, .. }
            | Effect::Deleted { email, .. }
            | Effect::Reactivated { email, .. }
            | Effect::LeftGroup { email, .. }
            | Effect::JoinedGroup { email, .. } => email,
        }
    }
}

/// Effects of a user record changing from `before` to `after`.
pub fn user_effects(before: Option<&UserRecord>, after: &UserRecord) -> Vec<Effect> {
    let live_before = before.filter(|b| !b.deleted);
    let (user_id, email, aliases) = (after.id.clone(), after.email(), after.aliases());
    let effect = if after.deleted {
        live_before.map(|_| Effect::Deleted {
            user_id,
            email,
            aliases,
        })
    } else if !after.active {
        // Created inactive counts too: the person may hold sessions from before SCIM.
        match live_before {
            Some(b) if !b.active => None,
            _ => Some(Effect::Deactivated {
                user_id,
                email,
                aliases,
            }),
        }
    } else {
        match live_before {
            Some(b) if !b.active => Some(Effect::Reactivated {
                user_id,
                email,
                aliases,
            }),
            _ => None,
        }
    };
    effect.into_iter().collect()
}

/// Effects of a group record changing from `before` to `after` (the store already holds
/// `after`). A rename is leaving the old name and joining the new one.
pub fn group_effects(
    store: &dyn ScimStore,
    before: Option<&GroupRecord>,
    after: &GroupRecord,
) -> Vec<Effect> {
    let live_before = before.filter(|b| !b.deleted);
    let old: Vec<&String> = live_before
        .map(|b| b.members.iter().collect())
        .unwrap_or_default();
    let new: Vec<&String> = if after.deleted {
        Vec::new()
    } else {
        after.members.iter().collect()
    };
    let old_name = live_before.map(|b| b.display_name.as_str());
    let renamed = old_name.is_some_and(|n| n != after.display_name);
    let mut out = Vec::new();
    for id in &old {
        if renamed || !new.contains(id) {
            let name = old_name.unwrap_or(&after.display_name);
            if let Some(u) = live_user(store, id)
                && !still_in_group_named(store, id, name, &after.id)
            {
                out.push(Effect::LeftGroup {
                    user_id: u.id.clone(),
                    email: u.email(),
                    aliases: u.aliases(),
                    group_id: after.id.clone(),
                    group: name.to_string(),
                });
            }
        }
    }
    for id in &new {
        if (renamed || !old.contains(id))
            && let Some(u) = live_user(store, id)
        {
            out.push(Effect::JoinedGroup {
                user_id: u.id.clone(),
                email: u.email(),
                aliases: u.aliases(),
                group_id: after.id.clone(),
                group: after.display_name.clone(),
            });
        }
    }
    out
}

fn live_user(store: &dyn ScimStore, id: &str) -> Option<UserRecord> {
    store.user(id).filter(|u| !u.deleted)
}

/// Another live group with the same display name still lists the user: the token's
/// group claim does not change, so nothing to revoke.
fn still_in_group_named(store: &dyn ScimStore, user_id: &str, name: &str, except: &str) -> bool {
    store
        .groups_with_member(user_id)
        .iter()
        .any(|g| g.id != except && !g.deleted && g.display_name == name)
}

/// The SCIM user the gateway means by `email`: the live one whose userName it is, else
/// the live ones listing it among their emails.
fn live_matches(store: &dyn ScimStore, email: &str) -> (Vec<UserRecord>, bool) {
    let all = store.users_by_email(email);
    let any_tombstone = all.iter().any(|u| u.deleted);
    let mut live: Vec<UserRecord> = all.into_iter().filter(|u| !u.deleted).collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(u) = live.iter().find(|u| norm_email(&u.user_name) == email) {
        return (vec![u.clone()], any_tombstone);
    }
    (live, any_tombstone)
}

/// Whether SCIM says this person must not sign in: their account is inactive, or was
/// deleted and not re-created. Unknown to SCIM: false.
pub fn is_inactive(store: &dyn ScimStore, email: &str) -> bool {
    let email = norm_email(email);
    let (live, any_tombstone) = live_matches(store, &email);
    if live.is_empty() {
        return any_tombstone;
    }
    live.iter().any(|u| !u.active)
}

/// The display names of the groups SCIM puts this person in (sorted, deduplicated), or
/// None when SCIM does not know them (then the IdP's groups claim is used as before).
pub fn groups_of(store: &dyn ScimStore, email: &str) -> Option<Vec<String>> {
    let email = norm_email(email);
    let (live, _) = live_matches(store, &email);
    let user = live.first()?;
    let names: BTreeSet<String> = store
        .groups_with_member(&user.id)
        .into_iter()
        .filter(|g| !g.deleted)
        .map(|g| g.display_name)
        .collect();
    Some(names.into_iter().collect())
}
