//! Tamper-evident JSON-lines audit log.
//!
//! Every line carries `prev`, the SHA-256 of the previous line's exact bytes
//! (without its newline), so editing, deleting or inserting a line breaks the
//! chain at the following line. The first line's `prev` is 64 zeros.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first line.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors from the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    sessions_revoked: Option<u64>,
    node: String,
    id: String,
    prev: String,
}

struct Inner {
    file: File,
    /// Hex SHA-256 of the last complete line (chain head).
    last_hash: String,
}

/// Append handle for the audit log. Blocking; call from `spawn_blocking`.
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AuditError {
    move |source| AuditError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Formats microseconds since the epoch as RFC 3339 UTC with milliseconds,
/// e.g. `2026-11-22T09:30:00.123Z`. Sub-millisecond digits are truncated.
pub fn format_rfc3339_millis(time_us: i64) -> String {
    let ms = time_us.div_euclid(1_000);
    let secs = ms.div_euclid(1_000);
    let milli = ms.rem_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3_600,
        (sod % 3_600) / 60,
        sod % 60
    )
}

/// Howard Hinnant's civil-from-days: days since 1970-01-01 -> (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Ranges above make these casts lossless.
    (y, m as u32, d as u32)
}

/// Offset of the last `\n` strictly before `end`, scanning backwards in
/// chunks so a large log is not read whole at startup.
fn last_newline_before(file: &mut File, end: u64) -> std::io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let n = (hi - lo) as usize;
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// Finds the chain head, truncating a torn (newline-less) final line.
fn recover_head(file: &mut File, path: &Path) -> Result<String, AuditError> {
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    if len == 0 {
        return Ok(GENESIS_PREV.to_owned());
    }
    let mut end = len; // one past the last complete line's newline
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))
        .and_then(|_| file.read_exact(&mut last))
        .map_err(io_err("read", path))?;
    if last[0] != b'\n' {
        end = last_newline_before(file, len)
            .map_err(io_err("read", path))?
            .map_or(0, |i| i + 1);
        tracing::warn!(
            path = %path.display(),
            from = len,
            to = end,
            "audit log: truncating torn final line"
        );
        file.set_len(end).map_err(io_err("truncate", path))?;
        file.sync_data().map_err(io_err("sync", path))?;
        if end == 0 {
            return Ok(GENESIS_PREV.to_owned());
        }
    }
    // The last complete line spans [start, end - 1).
    let start = last_newline_before(file, end - 1)
        .map_err(io_err("read", path))?
        .map_or(0, |i| i + 1);
    let mut line = vec![0u8; (end - 1 - start) as usize];
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut line))
        .map_err(io_err("read", path))?;
    if serde_json::from_slice::<LineOwned>(&line).is_err() {
        // Keep chaining from its hash anyway; verify_chain will report it.
        tracing::warn!(path = %path.display(), "audit log: last line is not a valid audit record");
    }
    Ok(sha256_hex(&line))
}

impl AuditLog {
    /// Opens (creating if needed) the audit log and recovers the chain head.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err("create dir", parent))?;
        }
        // Append mode: writes always land at the end regardless of the seeks
        // done while recovering the head.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let last_hash = recover_head(&mut file, path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { file, last_hash }),
        })
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event and returns once it is durable.
    pub fn append(&self, ev: &AuditEvent) -> Result<(), AuditError> {
        let time = format_rfc3339_millis(ev.time_us);
        // Poison only means another append panicked; the head is only updated
        // after a successful write, so the state is still consistent.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let line = LineRef {
            time: &time,
            actor: &ev.actor,
            action: &ev.action,
            scope: ev.scope.as_deref(),
            target: ev.target.as_deref(),
            reason: ev.reason.as_deref(),
            sessions_revoked: ev.sessions_revoked,
            node: &ev.node,
            id: &ev.id,
            prev: &inner.last_hash,
        };
        let mut buf = serde_json::to_vec(&line)?;
        let hash = sha256_hex(&buf);
        buf.push(b'\n');

        let before = inner
            .file
            .metadata()
            .map_err(io_err("stat", &self.path))?
            .len();
        let res = inner
            .file
            .write_all(&buf)
            .and_then(|()| inner.file.sync_data());
        if let Err(source) = res {
            // A partial line would break the chain for every later line.
            if let Err(e) = inner.file.set_len(before) {
                tracing::error!(path = %self.path.display(), error = %e, "audit log: rollback after failed append failed");
            }
            return Err(AuditError::Io {
                op: "append",
                path: self.path.clone(),
                source,
            });
        }
        inner.last_hash = hash;
        Ok(())
    }
}

/// Verifies the whole chain. Detects edited, deleted and inserted lines and
/// invalid JSON, reporting the first bad line (1-based). An edit to the very
/// last line is undetectable by the chain alone (nothing follows it).
pub fn verify_chain(path: &Path) -> Result<ChainReport, AuditError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut reader = BufReader::new(file);
    let mut expected_prev = GENESIS_PREV.to_owned();
    let mut buf = Vec::new();
    let mut lines = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err("read", path))?;
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

    #[test]
    fn time_formatting() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123Z"
        );
        // 2024-02-29T12:34:56.789Z = 1709210096 s
        assert_eq!(
            format_rfc3339_millis(1_709_210_096_789_999),
            "2024-02-29T12:34:56.789Z"
        );
        // 2024-03-01T00:00:00Z = 1709251200 s: day after the leap day.
        assert_eq!(
            format_rfc3339_millis(1_709_251_200_000_000),
            "2024-03-01T00:00:00.000Z"
        );
        // 2000-02-29 (400-year leap) = 951782400 s.
        assert_eq!(
            format_rfc3339_millis(951_782_400_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339_millis(1_795_339_800_123_000),
            "2026-11-22T09:30:00.123Z"
        );
    }
}
