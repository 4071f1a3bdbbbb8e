//! What is known about each revocation in force besides its instant: its id, reason,
//! actor and the node that took it, whichever way it arrived (taken here, pushed, pulled
//! by anti-entropy, read from the backend). The per-request check never reads this;
//! listings and anti-entropy do. Entries older than any live token leave with the set's.

use super::{RevocationRecord, Scope};
use crate::clock::Micros;
use dashmap::DashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct MetaIndex {
    map: DashMap<(Scope, Box<str>), Arc<RevocationRecord>>,
}

impl MetaIndex {
    /// Keeps `rec` unless a record at least as new is already there.
    pub fn insert(&self, rec: RevocationRecord) {
        let key = (rec.scope, Box::<str>::from(rec.target.as_str()));
        match self.map.entry(key) {
            dashmap::Entry::Occupied(mut e) => {
                if e.get().not_before_us < rec.not_before_us {
                    e.insert(Arc::new(rec));
                }
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(Arc::new(rec));
            }
        }
    }

    /// The record of the entry in force for (`scope`, `target`) at instant `nb`.
    pub fn get(&self, scope: Scope, target: &str, nb: Micros) -> Option<Arc<RevocationRecord>> {
        let rec = self.map.get(&(scope, Box::<str>::from(target)))?;
        (rec.not_before_us == nb).then(|| rec.clone())
    }

    /// Forgets records older than `horizon` (except `all`).
    pub fn prune(&self, horizon: Micros) {
        self.map
            .retain(|(scope, _), r| *scope == Scope::All || r.not_before_us >= horizon);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(nb: Micros, id: &str) -> RevocationRecord {
        RevocationRecord {
            id: id.into(),
            scope: Scope::User,
            target: "a@x.com".into(),
            not_before_us: nb,
            reason: "r".into(),
            actor: "ops".into(),
            node: "n1".into(),
            external_id: None,
        }
    }

    #[test]
    fn keeps_the_newest_and_prunes() {
        let m = MetaIndex::default();
        m.insert(rec(20, "b"));
        m.insert(rec(10, "a"));
        assert_eq!(m.get(Scope::User, "a@x.com", 20).unwrap().id, "b");
        assert!(m.get(Scope::User, "a@x.com", 10).is_none());
        m.prune(21);
        assert!(m.is_empty());
    }
}
