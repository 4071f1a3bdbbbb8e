//! Where SCIM resources live. The gateway implements [`ScimStore`] over its durable,
//! cluster-replicated state; [`MemoryStore`] is the in-process implementation for tests.
//!
//! Every write is one whole resource (a user or a group, tombstones included) put with a
//! `version`, so replication is last-writer-wins per resource id: a node applying a
//! record from a peer keeps it when its version is higher than the one it holds. A
//! local put is conditional on the version the handler read (`expected`), so two
//! concurrent PATCHes of one group on one node cannot silently drop each other's
//! members: the loser gets [`StoreError::Conflict`] and the handler re-reads and
//! re-applies its operations.

use super::model::{GroupRecord, UserRecord, norm_email};
use crate::clock::Micros;
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stored version is not the one the write expected.
    #[error("the resource changed since it was read")]
    Conflict,
    /// The write could not be made durable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// SCIM state. Reads return tombstones too (`deleted: true`); the handler hides them.
pub trait ScimStore: Send + Sync {
    fn user(&self, id: &str) -> Option<UserRecord>;
    /// Every user record, in any order.
    fn users(&self) -> Vec<UserRecord>;
    /// Stores `user` whole if the stored version is `expected` (`None`: no record yet).
    /// Returns only once the write is durable here.
    fn put_user(&self, user: UserRecord, expected: Option<Micros>) -> Result<(), StoreError>;

    fn group(&self, id: &str) -> Option<GroupRecord>;
    fn groups(&self) -> Vec<GroupRecord>;
    fn put_group(&self, group: GroupRecord, expected: Option<Micros>) -> Result<(), StoreError>;

    /// Users (tombstones included) with this address as userName or an email. Override
    /// with an index when the directory is large; sign-in calls this.
    fn users_by_email(&self, email: &str) -> Vec<UserRecord> {
        let email = norm_email(email);
        self.users()
            .into_iter()
            .filter(|u| u.has_email(&email))
            .collect()
    }

    /// Live groups that list `user_id` as a member. Override with an index when large.
    fn groups_with_member(&self, user_id: &str) -> Vec<GroupRecord> {
        self.groups()
            .into_iter()
            .filter(|g| !g.deleted && g.members.iter().any(|m| m == user_id))
            .collect()
    }
}

/// An in-memory [`ScimStore`] for tests and single-node experiments.
#[derive(Debug, Default)]
pub struct MemoryStore {
    users: RwLock<HashMap<String, UserRecord>>,
    groups: RwLock<HashMap<String, GroupRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn put<T: Clone>(
    map: &RwLock<HashMap<String, T>>,
    id: &str,
    rec: T,
    version_of: impl Fn(&T) -> Micros,
    expected: Option<Micros>,
) -> Result<(), StoreError> {
    let mut m = map
        .write()
        .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?;
    if m.get(id).map(&version_of) != expected {
        return Err(StoreError::Conflict);
    }
    m.insert(id.to_string(), rec);
    Ok(())
}

fn read<T: Clone>(map: &RwLock<HashMap<String, T>>) -> Vec<T> {
    map.read()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

impl ScimStore for MemoryStore {
    fn user(&self, id: &str) -> Option<UserRecord> {
        self.users.read().ok()?.get(id).cloned()
    }
    fn users(&self) -> Vec<UserRecord> {
        read(&self.users)
    }
    fn put_user(&self, user: UserRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        let id = user.id.clone();
        put(&self.users, &id, user, |u| u.version, expected)
    }
    fn group(&self, id: &str) -> Option<GroupRecord> {
        self.groups.read().ok()?.get(id).cloned()
    }
    fn groups(&self) -> Vec<GroupRecord> {
        read(&self.groups)
    }
    fn put_group(&self, group: GroupRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        let id = group.id.clone();
        put(&self.groups, &id, group, |g| g.version, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::scim::model::Name;

    fn user(id: &str, version: Micros) -> UserRecord {
        UserRecord {
            id: id.into(),
            user_name: format!("{id}@example.com"),
            external_id: None,
            active: true,
            display_name: None,
            name: Name::default(),
            emails: vec![],
            created: 1,
            version,
            deleted: false,
        }
    }

    #[test]
    fn puts_are_conditional_on_the_version_read() {
        let s = MemoryStore::new();
        s.put_user(user("a", 1), None).unwrap();
        assert_eq!(s.put_user(user("a", 2), None), Err(StoreError::Conflict));
        assert_eq!(s.put_user(user("a", 2), Some(5)), Err(StoreError::Conflict));
        s.put_user(user("a", 2), Some(1)).unwrap();
        assert_eq!(s.user("a").unwrap().version, 2);
        assert_eq!(s.users_by_email("A@example.com").len(), 1);
        assert!(s.users_by_email("b@example.com").is_empty());
    }
}
