//! The Users page's view of the accounts the cluster knows from outside
//! (`cluster::accounts`): [`UserStatus`] over [`Accounts`]. A user whose SCIM account is
//! inactive (`active: false`) or deleted, or whom a Shared Signals transmitter disabled,
//! shows as "inactive" with that reason (sign-in refuses them too, see
//! `Accounts::sign_in_refusal`); users SCIM provisioned are listed with their SCIM groups
//! before they first sign in.

use super::data::UserStatus;
use crate::cluster::accounts::{Accounts, Refusal};
use crate::signals::scim::ScimStore;
use std::collections::HashMap;

pub struct AccountStatus(pub Accounts);

impl UserStatus for AccountStatus {
    fn inactive(&self, email: &str) -> Option<String> {
        match self.0.sign_in_refusal(email)? {
            Refusal::Disabled { by } => Some(format!("disabled by {by}")),
            Refusal::Inactive => {
                let email = email.trim().to_ascii_lowercase();
                let deactivated = self
                    .0
                    .scim()
                    .users_by_email(&email)
                    .iter()
                    .any(|u| !u.deleted && !u.active);
                Some(if deactivated {
                    "deactivated in SCIM".into()
                } else {
                    "deleted in SCIM".into()
                })
            }
        }
    }

    fn provisioned(&self) -> Vec<(String, Vec<String>)> {
        let scim = self.0.scim();
        let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
        for g in scim.groups().into_iter().filter(|g| !g.deleted) {
            for m in &g.members {
                groups_of
                    .entry(m.clone())
                    .or_default()
                    .push(g.display_name.clone());
            }
        }
        scim.users()
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
    use crate::clock::{ManualClock, Ticker};
    use crate::cluster::docs::{DocStore, NoReplication};
    use crate::signals::scim::{Email, GroupRecord, Name, UserRecord};
    use std::sync::Arc;

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

    #[tokio::test]
    async fn inactive_deleted_and_disabled_accounts_and_provisioned_groups() {
        let dir = tempfile::tempdir().unwrap();
        let ticker = Arc::new(Ticker::new(ManualClock::new(1_000_000)));
        let docs = DocStore::open(
            &dir.path().join("d.log"),
            "n1",
            ticker,
            Arc::new(NoReplication),
        );
        let accounts = Accounts::new(Arc::new(docs.unwrap()));
        let s = accounts.scim();
        s.put_user(user("1", "Ada@Example.com", true, false), None)
            .unwrap();
        s.put_user(user("2", "bob@example.com", false, false), None)
            .unwrap();
        s.put_user(user("3", "cy@example.com", true, true), None)
            .unwrap();
        let group = GroupRecord {
            id: "g".into(),
            display_name: "contractors".into(),
            external_id: None,
            members: vec!["1".into(), "2".into()],
            created: 1,
            version: 1,
            deleted: false,
        };
        s.put_group(group, None).unwrap();
        accounts
            .set_disabled("dee@example.com", true, "ssf:okta", "risk")
            .await
            .unwrap();
        let st = AccountStatus(accounts);
        assert_eq!(st.inactive("ada@example.com"), None);
        let why = |e: &str| st.inactive(e);
        assert_eq!(
            why("BOB@example.com").as_deref(),
            Some("deactivated in SCIM")
        );
        assert_eq!(why("cy@example.com").as_deref(), Some("deleted in SCIM"));
        assert_eq!(
            why("dee@example.com").as_deref(),
            Some("disabled by ssf:okta")
        );
        assert_eq!(why("unknown@example.com"), None);
        let mut p = st.provisioned();
        p.sort();
        let contractors = vec!["contractors".to_string()];
        assert_eq!(
            p,
            [
                ("ada@example.com".to_string(), contractors.clone()),
                ("bob@example.com".to_string(), contractors),
            ]
        );
    }
}
