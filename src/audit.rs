//! Tamper-evident JSON-lines audit log.
//!
//! Every line carries `prev`, the SHA-256 of the previous line's exact bytes
//! (without its newline), so editing, deleting or inserting a line breaks the
//! chain at the following line. The first line's `prev` is 64 zeros.

use crate::store::record_log::io_err as store_err;
use crate::store::{RecordLog, StoreError, Sync};
use crate::timefmt::format_rfc3339_millis;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first line.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors from the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Store(#[from] StoreError),
    #[error("audit log: encoding event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("audit chain broken at line {line}: {reason}")]
    Broken { line: usize, reason: String },
}

/// One auditable action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Microseconds since the Unix epoch.
    pub time_us: i64,
    pub actor: String,
    /// e.g. "revoke", "delete_session", "bulk_revoke".
    pub action: String,
    pub scope: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    /// The id the outside party that caused this gave it (a logout token's `jti`, a
    /// SCIM user id, a SET's `jti`, a webhook's `event_id`), so the line can be matched
    /// with that party's own log; the line has no `external_id` field when there is none.
    pub external_id: Option<String>,
    pub sessions_revoked: Option<u64>,
    pub node: String,
    pub id: String,
}

/// Result of a successful [`verify_chain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub lines: usize,
}

/// On-disk line; field order here is the order in the JSON.
#[derive(Serialize)]
struct LineRef<'a> {
    time: &'a str,
    actor: &'a str,
    action: &'a str,
    scope: Option<&'a str>,
    target: Option<&'a str>,
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    sessions_revoked: Option<u64>,
    node: &'a str,
    id: &'a str,
    prev: &'a str,
}

/// Owned form used by verification to check each line's schema.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // fields exist to validate the schema
struct LineOwned {
    time: String,
    actor: String,
    action: String,
    scope: Option<String>,
    target: Option<String>,
    reason: Option<String>,
    /// Absent from lines written before it existed, and whenever there is none.
    #[serde(default)]
    external_id: Option<String>,
    sessions_revoked: Option<u64>,
    node: String,
    id: String,
    prev: String,
}

/// Append handle for the audit log. Blocking; call from `spawn_blocking`.
pub struct AuditLog {
    log: RecordLog,
    /// Hex SHA-256 of the last complete line (the chain head); held while appending so
    /// lines chain in the order they are written.
    head: Mutex<String>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.log.path())
            .finish()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl AuditLog {
    /// Opens (creating if needed) the audit log and recovers the chain head from its
    /// last line (a torn final line is cut).
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let (log, last) = RecordLog::open_last_line(path)?;
        let head = match last {
            None => GENESIS_PREV.to_owned(),
            Some(line) => {
                if serde_json::from_slice::<LineOwned>(&line).is_err() {
                    // Keep chaining from its hash anyway; verify_chain will report it.
                    tracing::warn!(path = %path.display(), "audit log: last line is not a valid audit record");
                }
                sha256_hex(&line)
            }
        };
        Ok(AuditLog {
            log,
            head: Mutex::new(head),
        })
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        self.log.path()
    }

    /// Appends one event and returns once it is durable.
    pub fn append(&self, ev: &AuditEvent) -> Result<(), AuditError> {
        let time = format_rfc3339_millis(ev.time_us);
        // Poison only means another append panicked; the head is only updated
        // after a successful write, so the state is still consistent.
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let line = LineRef {
            time: &time,
            actor: &ev.actor,
            action: &ev.action,
            scope: ev.scope.as_deref(),
            target: ev.target.as_deref(),
            reason: ev.reason.as_deref(),
            external_id: ev.external_id.as_deref(),
            sessions_revoked: ev.sessions_revoked,
            node: &ev.node,
            id: &ev.id,
            prev: &head,
        };
        let buf = serde_json::to_vec(&line)?;
        self.log.append(&[&buf], Sync::Durable)?;
        *head = sha256_hex(&buf);
        Ok(())
    }
}

/// Verifies the whole chain. Detects edited, deleted and inserted lines and
/// invalid JSON, reporting the first bad line (1-based). An edit to the very
/// last line is undetectable by the chain alone (nothing follows it).
pub fn verify_chain(path: &Path) -> Result<ChainReport, AuditError> {
    let file = File::open(path).map_err(store_err("open", path))?;
    let mut reader = BufReader::new(file);
    let mut expected_prev = GENESIS_PREV.to_owned();
    let mut buf = Vec::new();
    let mut lines = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(store_err("read", path))?;
        if n == 0 {
            break;
        }
        lines += 1;
        let broken = |reason: String| AuditError::Broken {
            line: lines,
            reason,
        };
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(broken("incomplete line (no trailing newline)".to_owned()));
        };
        let parsed: LineOwned = serde_json::from_slice(line)
            .map_err(|e| broken(format!("invalid audit record JSON: {e}")))?;
        if parsed.prev != expected_prev {
            return Err(broken(format!(
                "prev hash mismatch: expected {expected_prev}, found {}",
                parsed.prev
            )));
        }
        expected_prev = sha256_hex(line);
    }
    Ok(ChainReport { lines })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn ev(i: u64) -> AuditEvent {
        AuditEvent {
            time_us: 1_700_000_000_123_456 + i as i64 * 1_000_000,
            actor: "admin@example.com".to_owned(),
            action: "revoke".to_owned(),
            scope: Some("user".to_owned()),
            target: Some(format!("user-{i}")),
            reason: if i.is_multiple_of(2) {
                Some("offboarded".to_owned())
            } else {
                None
            },
            external_id: (i == 2).then(|| "jti-2".to_owned()),
            sessions_revoked: Some(i),
            node: "node-a".to_owned(),
            id: format!("ev-{i}"),
        }
    }

    fn write_three() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..3 {
            log.append(&ev(i)).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut s = lines.join("\n");
        s.push('\n');
        fs::write(path, s).unwrap();
    }

    #[test]
    fn chain_of_three_verifies() {
        let (_d, path) = write_three();
        assert_eq!(verify_chain(&path).unwrap(), ChainReport { lines: 3 });
        let l = lines(&path);
        assert!(l[0].starts_with(r#"{"time":"2023-11-14T22:13:20.123Z","actor":"#));
        assert!(l[0].ends_with(&format!(r#""id":"ev-0","prev":"{GENESIS_PREV}"}}"#)));
        assert!(l[1].contains(r#""reason":null,"sessions_revoked":1,"#));
        assert!(!l[1].contains("external_id"), "left out when there is none");
        assert!(
            l[2].contains(r#""reason":"offboarded","external_id":"jti-2","sessions_revoked":2,"#)
        );
        let v: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
        assert_eq!(v["prev"], sha256_hex(l[0].as_bytes()));
    }

    #[test]
    fn edited_line_two_fails_at_three() {
        let (_d, path) = write_three();
        let mut l = lines(&path);
        l[1] = l[1].replace("user-1", "user-X");
        write_lines(&path, &l);
        match verify_chain(&path) {
            Err(AuditError::Broken { line, reason }) => {
                assert_eq!(line, 3);
                assert!(reason.contains("prev"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn deleted_first_line_fails() {
        let (_d, path) = write_three();
        let l = lines(&path);
        write_lines(&path, &l[1..]);
        assert!(matches!(
            verify_chain(&path),
            Err(AuditError::Broken { line: 1, .. })
        ));
    }

    #[test]
    fn deleted_middle_line_fails() {
        let (_d, path) = write_three();
        let l = lines(&path);
        write_lines(&path, &[l[0].clone(), l[2].clone()]);
        assert!(matches!(
            verify_chain(&path),
            Err(AuditError::Broken { line: 2, .. })
        ));
    }

    #[test]
    fn inserted_line_fails() {
        let (_d, path) = write_three();
        let mut l = lines(&path);
        // Forged line with a correct prev: the line after it still breaks.
        let prev_of_1 = serde_json::from_str::<serde_json::Value>(&l[1]).unwrap()["prev"]
            .as_str()
            .unwrap()
            .to_owned();
        let forged = l[1]
            .replace("ev-1", "ev-forged")
            .replace(&prev_of_1, &sha256_hex(l[1].as_bytes()));
        l.insert(2, forged);
        write_lines(&path, &l);
        assert!(matches!(
            verify_chain(&path),
            Err(AuditError::Broken { line: 4, .. })
        ));
    }

    #[test]
    fn invalid_json_fails() {
        let (_d, path) = write_three();
        let mut l = lines(&path);
        l[1] = "not json".to_owned();
        write_lines(&path, &l);
        match verify_chain(&path) {
            Err(AuditError::Broken { line, reason }) => {
                assert_eq!(line, 2);
                assert!(reason.contains("JSON"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn external_ids_are_written_and_lines_without_them_still_verify() {
        let (_d, path) = write_three();
        let log = AuditLog::open(&path).unwrap();
        let mut e = ev(3);
        e.external_id = Some("2819c223-7f76-453a-919d-413861904646".into());
        log.append(&e).unwrap();
        let l = lines(&path);
        assert!(!l[0].contains("external_id"), "{}", l[0]);
        assert!(
            l[3].contains(
                r#""external_id":"2819c223-7f76-453a-919d-413861904646","sessions_revoked":3,"#
            ),
            "{}",
            l[3]
        );
        assert_eq!(verify_chain(&path).unwrap(), ChainReport { lines: 4 });
    }

    #[test]
    fn reopen_continues_chain() {
        let (_d, path) = write_three();
        let log = AuditLog::open(&path).unwrap();
        log.append(&ev(3)).unwrap();
        drop(log);
        assert_eq!(verify_chain(&path).unwrap(), ChainReport { lines: 4 });
    }

    #[test]
    fn torn_last_line_truncated_on_open() {
        let (_d, path) = write_three();
        let good = fs::read(&path).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"time":"2023-11-14T22:13"#);
        fs::write(&path, &torn).unwrap();
        assert!(matches!(
            verify_chain(&path),
            Err(AuditError::Broken { line: 4, .. })
        ));
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), good);
        log.append(&ev(3)).unwrap();
        assert_eq!(verify_chain(&path).unwrap(), ChainReport { lines: 4 });
    }

    #[test]
    fn torn_only_line_resets_to_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, b"{\"time\":").unwrap();
        let log = AuditLog::open(&path).unwrap();
        log.append(&ev(0)).unwrap();
        assert_eq!(verify_chain(&path).unwrap(), ChainReport { lines: 1 });
    }

    #[test]
    fn empty_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let _log = AuditLog::open(&path).unwrap();
        assert_eq!(verify_chain(&path).unwrap(), ChainReport { lines: 0 });
    }
}
