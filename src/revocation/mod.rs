//! Revocation: the in-memory set checked on every request, its durable log, and the
//! engine that applies a revocation everywhere it must take effect.

pub mod engine;
pub mod log;
pub mod meta;
pub mod set;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Session,
    User,
    Group,
    App,
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Session => "session",
            Scope::User => "user",
            Scope::Group => "group",
            Scope::App => "app",
            Scope::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "session" => Scope::Session,
            "user" => Scope::User,
            "group" => Scope::Group,
            "app" => Scope::App,
            "all" => Scope::All,
            _ => return None,
        })
    }

    pub const ALL: [Scope; 5] = [
        Scope::Session,
        Scope::User,
        Scope::Group,
        Scope::App,
        Scope::All,
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
}

/// Whether this node's revocation set can be trusted to be current (the cluster
/// backend knows: a node cut off from the others for too long cannot).
pub trait Freshness: Send + Sync {
    /// Why this node serves nothing yet (it has not caught up since it started).
    fn not_ready(&self) -> Option<String>;
    /// Why protected requests must be refused now, if they must.
    fn stale_reason(&self) -> Option<String>;
}
