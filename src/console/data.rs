//! What the console shows, gathered from the config in force, the cluster-wide session
//! directory, the revocation set and (when wired) the identity sources: the user list,
//! group membership and the access report after a group revocation. Pure functions of
//! their inputs, so they are tested without a server.

use crate::clock::Micros;
use crate::config::Config;
use crate::revocation::Scope;
use crate::revocation::set::RevocationSet;
use crate::session::registry::SessionView;
use std::collections::{BTreeMap, BTreeSet};

/// What an identity source (a SCIM provisioner) says about users. The console works
/// without one (everyone is "active"); the SCIM service implements this when wired.
pub trait UserStatus: Send + Sync {
    /// Why `email` is inactive at its identity source (e.g. "deactivated by SCIM okta").
    fn inactive(&self, email: &str) -> Option<String>;
    /// Users the source provisioned (email, groups), listed before their first sign-in.
    fn provisioned(&self) -> Vec<(String, Vec<String>)> {
        Vec::new()
    }
}

/// A user's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Active,
    /// `disabled = true` in `[[user]]`.
    Disabled,
    /// Inactive at the identity source, and why.
    Inactive(String),
}

/// One line of the Users page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub email: String,
    pub groups: Vec<String>,
    /// "built-in" for `[[user]]`s, else the identity provider of the latest session.
    pub idp: String,
    pub standing: Standing,
    /// Sign-in refused until then (after a user revocation).
    pub locked_until: Option<Micros>,
    pub last_sign_in: Option<Micros>,
    pub live_sessions: usize,
}

/// What the user list is made from.
pub struct Inputs<'a> {
    pub config: &'a Config,
    /// Sessions created this month (live or not), cluster-wide.
    pub month: &'a [SessionView],
    /// Live sessions, cluster-wide.
    pub live: &'a [SessionView],
    pub set: &'a RevocationSet,
    pub status: Option<&'a dyn UserStatus>,
    pub now: Micros,
}

/// The identity provider's name as shown.
pub fn idp_label(idp: &str) -> String {
    if idp.is_empty() {
        "built-in".into()
    } else {
        idp.to_string()
    }
}

/// When sign-in is refused until, after a user revocation (none when not now).
pub fn locked_until(
    config: &Config,
    set: &RevocationSet,
    email: &str,
    now: Micros,
) -> Option<Micros> {
    let revoked = set.get(Scope::User, email)?;
    let until = revoked + config.session.relogin_lockout.as_micros() as i64;
    (until > now).then_some(until)
}

fn blank(email: &str) -> UserRow {
    UserRow {
        email: email.to_string(),
        groups: Vec::new(),
        idp: String::new(),
        standing: Standing::Active,
        locked_until: None,
        last_sign_in: None,
        live_sessions: 0,
    }
}

/// Everyone the console knows: configured users, provisioned users, and everyone with a
/// session this month; sorted by email.
pub fn users(i: &Inputs<'_>) -> Vec<UserRow> {
    let mut rows: BTreeMap<String, UserRow> = BTreeMap::new();
    for u in &i.config.users {
        let r = rows
            .entry(u.email.clone())
            .or_insert_with(|| blank(&u.email));
        r.groups = u.groups.clone();
        r.idp = "built-in".into();
        if u.disabled {
            r.standing = Standing::Disabled;
        }
    }
    if let Some(s) = i.status {
        for (email, groups) in s.provisioned() {
            let email = email.to_ascii_lowercase();
            let r = rows.entry(email.clone()).or_insert_with(|| blank(&email));
            if r.groups.is_empty() {
                r.groups = groups;
            }
        }
    }
    let mut newest: BTreeMap<&str, &SessionView> = BTreeMap::new();
    for s in i.month {
        let e = newest.entry(s.info.user.as_str()).or_insert(s);
        if s.info.created_us > e.info.created_us {
            *e = s;
        }
    }
    for (email, s) in newest {
        let r = rows
            .entry(email.to_string())
            .or_insert_with(|| blank(email));
        r.last_sign_in = Some(s.info.created_us);
        if r.idp.is_empty() || !s.info.idp.is_empty() {
            r.idp = idp_label(&s.info.idp);
        }
        if r.groups.is_empty() {
            r.groups = s.info.groups.clone();
        }
    }
    for s in i.live {
        if let Some(r) = rows.get_mut(&s.info.user) {
            r.live_sessions += 1;
            r.last_sign_in = r.last_sign_in.max(Some(s.info.created_us));
        }
    }
    for r in rows.values_mut() {
        if r.standing == Standing::Active
            && let Some(why) = i.status.and_then(|s| s.inactive(&r.email))
        {
            r.standing = Standing::Inactive(why);
        }
        r.locked_until = locked_until(i.config, i.set, &r.email, i.now);
        if r.idp.is_empty() {
            r.idp = "—".into();
        }
    }
    rows.into_values().collect()
}

/// The rows matching a search: `q` in the email or a group name (case-insensitive),
/// and, when given, exactly in `group`.
pub fn search<'a>(rows: &'a [UserRow], q: &str, group: &str) -> Vec<&'a UserRow> {
    let q = q.trim().to_ascii_lowercase();
    rows.iter()
        .filter(|r| group.is_empty() || r.groups.iter().any(|g| g == group))
        .filter(|r| {
            q.is_empty()
                || r.email.contains(&q)
                || r.groups.iter().any(|g| g.to_ascii_lowercase().contains(&q))
        })
        .collect()
}

/// One group as the Groups page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub name: String,
    pub members: Vec<String>,
    pub live_sessions: usize,
    pub apps: Vec<String>,
    pub revoked_at: Option<Micros>,
}

/// Every group the console knows of (from users, sessions, app policies and the
/// console's own admin groups), with its members and live sessions.
pub fn groups(
    rows: &[UserRow],
    config: &Config,
    live: &[SessionView],
    set: &RevocationSet,
) -> Vec<GroupRow> {
    let mut names: BTreeSet<String> = rows.iter().flat_map(|r| r.groups.iter().cloned()).collect();
    names.extend(live.iter().flat_map(|s| s.info.groups.iter().cloned()));
    names.extend(
        config
            .apps
            .iter()
            .flat_map(|a| a.allow_groups.iter().cloned()),
    );
    if let Some(c) = &config.console {
        names.extend(c.admin_groups.iter().cloned());
    }
    names
        .into_iter()
        .map(|g| GroupRow {
            members: rows
                .iter()
                .filter(|r| r.groups.contains(&g))
                .map(|r| r.email.clone())
                .collect(),
            live_sessions: live.iter().filter(|s| s.info.groups.contains(&g)).count(),
            apps: config
                .apps
                .iter()
                .filter(|a| a.allow_groups.contains(&g))
                .map(|a| a.name.clone())
                .collect(),
            revoked_at: set.get(Scope::Group, &g),
            name: g,
        })
        .collect()
}

/// One member's line in the access report after a group revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub member: String,
    /// The member's most recently used session (sid, last seen), any group.
    pub last_active: Option<(String, Micros)>,
    /// Sessions carrying the group that were live when the revocation took effect.
    pub sessions_ended: usize,
}

/// Whether another revocation (of the session, the user, everything or another of its
/// groups) had already ended `s` before `at`.
fn ended_before(s: &SessionView, at: Micros, group: &str, set: &RevocationSet) -> bool {
    let i = &s.info;
    let hit = |scope: Scope, key: &str| {
        set.get(scope, key)
            .is_some_and(|nb| nb >= i.created_us && nb < at)
    };
    hit(Scope::All, "*")
        || hit(Scope::Session, &i.sid)
        || hit(Scope::User, &i.user)
        || i.groups.iter().any(|g| g != group && hit(Scope::Group, g))
}

/// The access report of revoking `group` at `at`: every member (known from `rows` or
/// from sessions carrying the group), their last active session and the sessions the
/// revocation ended. Computed from cluster-wide facts, so any node gives the same.
pub fn report(
    rows: &[UserRow],
    sessions: &[SessionView],
    group: &str,
    at: Micros,
    set: &RevocationSet,
) -> Vec<ReportRow> {
    let carries = |s: &SessionView| s.info.groups.iter().any(|g| g == group);
    let mut members: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.groups.iter().any(|g| g == group))
        .map(|r| r.email.clone())
        .collect();
    members.extend(
        sessions
            .iter()
            .filter(|s| carries(s))
            .map(|s| s.info.user.clone()),
    );
    members
        .into_iter()
        .map(|m| {
            let mine: Vec<&SessionView> = sessions.iter().filter(|s| s.info.user == m).collect();
            let last_active = mine
                .iter()
                .max_by_key(|s| s.last_seen_us)
                .map(|s| (s.info.sid.clone(), s.last_seen_us));
            let sessions_ended = mine
                .iter()
                .filter(|s| carries(s) && s.info.created_us <= at && s.info.expires_us > at)
                .filter(|s| !ended_before(s, at, group, set))
                .count();
            ReportRow {
                member: m,
                last_active,
                sessions_ended,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::registry::SessionInfo;
    use std::path::Path;

    fn config() -> Config {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$1JPLF/PygSO1EI/ZH5NP/Q$OQnekTkz+JjYtgMGYILdrKJUhf/U6QaXqE7C9TOkV1U";
        let text = format!(
            r#"
[gateway]
listen = "127.0.0.1:0"
auth_domain = "auth.localhost"
[control]
listen = "127.0.0.1:0"
[[app]]
name = "wiki"
hosts = ["wiki.localhost"]
origin = "builtin:echo"
allow_groups = ["contractors"]
[[user]]
email = "a@x.com"
password_hash = "{hash}"
groups = ["staff"]
[[user]]
email = "off@x.com"
password_hash = "{hash}"
disabled = true
"#
        );
        Config::parse(
            &text,
            Path::new("/tmp/c/gateway.toml"),
            crate::config::Secrets::ReadOnly,
        )
        .unwrap()
    }

    fn view(sid: &str, user: &str, groups: &[&str], created: Micros, seen: Micros) -> SessionView {
        SessionView {
            info: SessionInfo {
                sid: sid.into(),
                user: user.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                created_us: created,
                expires_us: created + 1_000_000_000,
                idp: if user.ends_with("idp.com") {
                    "okta".into()
                } else {
                    String::new()
                },
                ..Default::default()
            },
            apps: vec![],
            last_seen_us: seen,
        }
    }

    struct Scim;
    impl UserStatus for Scim {
        fn inactive(&self, email: &str) -> Option<String> {
            (email == "c@idp.com").then(|| "deactivated by SCIM okta".into())
        }
        fn provisioned(&self) -> Vec<(String, Vec<String>)> {
            vec![("new@idp.com".into(), vec!["contractors".into()])]
        }
    }

    #[test]
    fn users_merge_config_sessions_and_the_status_hook() {
        let c = config();
        let set = RevocationSet::new();
        set.apply(Scope::User, "a@x.com", 1_000);
        let month = vec![
            view("s1", "a@x.com", &["staff"], 100, 150),
            view("s2", "c@idp.com", &["contractors"], 200, 250),
        ];
        let live = vec![month[0].clone()];
        let rows = users(&Inputs {
            config: &c,
            month: &month,
            live: &live,
            set: &set,
            status: Some(&Scim),
            now: 2_000,
        });
        let emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
        assert_eq!(emails, ["a@x.com", "c@idp.com", "new@idp.com", "off@x.com"]);
        assert_eq!(rows[0].idp, "built-in");
        assert_eq!(rows[0].live_sessions, 1);
        assert_eq!(rows[0].last_sign_in, Some(100));
        // Revoked at 1 ms; the lockout is 60 s.
        assert_eq!(rows[0].locked_until, Some(1_000 + 60_000_000));
        assert_eq!(rows[1].idp, "okta");
        assert_eq!(
            rows[1].standing,
            Standing::Inactive("deactivated by SCIM okta".into())
        );
        assert_eq!(rows[2].groups, vec!["contractors".to_string()]);
        assert_eq!(rows[3].standing, Standing::Disabled);
        assert_eq!(search(&rows, "CONTRACT", "").len(), 2);
        assert_eq!(search(&rows, "a@", "staff").len(), 1);
        let gs = groups(&rows, &c, &live, &set);
        let contractors = gs.iter().find(|g| g.name == "contractors").unwrap();
        assert_eq!(contractors.members, vec!["c@idp.com", "new@idp.com"]);
        assert_eq!(contractors.apps, vec!["wiki"]);
    }

    #[test]
    fn the_report_counts_only_sessions_the_revocation_ended() {
        let set = RevocationSet::new();
        let sessions = vec![
            view("s1", "b@x.com", &["contractors"], 100, 400),
            view("s2", "b@x.com", &["contractors"], 200, 300),
            // Ended earlier by its own revocation.
            view("s3", "b@x.com", &["contractors"], 210, 220),
            // Created after the revocation: not ended by it.
            view("s4", "b@x.com", &["contractors"], 900, 950),
            view("s5", "d@x.com", &["staff"], 100, 120),
        ];
        set.apply(Scope::Session, "s3", 230);
        set.apply(Scope::Group, "contractors", 500);
        let r = report(&[], &sessions, "contractors", 500, &set);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].member, "b@x.com");
        assert_eq!(r[0].sessions_ended, 2);
        assert_eq!(r[0].last_active, Some(("s4".to_string(), 950)));
    }
}
