//! The Audit page: the latest lines of the JSON-lines audit log, read from its end
//! (bounded), filterable by text, trigger and scope; and whether the hash chain verifies
//! (`audit::verify_chain`, re-run only when the file changed). The trigger is the
//! actor's prefix (`console:`, `scim:`, `hook:`, `ssf:`, `idp:`, `user:`, `selftest:`),
//! or `api` for a control-port admin.

use super::view::{self, Page, Tab, badge, esc};
use super::{Admin, Console};
use crate::audit::{AuditError, verify_chain};
use crate::error::GatewayError;
use crate::web::body::Body;
use crate::web::query;
use http::{Response, StatusCode};
use serde::Deserialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

/// How much of the log's end is read at most, and how many lines are shown.
const TAIL_BYTES: u64 = 4 * 1024 * 1024;
const SHOW: usize = 200;

/// One audit line, as far as the page needs it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Line {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub scope: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    /// The outside party's id for what caused it (a logout token's `jti`, an event id).
    pub external_id: Option<String>,
    pub sessions_revoked: Option<u64>,
    pub node: String,
    pub id: String,
}

/// The actor's kind: its prefix, or `api` for a control-port admin.
pub fn trigger(actor: &str) -> &str {
    match actor.split_once(':') {
        Some((prefix, _)) if !prefix.is_empty() => prefix,
        _ => "api",
    }
}

/// The last lines of the file at `path` (at most `max_bytes` from its end), newest
/// first; a line cut by the window is dropped.
pub fn tail(path: &Path, max_bytes: u64) -> std::io::Result<Vec<String>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.split('\n').filter(|l| !l.trim().is_empty()).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    Ok(lines.into_iter().rev().map(str::to_string).collect())
}

/// The page's filters.
#[derive(Debug, Default)]
pub struct Filter {
    pub q: String,
    pub trigger: String,
    pub scope: String,
}

impl Filter {
    pub fn matches(&self, l: &Line) -> bool {
        let q = self.q.to_ascii_lowercase();
        let text = |s: &str| s.to_ascii_lowercase().contains(&q);
        (self.trigger.is_empty() || trigger(&l.actor) == self.trigger)
            && (self.scope.is_empty() || l.scope.as_deref() == Some(self.scope.as_str()))
            && (q.is_empty()
                || text(&l.actor)
                || text(&l.id)
                || l.target.as_deref().is_some_and(text)
                || l.reason.as_deref().is_some_and(text)
                || l.external_id.as_deref().is_some_and(text))
    }
}

/// What is known about the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    Intact(usize),
    Broken(usize, String),
    Missing,
    Unreadable(String),
}

/// The last verification and the file state it was made for.
#[derive(Default)]
pub struct ChainCache(Mutex<Option<(u64, Option<SystemTime>, Chain)>>);

impl ChainCache {
    /// Verifies the chain unless the file is unchanged since the last time.
    pub fn check(&self, path: &Path) -> Chain {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Chain::Missing,
            Err(e) => return Chain::Unreadable(e.to_string()),
        };
        let key = (meta.len(), meta.modified().ok());
        if let Ok(c) = self.0.lock()
            && let Some((len, at, chain)) = c.as_ref()
            && (*len, *at) == key
        {
            return chain.clone();
        }
        let chain = match verify_chain(path) {
            Ok(r) => Chain::Intact(r.lines),
            Err(AuditError::Broken { line, reason }) => Chain::Broken(line, reason),
            Err(e) => Chain::Unreadable(e.to_string()),
        };
        if let Ok(mut c) = self.0.lock() {
            *c = Some((key.0, key.1, chain.clone()));
        }
        chain
    }
}

fn chain_notice(c: &Chain) -> String {
    match c {
        Chain::Intact(n) => format!(r#"<p class="notice ok" id="chain">Hash chain verified: all {n} lines are intact.</p>"#),
        Chain::Broken(line, why) => format!(r#"<p class="notice bad" id="chain">Hash chain BROKEN at line {line}: {}. The log was edited, truncated or had lines inserted.</p>"#, esc(why)),
        Chain::Missing => r#"<p class="notice warn" id="chain">No audit log yet: nothing has been revoked on this node.</p>"#.into(),
        Chain::Unreadable(e) => format!(r#"<p class="notice bad" id="chain">The audit log cannot be read: {}</p>"#, esc(e)),
    }
}

fn options(name: &str, choices: &[&str], chosen: &str) -> String {
    let mut out = format!(
        r#"<select name="{name}" aria-label="{name}"><option value="">any {name}</option>"#
    );
    for c in choices {
        let sel = if *c == chosen { " selected" } else { "" };
        out.push_str(&format!(r#"<option value="{c}"{sel}>{c}</option>"#));
    }
    out + "</select>"
}

fn line_row(l: &Line) -> String {
    let t = trigger(&l.actor);
    let class = match t {
        "console" => "b-info",
        "api" | "selftest" => "b-grey",
        _ => "b-warn",
    };
    // To the second on screen; the exact time in the tooltip; node and line id below.
    let shown: String = l.time.replacen('T', " ", 1).chars().take(19).collect();
    let opt = |v: &Option<String>| esc(v.as_deref().unwrap_or(""));
    let time = format!(
        r#"<span class="nowrap" title="{}">{}</span><div class="muted small">{} &middot; <code>{}</code></div>"#,
        esc(&l.time),
        esc(&shown),
        esc(&l.node),
        esc(&l.id)
    );
    let action = match &l.scope {
        Some(scope) => format!(
            r#"{}<div class="muted small">scope {}</div>"#,
            esc(&l.action),
            esc(scope)
        ),
        None => esc(&l.action),
    };
    let reason = match &l.external_id {
        Some(x) => format!(
            r#"{}<div class="muted small">ref <code>{}</code></div>"#,
            opt(&l.reason),
            esc(x)
        ),
        None => opt(&l.reason),
    };
    view::tr(
        "",
        &[
            ("Time", "", time),
            ("Actor", "wrap", esc(&l.actor)),
            ("Trigger", "", badge(class, t)),
            ("Action", "", action),
            ("Target", "wrap", opt(&l.target)),
            ("Reason", "ua", reason),
            (
                "Sessions",
                "num",
                l.sessions_revoked
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            ),
        ],
    )
}

impl Console {
    pub(super) async fn audit_page(
        &self,
        a: &Admin<'_>,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let filter = Filter {
            q: query::param(q, "q").unwrap_or_default().trim().to_string(),
            trigger: query::param(q, "trigger").unwrap_or_default(),
            scope: query::param(q, "scope").unwrap_or_default(),
        };
        let path = self.audit_path.clone();
        let (lines, chain) = {
            let cache_path = path.clone();
            let read = tokio::task::spawn_blocking(move || tail(&path, TAIL_BYTES));
            let chain = self.chain_check(cache_path);
            let (read, chain) = tokio::join!(read, chain);
            (
                read.map_err(|e| GatewayError::Internal(e.to_string()))?,
                chain,
            )
        };
        let lines = match lines {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(GatewayError::Internal(format!(
                    "reading the audit log: {e}"
                )));
            }
        };
        let read = lines.len();
        let shown: Vec<Line> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Line>(l).ok())
            .filter(|l| filter.matches(l))
            .take(SHOW)
            .collect();
        let rows: String = shown.iter().map(line_row).collect();
        let table = if shown.is_empty() {
            r#"<div class="card muted">No audit line matches.</div>"#.to_string()
        } else {
            format!(
                r#"<div class="table-wrap"><table id="audit" class="stack"><thead><tr><th>Time (UTC), node, id</th><th>Actor</th><th>Trigger</th><th>Action</th><th>Target</th><th>Reason</th><th class="num">Sessions</th></tr></thead><tbody>{rows}</tbody></table></div>"#
            )
        };
        let triggers = [
            "console", "api", "scim", "ssf", "hook", "idp", "user", "selftest",
        ];
        let scopes = ["user", "session", "group", "app", "member", "all"];
        let body = format!(
            r#"<h1>Audit log</h1>{chain}
<form class="bar" method="get" action="/admin/audit"><input class="grow" type="search" name="q" value="{q}" placeholder="Actor, target, reason, id or ref" aria-label="Search the audit log">{trig}{scope}<button class="btn" type="submit">Filter</button></form>
<p class="muted small">The newest first: {n} shown of the latest {read} lines of <code>{file}</code> on this node.</p>{table}"#,
            chain = chain_notice(&chain),
            q = esc(&filter.q),
            trig = options("trigger", &triggers, &filter.trigger),
            scope = options("scope", &scopes, &filter.scope),
            n = shown.len(),
            file = esc(&self.audit_path.display().to_string()),
        );
        Ok(view::respond(
            StatusCode::OK,
            &Page {
                title: "Audit",
                tab: Tab::Audit,
                body,
                script: None,
            },
            Some(&a.viewer()),
        ))
    }

    async fn chain_check(&self, path: std::path::PathBuf) -> Chain {
        // Verification reads the whole file: off the executor (cached while unchanged).
        let cache = self.chain.clone();
        tokio::task::spawn_blocking(move || cache.check(&path))
            .await
            .unwrap_or_else(|e| Chain::Unreadable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog};

    fn ev(i: i64, actor: &str) -> AuditEvent {
        AuditEvent {
            time_us: 1_700_000_000_000_000 + i,
            actor: actor.into(),
            action: "revoke".into(),
            scope: Some("user".into()),
            target: Some(format!("u{i}@x.com")),
            reason: Some("r".into()),
            external_id: (i == 2).then(|| "evt-77".to_string()),
            sessions_revoked: Some(1),
            node: "n".into(),
            id: format!("id{i}"),
        }
    }

    #[test]
    fn reads_the_end_filters_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for (i, actor) in ["ops", "console:a@x.com", "scim:okta"].iter().enumerate() {
            log.append(&ev(i as i64, actor)).unwrap();
        }
        let lines = tail(&path, TAIL_BYTES).unwrap();
        assert_eq!(lines.len(), 3);
        let parsed: Vec<Line> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed[0].actor, "scim:okta", "newest first");
        assert_eq!(trigger(&parsed[1].actor), "console");
        assert_eq!(trigger(&parsed[2].actor), "api");
        let f = Filter {
            trigger: "console".into(),
            ..Default::default()
        };
        assert_eq!(parsed.iter().filter(|l| f.matches(l)).count(), 1);
        let f = Filter {
            q: "U2@X".into(),
            ..Default::default()
        };
        assert_eq!(parsed.iter().filter(|l| f.matches(l)).count(), 1);
        let f = Filter {
            q: "EVT-77".into(),
            ..Default::default()
        };
        let by_ref: Vec<&Line> = parsed.iter().filter(|l| f.matches(l)).collect();
        assert_eq!((by_ref.len(), by_ref[0].actor.as_str()), (1, "scim:okta"));
        assert!(line_row(by_ref[0]).contains("ref <code>evt-77</code>"));
        // A window that cuts a line drops it.
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(tail(&path, len - 5).unwrap().len(), 2);
        let cache = ChainCache::default();
        assert_eq!(cache.check(&path), Chain::Intact(3));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("u0@x.com", "u10@x.com", 1);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(cache.check(&path), Chain::Broken(2, _)));
        assert_eq!(cache.check(&dir.path().join("none")), Chain::Missing);
    }
}
