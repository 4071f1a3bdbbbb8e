//! Revocation: the in-memory set checked on every request, its durable log, and the
//! engine that applies a revocation everywhere it must take effect.

pub mod engine;
pub mod log;
pub mod meta;
pub mod set;
pub mod wire;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Session,
    User,
    Group,
    App,
    All,
    /// App tokens of one user that carry one group (target `<email>:<group>`), or all of
    /// the user's app tokens (`<email>:*`). The global session stays, so the next
    /// navigation re-issues a token with the user's current groups.
    Member,
}

/// Separates the email from the group in a `member` target.
pub const MEMBER_SEP: char = ':';
/// The group part of a `member` target that matches every app token of the user.
pub const ANY_GROUP: &str = "*";

/// The `member` target for `email` and `group` (`*`: every app token of the user).
pub fn member_target(email: &str, group: &str) -> String {
    format!("{}{MEMBER_SEP}{group}", email.trim().to_ascii_lowercase())
}

/// The email and group of a `member` target.
pub fn split_member(target: &str) -> Option<(&str, &str)> {
    target.split_once(MEMBER_SEP)
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Session => "session",
            Scope::User => "user",
            Scope::Group => "group",
            Scope::App => "app",
            Scope::All => "all",
            Scope::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "session" => Scope::Session,
            "user" => Scope::User,
            "group" => Scope::Group,
            "app" => Scope::App,
            "all" => Scope::All,
            "member" => Scope::Member,
            _ => return None,
        })
    }

    pub const ALL: [Scope; 6] = [
        Scope::Session,
        Scope::User,
        Scope::Group,
        Scope::App,
        Scope::All,
        Scope::Member,
    ];
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub id: String,
    pub scope: Scope,
    pub target: String,
    /// tokens issued (microseconds since the Unix epoch) before this instant are refused
    pub not_before_us: i64,
    pub reason: String,
    pub actor: String,
    pub node: String,
    /// The id the trigger gave this revocation outside Portcullis (a SCIM user id, a
    /// Security Event Token's `jti`, a webhook's `event_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// Whether this node's revocation set can be trusted to be current (the cluster
/// backend knows: a node cut off from the others for too long cannot).
pub trait Freshness: Send + Sync {
    /// Why this node serves nothing yet (it has not caught up since it started).
    fn not_ready(&self) -> Option<String>;
    /// Why protected requests must be refused now, if they must.
    fn stale_reason(&self) -> Option<String>;
}
