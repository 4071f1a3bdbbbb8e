//! The Users page's view of the SCIM directory: [`UserStatus`] over a
//! `signals::scim::ScimStore`. A user whose SCIM account is inactive (`active: false`)
//! or deleted shows as "inactive" with that reason (sign-in refuses them too, see
//! `scim::is_inactive`); users SCIM provisioned are listed with their SCIM groups before
//! they first sign in.

use super::data::UserStatus;
use crate::signals::scim::{ScimStore, is_inactive};
use std::collections::HashMap;
use std::sync::Arc;

pub struct ScimStatus(pub Arc<dyn ScimStore>);

impl UserStatus for ScimStatus {
    fn inactive(&self, email: &str) -> Option<String> {
        if !is_inactive(&*self.0, email) {
            return None;
        }
        let email = email.trim().to_ascii_lowercase();
        let live_inactive = self
            .0
            .users_by_email(&email)
            .iter()
            .any(|u| !u.deleted && !u.active);
        Some(if live_inactive {
            "deactivated in SCIM".into()
        } else {
            "deleted in SCIM".into()
        })
    }

    fn provisioned(&self) -> Vec<(String, Vec<String>)> {
        let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
        for g in self.0.groups().into_iter().filter(|g| !g.deleted) {
            for m in &g.members {
                groups_of
                    .entry(m.clone())
                    .or_default()
                    .push(g.display_name.clone());
            }
        }
        self.0
            .users()
            .into_iter()
            .filter(|u| !u.deleted)
            .map(|u| {
                let mut groups = groups_of.remove(&u.id).unwrap_or_default();
                groups.sort();
                groups.dedup();
                (u.email(), groups)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::scim::{Email, GroupRecord, MemoryStore, Name, UserRecord};

    fn user(id: &str, user_name: &str, active: bool, deleted: bool) -> UserRecord {
        UserRecord {
            id: id.into(),
            user_name: user_name.into(),
            external_id: None,
            active,
            display_name: None,
            name: Name::default(),
            emails: vec![Email {
                value: user_name.into(),
                kind: Some("work".into()),
                primary: true,
                display: None,
            }],
            created: 1,
            version: 1,
            deleted,
        }
    }

    #[test]
    fn inactive_and_deleted_accounts_and_provisioned_groups() {
        let store = Arc::new(MemoryStore::new());
        let s: &dyn ScimStore = &*store;
        s.put_user(user("1", "Ada@Example.com", true, false), None)
            .unwrap();
        s.put_user(user("2", "bob@example.com", false, false), None)
            .unwrap();
        s.put_user(user("3", "cy@example.com", true, true), None)
            .unwrap();
        s.put_group(
            GroupRecord {
                id: "g".into(),
                display_name: "contractors".into(),
                external_id: None,
                members: vec!["1".into(), "2".into()],
                created: 1,
                version: 1,
                deleted: false,
            },
            None,
        )
        .unwrap();
        let st = ScimStatus(store);
        assert_eq!(st.inactive("ada@example.com"), None);
        assert_eq!(
            st.inactive("BOB@example.com").as_deref(),
            Some("deactivated in SCIM")
        );
        assert_eq!(
            st.inactive("cy@example.com").as_deref(),
            Some("deleted in SCIM")
        );
        assert_eq!(st.inactive("unknown@example.com"), None);
        let mut p = st.provisioned();
        p.sort();
        assert_eq!(
            p,
            [
                (
                    "ada@example.com".to_string(),
                    vec!["contractors".to_string()]
                ),
                (
                    "bob@example.com".to_string(),
                    vec!["contractors".to_string()]
                ),
            ]
        );
    }
}
