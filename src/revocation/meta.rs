//! What is known about each revocation in force besides its instant: its id, reason,
//! actor and the node that took it, whichever way it arrived (taken here, pushed, pulled
//! by anti-entropy, read from the backend). The per-request check never reads this;
//! listings and anti-entropy do. Entries older than any live token leave with the set's.

use super::{RevocationRecord, Scope};
use crate::clock::Micros;
use dashmap::DashMap;
use std::sync::Arc;

/// Separates the fields of a stored record (the wire form's separator).
const SEP: char = '\u{1f}';

/// A record as kept: its instant and its other fields in one allocation (a node may hold
/// a million; listings, which build full records, are rare).
struct Packed {
    nb: Micros,
    /// id, reason, actor, node and external id ("" when none), separated by [`SEP`].
    fields: Box<str>,
}

#[derive(Default)]
pub struct MetaIndex {
    map: DashMap<(Scope, Box<str>), Packed>,
}

impl MetaIndex {
    /// Keeps `rec` unless a record at least as new is already there.
    pub fn insert(&self, rec: RevocationRecord) {
        let ext = rec.external_id.as_deref().unwrap_or("");
        let fields = [rec.id.as_str(), &rec.reason, &rec.actor, &rec.node, ext];
        self.insert_fields(rec.scope, &rec.target, rec.not_before_us, fields);
    }

    /// The same from the fields of a wire entry (id, reason, actor, node, external id),
    /// without building a record.
    pub fn insert_fields(&self, scope: Scope, target: &str, nb: Micros, fields: [&str; 5]) {
        let packed = || {
            let mut text = String::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    text.push(SEP);
                }
                text.extend(f.chars().filter(|&c| c != SEP));
            }
            Packed {
                nb,
                fields: text.into_boxed_str(),
            }
        };
        match self.map.entry((scope, Box::from(target))) {
            dashmap::Entry::Occupied(mut e) => {
                if e.get().nb < nb {
                    e.insert(packed());
                }
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(packed());
            }
        }
    }

    /// The record of the entry in force for (`scope`, `target`) at instant `nb`.
    pub fn get(&self, scope: Scope, target: &str, nb: Micros) -> Option<Arc<RevocationRecord>> {
        let p = self.map.get(&(scope, Box::<str>::from(target)))?;
        if p.nb != nb {
            return None;
        }
        let mut f = p.fields.split(SEP);
        let mut next = || f.next().unwrap_or("").to_string();
        let (id, reason, actor, node, ext) = (next(), next(), next(), next(), next());
        Some(Arc::new(RevocationRecord {
            id,
            scope,
            target: target.to_string(),
            not_before_us: nb,
            reason,
            actor,
            node,
            external_id: (!ext.is_empty()).then_some(ext),
        }))
    }

    /// Forgets records older than `horizon` (except `all`).
    pub fn prune(&self, horizon: Micros) {
        self.map
            .retain(|(scope, _), p| *scope == Scope::All || p.nb >= horizon);
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

    #[test]
    fn gives_back_every_field() {
        let m = MetaIndex::default();
        let mut r = rec(30, "c");
        r.external_id = Some("evt-9".into());
        r.reason = "left, see HR-12".into();
        m.insert(r.clone());
        assert_eq!(*m.get(Scope::User, "a@x.com", 30).unwrap(), r);
        m.insert_fields(Scope::Group, "eng", 40, ["d", "", "scim:okta", "n2", ""]);
        let g = m.get(Scope::Group, "eng", 40).unwrap();
        assert_eq!(
            (g.id.as_str(), g.actor.as_str(), g.external_id.clone()),
            ("d", "scim:okta", None)
        );
    }
}
