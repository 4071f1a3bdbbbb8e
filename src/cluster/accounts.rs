//! What the cluster knows about accounts from outside: SCIM users and groups and the
//! "disabled" flag Shared Signals sets, kept as [`DocStore`] documents so every node
//! answers the same whichever node the identity provider called.
//!
//! - [`ScimDocs`] is the SCIM service's store (`signals::scim::ScimStore`) over the
//!   document store: a user or group is one document, indexed by its email addresses
//!   (users) or member ids (groups). Writes are local and durable; the documents they
//!   wrote are handed back ([`ScimDocs::take_written`]) for the caller to publish.
//! - [`Accounts`] answers sign-in and token minting: may this person sign in, and with
//!   which groups.

use super::docs::{Doc, DocError, DocPropagation, DocStore};
use crate::clock::Micros;
use crate::signals::scim::{self, GroupRecord, ScimStore, StoreError, UserRecord};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};

/// SCIM users, by SCIM id.
pub const USERS: &str = "scim.users";
/// SCIM groups, by SCIM id.
pub const GROUPS: &str = "scim.groups";
/// Account flags (Shared Signals `account-disabled`), by lower-cased email.
pub const FLAGS: &str = "account.flags";
/// Signals already applied (SET `jti`s, webhook `event_id`s), kept until they expire.
pub const SEEN: &str = "signals.seen";
/// Every namespace of the cluster's documents (for backends that list by namespace).
pub const NAMESPACES: [&str; 4] = [USERS, GROUPS, FLAGS, SEEN];

fn email_key(email: &str) -> String {
    format!("email:{}", email.trim().to_ascii_lowercase())
}

fn member_key(user_id: &str) -> String {
    format!("member:{user_id}")
}

fn parse<T: DeserializeOwned>(d: &Doc) -> Option<T> {
    match serde_json::from_value(d.body.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(ns = %d.ns, id = %d.id, error = %e, "unreadable document");
            None
        }
    }
}

/// The SCIM store over the cluster's documents.
pub struct ScimDocs {
    store: Arc<DocStore>,
    written: Mutex<Vec<Doc>>,
}

impl ScimDocs {
    pub fn new(store: Arc<DocStore>) -> Self {
        Self {
            store,
            written: Mutex::new(Vec::new()),
        }
    }

    /// The documents written through this handle since the last call (to publish).
    pub fn take_written(&self) -> Vec<Doc> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn put(&self, doc: Doc, expected: Option<Micros>) -> Result<(), StoreError> {
        match self.store.put_local(doc, expected) {
            Ok(d) => {
                self.written
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(d);
                Ok(())
            }
            Err(DocError::Conflict) => Err(StoreError::Conflict),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    fn doc<T: serde::Serialize>(
        &self,
        ns: &str,
        id: &str,
        version: Micros,
        deleted: bool,
        keys: Vec<String>,
        body: &T,
    ) -> Result<Doc, StoreError> {
        Ok(Doc {
            ns: ns.into(),
            id: id.into(),
            version,
            node: self.store.node_id().into(),
            deleted,
            keys,
            expires_us: None,
            body: serde_json::to_value(body).map_err(|e| StoreError::Unavailable(e.to_string()))?,
        })
    }
}

impl ScimStore for ScimDocs {
    fn user(&self, id: &str) -> Option<UserRecord> {
        self.store.get(USERS, id).and_then(|d| parse(&d))
    }
    fn users(&self) -> Vec<UserRecord> {
        self.store
            .list(USERS)
            .iter()
            .filter_map(|d| parse(d))
            .collect()
    }
    fn put_user(&self, user: UserRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        let mut keys: Vec<String> = std::iter::once(user.user_name.as_str())
            .chain(user.emails.iter().map(|e| e.value.as_str()))
            .map(email_key)
            .collect();
        keys.sort();
        keys.dedup();
        let doc = self.doc(USERS, &user.id, user.version, user.deleted, keys, &user)?;
        self.put(doc, expected)
    }
    fn group(&self, id: &str) -> Option<GroupRecord> {
        self.store.get(GROUPS, id).and_then(|d| parse(&d))
    }
    fn groups(&self) -> Vec<GroupRecord> {
        self.store
            .list(GROUPS)
            .iter()
            .filter_map(|d| parse(d))
            .collect()
    }
    fn put_group(&self, group: GroupRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        let keys = if group.deleted {
            Vec::new()
        } else {
            group.members.iter().map(|m| member_key(m)).collect()
        };
        let doc = self.doc(
            GROUPS,
            &group.id,
            group.version,
            group.deleted,
            keys,
            &group,
        )?;
        self.put(doc, expected)
    }
    fn users_by_email(&self, email: &str) -> Vec<UserRecord> {
        self.store
            .find(USERS, &email_key(email))
            .iter()
            .filter_map(|d| parse(d))
            .collect()
    }
    fn groups_with_member(&self, user_id: &str) -> Vec<GroupRecord> {
        self.store
            .find(GROUPS, &member_key(user_id))
            .iter()
            .filter_map(|d| parse::<GroupRecord>(d))
            .filter(|g| !g.deleted && g.members.iter().any(|m| m == user_id))
            .collect()
    }
}

/// Why sign-in is refused for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SCIM says the account is inactive, or it was deleted.
    Inactive,
    /// A Shared Signals transmitter said `account-disabled` (`by` is the trigger).
    Disabled { by: String },
}

impl Refusal {
    /// What the sign-in page says.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Inactive => {
                "This account is deactivated in your organisation's directory. Contact your administrator."
            }
            Refusal::Disabled { .. } => {
                "This account was disabled by your organisation's identity provider. Contact your administrator."
            }
        }
    }
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Inactive => "account_inactive",
            Refusal::Disabled { .. } => "account_disabled",
        }
    }
}

/// The questions sign-in and token minting ask about an account.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<DocStore>,
}

impl Accounts {
    pub fn new(store: Arc<DocStore>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<DocStore> {
        &self.store
    }

    /// Makes every change another node finished visible here (see
    /// [`DocStore::catch_up`]): asked before a token is issued from what this says.
    pub async fn catch_up(&self) {
        self.store.catch_up().await
    }

    /// A SCIM store handle over the same documents.
    pub fn scim(&self) -> ScimDocs {
        ScimDocs::new(self.store.clone())
    }

    /// Why `email` may not sign in (or be given a token) now, if it may not.
    pub fn sign_in_refusal(&self, email: &str) -> Option<Refusal> {
        if scim::is_inactive(&self.scim(), email) {
            return Some(Refusal::Inactive);
        }
        self.disabled_by(email).map(|by| Refusal::Disabled { by })
    }

    /// The groups tokens for `email` carry when SCIM knows the person (None: it does
    /// not, and the identity provider's groups stand).
    pub fn current_groups(&self, email: &str) -> Option<Vec<String>> {
        scim::groups_of(&self.scim(), email)
    }

    /// The trigger that disabled `email`, while it is disabled.
    pub fn disabled_by(&self, email: &str) -> Option<String> {
        let d = self.store.get(FLAGS, &email.trim().to_ascii_lowercase())?;
        if d.deleted || !d.body["disabled"].as_bool().unwrap_or(false) {
            return None;
        }
        Some(d.body["by"].as_str().unwrap_or("unknown").to_string())
    }

    /// Sets (or clears) the disabled flag of `email` on every node.
    pub async fn set_disabled(
        &self,
        email: &str,
        disabled: bool,
        by: &str,
        reason: &str,
    ) -> Result<DocPropagation, DocError> {
        let id = email.trim().to_ascii_lowercase();
        for _ in 0..4 {
            let expected = self.store.get(FLAGS, &id).map(|d| d.version);
            let doc = Doc {
                ns: FLAGS.into(),
                id: id.clone(),
                version: self.store.next_version(),
                node: self.store.node_id().into(),
                deleted: !disabled,
                keys: Vec::new(),
                expires_us: None,
                body: json!({"disabled": disabled, "by": by, "reason": reason}),
            };
            match self.store.put(doc, expected).await {
                Ok((_, sent)) => return Ok(sent),
                Err(DocError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(DocError::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, Ticker};
    use crate::cluster::docs::NoReplication;
    use crate::signals::scim::{Scim, ScimRequest};
    use http::Method;

    fn store(dir: &std::path::Path) -> Arc<DocStore> {
        let ticker = Arc::new(Ticker::new(ManualClock::new(1_000_000)));
        Arc::new(DocStore::open(&dir.join("d.log"), "n1", ticker, Arc::new(NoReplication)).unwrap())
    }

    fn call(s: &ScimDocs, m: Method, path: &str, body: serde_json::Value, now: Micros) -> u16 {
        let body = body.to_string();
        let req = ScimRequest {
            method: m,
            path,
            query: None,
            body: body.as_bytes(),
        };
        Scim::default().handle(s, &req, now).status
    }

    #[tokio::test]
    async fn scim_state_lives_in_documents_and_answers_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let docs = store(dir.path());
        let accounts = Accounts::new(docs.clone());
        let s = accounts.scim();
        let user =
            json!({"userName": "Ada@Example.com", "emails": [{"value": "ada.l@example.com"}]});
        assert_eq!(call(&s, Method::POST, "/Users", user, 10), 201);
        let id = s.users()[0].id.clone();
        let group = json!({"displayName": "admins", "members": [{"value": id}]});
        assert_eq!(call(&s, Method::POST, "/Groups", group, 11), 201);
        assert_eq!(
            s.take_written().len(),
            2,
            "both writes are handed back to publish"
        );
        assert_eq!(s.users_by_email("ADA.L@example.com").len(), 1);
        assert_eq!(
            accounts.current_groups("ada@example.com"),
            Some(vec!["admins".into()])
        );
        assert_eq!(accounts.sign_in_refusal("ada@example.com"), None);
        let off = json!({"Operations": [{"op": "replace", "value": {"active": false}}]});
        assert_eq!(
            call(&s, Method::PATCH, &format!("/Users/{id}"), off, 12),
            200
        );
        assert_eq!(
            accounts.sign_in_refusal("ada.l@example.com"),
            Some(Refusal::Inactive)
        );
        // The flag Shared Signals sets, and clears.
        assert_eq!(accounts.sign_in_refusal("bob@example.com"), None);
        accounts
            .set_disabled("Bob@example.com", true, "ssf:okta", "risk")
            .await
            .unwrap();
        assert_eq!(
            accounts.sign_in_refusal("bob@example.com"),
            Some(Refusal::Disabled {
                by: "ssf:okta".into()
            })
        );
        accounts
            .set_disabled("bob@example.com", false, "ssf:okta", "")
            .await
            .unwrap();
        assert_eq!(accounts.sign_in_refusal("bob@example.com"), None);
        // All of it survives a restart.
        drop((s, accounts, docs));
        let accounts = Accounts::new(store(dir.path()));
        assert_eq!(
            accounts.sign_in_refusal("ada@example.com"),
            Some(Refusal::Inactive)
        );
        assert_eq!(
            accounts.current_groups("ada@example.com"),
            Some(vec!["admins".into()])
        );
    }
}
