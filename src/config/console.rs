//! The `[console]` table: who may use the admin console at `https://<auth_domain>/admin/`
//! and how recent their sign-in must be for an action. No table, no console.

use super::EmailPattern;
use serde::Deserialize;
use std::time::Duration;

/// The table as written in `gateway.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleFile {
    /// Emails (or `*@domain`, `*`) of the administrators.
    #[serde(default)]
    pub admin_emails: Vec<String>,
    /// Groups whose members are administrators.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Actions need a sign-in younger than this (default 15 minutes).
    pub reauth_after: Option<super::file::HumanDuration>,
}

/// The validated table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub admin_emails: Vec<EmailPattern>,
    pub admin_groups: Vec<String>,
    pub reauth_after: Duration,
}

pub const DEFAULT_REAUTH_AFTER: Duration = Duration::from_secs(15 * 60);

impl ConsoleConfig {
    /// Whether a signed-in user with this email and these groups is an administrator.
    pub fn is_admin(&self, email: &str, groups: &[String]) -> bool {
        self.admin_emails.iter().any(|p| p.matches(email))
            || self
                .admin_groups
                .iter()
                .any(|g| groups.iter().any(|ug| ug == g))
    }
}

/// Validates the table; errors are (field, reason).
pub fn validate(f: &ConsoleFile) -> Result<ConsoleConfig, (String, String)> {
    let mut admin_emails = Vec::new();
    for (i, p) in f.admin_emails.iter().enumerate() {
        let pat =
            super::parse_email_pattern(p).map_err(|r| (format!("console.admin_emails[{i}]"), r))?;
        admin_emails.push(pat);
    }
    let mut admin_groups = Vec::new();
    for (i, g) in f.admin_groups.iter().enumerate() {
        let g = g.trim();
        if g.is_empty() {
            return Err((
                format!("console.admin_groups[{i}]"),
                "must not be empty".into(),
            ));
        }
        admin_groups.push(g.to_string());
    }
    if admin_emails.is_empty() && admin_groups.is_empty() {
        return Err((
            "console.admin_emails".into(),
            "no administrators: set admin_emails and/or admin_groups (or remove [console] to turn the console off)".into(),
        ));
    }
    let reauth_after = f.reauth_after.map_or(DEFAULT_REAUTH_AFTER, |d| d.0);
    if reauth_after < Duration::from_secs(10) {
        return Err(("console.reauth_after".into(), "must be at least 10s".into()));
    }
    Ok(ConsoleConfig {
        admin_emails,
        admin_groups,
        reauth_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(emails: &[&str], groups: &[&str]) -> ConsoleFile {
        ConsoleFile {
            admin_emails: emails.iter().map(|s| s.to_string()).collect(),
            admin_groups: groups.iter().map(|s| s.to_string()).collect(),
            reauth_after: None,
        }
    }

    #[test]
    fn admins_by_email_or_group() {
        let c = validate(&file(&["Root@Example.com"], &["secops"])).unwrap();
        assert_eq!(c.reauth_after, DEFAULT_REAUTH_AFTER);
        assert!(c.is_admin("root@example.com", &[]));
        assert!(c.is_admin("x@y.org", &["secops".into()]));
        assert!(!c.is_admin("x@y.org", &["staff".into()]));
        assert!(!c.is_admin("root@example.com.evil", &[]));
    }

    #[test]
    fn refuses_no_admins_and_bad_values() {
        assert_eq!(
            validate(&file(&[], &[])).unwrap_err().0,
            "console.admin_emails"
        );
        assert_eq!(
            validate(&file(&["not an email"], &[])).unwrap_err().0,
            "console.admin_emails[0]"
        );
        assert_eq!(
            validate(&file(&[], &[" "])).unwrap_err().0,
            "console.admin_groups[0]"
        );
        let mut f = file(&["a@b.com"], &[]);
        f.reauth_after = Some(super::super::file::HumanDuration(Duration::from_secs(1)));
        assert_eq!(validate(&f).unwrap_err().0, "console.reauth_after");
    }
}
