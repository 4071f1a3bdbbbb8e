//! The Redis key layout, in one place. Every key starts with `<prefix>:` so several
//! clusters (or other software) can share one Redis.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<p>:revocations` | stream | every revocation ever published, field `r` = record JSON |
//! | `<p>:revocations:trimmed` | string | ms of the last `prune` trim point |
//! | `<p>:revsnap` | hash | digest bucket → the entries in force there, binary (see `snapshot`) |
//! | `<p>:revset` | hash | earlier versions' snapshot: `<scope>:<target>` → JSON record (read, pruned) |
//! | `<p>:once:<key>` | string | a claimed single-use key, with its TTL |
//! | `<p>:fail:<key>` | sorted set | one member per failure, score = time (µs) |
//! | `<p>:session:<sid>` | hash | `doc`, `seen`, `ended`, `app:<name>` of one session |
//! | `<p>:sessions` | sorted set | every sid, score = keep-until (ms) |
//! | `<p>:user:<email>` | sorted set | the sids of one user (lowercased), score = keep-until |
//! | `<p>:doc:<ns>` | hash | id → `<version>:<json>` (`<version>:` alone is a tombstone) |
//! | `<p>:docseq` | string | a counter, one step per document write that won |
//! | `<p>:docchanges` | sorted set | `<ns>\n<id>` → the counter at its last winning write |
//! | `<p>:clocks` | hash | node → `<its clock (µs)>,<Redis time>,<runs at Redis's pace: 0/1>` |

#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
    pub stream: String,
    pub trimmed: String,
    pub revsnap: String,
    pub revset: String,
    pub sessions: String,
    pub doc_seq: String,
    pub doc_changes: String,
    pub clocks: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            stream: format!("{prefix}:revocations"),
            trimmed: format!("{prefix}:revocations:trimmed"),
            revsnap: format!("{prefix}:revsnap"),
            revset: format!("{prefix}:revset"),
            sessions: format!("{prefix}:sessions"),
            doc_seq: format!("{prefix}:docseq"),
            doc_changes: format!("{prefix}:docchanges"),
            clocks: format!("{prefix}:clocks"),
        }
    }
    pub fn once(&self, key: &str) -> String {
        format!("{}:once:{key}", self.prefix)
    }
    pub fn fail(&self, key: &str) -> String {
        format!("{}:fail:{key}", self.prefix)
    }
    pub fn session(&self, sid: &str) -> String {
        format!("{}:session:{sid}", self.prefix)
    }
    pub fn user(&self, email: &str) -> String {
        format!("{}:user:{}", self.prefix, email.to_lowercase())
    }
    pub fn docs(&self, ns: &str) -> String {
        format!("{}:doc:{ns}", self.prefix)
    }
}
