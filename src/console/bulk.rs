//! The Bulk page: upload a CSV with a `user` column (or paste emails), revoke every
//! known user in it with one durable write, see a result per row, and download the
//! results as CSV. Rows are read by the same parser as the control API's bulk call.
//! The results travel in the page (a hidden field of the download form), so the
//! download works on whichever node the browser reaches.

use super::form::Fields;
use super::view::{self, Page, Tab, esc};
use super::{Admin, Console, csv_out};
use crate::error::GatewayError;
use crate::revocation::Scope;
use crate::revocation::engine::RevokeRequest;
use crate::web::body::Body;
use http::{Response, StatusCode};
use std::collections::HashSet;

/// Rows one upload may hold at most.
const MAX_ROWS: usize = 10_000;
const HEADERS: [&str; 7] = [
    "row",
    "user",
    "status",
    "sessions_revoked",
    "revocation_id",
    "not_before",
    "error",
];

/// One row's result.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowResult {
    row: usize,
    user: String,
    status: &'static str,
    sessions: Option<u64>,
    id: String,
    not_before: String,
    error: String,
}

impl RowResult {
    fn cells(&self) -> Vec<String> {
        vec![
            self.row.to_string(),
            self.user.clone(),
            self.status.to_string(),
            self.sessions.map(|n| n.to_string()).unwrap_or_default(),
            self.id.clone(),
            self.not_before.clone(),
            self.error.clone(),
        ]
    }
}

/// Pasted text: CSV or JSON as uploaded, or simply one email per line.
fn pasted(text: &str) -> String {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let is_csv = first
        .split(',')
        .any(|c| c.trim().trim_matches('"').eq_ignore_ascii_case("user"));
    if is_csv || first.starts_with(['[', '{']) {
        text.to_string()
    } else {
        format!("user\n{text}")
    }
}

impl Console {
    pub(super) fn bulk_page(&self, a: &Admin<'_>) -> Response<Body> {
        self.bulk_form(a, StatusCode::OK, None)
    }

    fn bulk_form(&self, a: &Admin<'_>, status: StatusCode, error: Option<&str>) -> Response<Body> {
        let token = self.form(a, "bulk", String::new(), String::new());
        let error = error
            .map(|e| format!(r#"<p class="notice bad" role="alert">{}</p>"#, esc(e)))
            .unwrap_or_default();
        let body = format!(
            r#"<h1>Bulk revocation</h1>{error}
<div class="card"><p>Revoke many users at once (leavers, a compromised list): every session and token of each known user ends on every node, and their sign-in is refused for a while. Users the gateway does not know are reported, not revoked.</p>
<form method="post" action="/admin/bulk" enctype="multipart/form-data"><input type="hidden" name="csrf" value="{token}">
<label for="file">CSV file with a <code>user</code> column</label><input type="file" id="file" name="file" accept=".csv,text/csv">
<label for="text">&hellip;or paste it here (CSV, or one email per line)</label><textarea id="text" name="text" placeholder="user&#10;alice@example.com&#10;bob@example.com"></textarea>
<label for="reason">Reason (kept in the audit log)</label><input type="text" id="reason" name="reason" value="bulk" maxlength="128">
<div class="actions"><button class="btn danger" type="submit" id="upload">Revoke the users in this list</button></div></form></div>"#,
            token = esc(&token)
        );
        view::respond(
            status,
            &Page {
                title: "Bulk",
                tab: Tab::Bulk,
                body,
                script: None,
            },
            Some(&a.viewer()),
        )
    }

    /// Everyone the console knows (configured, provisioned, signed in this month).
    async fn known_users(&self, a: &Admin<'_>) -> HashSet<String> {
        let snap = self.snapshot(a).await;
        let mut known: HashSet<String> = self
            .user_rows(a, &snap)
            .into_iter()
            .map(|r| r.email)
            .collect();
        known.extend(snap.live.sessions.iter().map(|s| s.info.user.clone()));
        known
    }

    pub(super) async fn bulk_upload(
        &self,
        a: &Admin<'_>,
        f: Fields,
    ) -> Result<Response<Body>, GatewayError> {
        if let Err(r) = self.acting_form(a, &f, "bulk").await {
            return Ok(*r);
        }
        let input = if f.get("file").trim().is_empty() {
            pasted(f.get("text"))
        } else {
            f.get("file").to_string()
        };
        if input.trim().is_empty() {
            return Ok(self.bulk_form(
                a,
                StatusCode::BAD_REQUEST,
                Some("Choose a CSV file or paste a list first. Nothing was revoked."),
            ));
        }
        let rows = match super::rows::rows("text/csv", input.as_bytes()) {
            Ok((rows, _)) if rows.len() <= MAX_ROWS => rows,
            Ok(_) => {
                return Ok(self.bulk_form(
                    a,
                    StatusCode::BAD_REQUEST,
                    Some(&format!(
                        "At most {MAX_ROWS} rows at once. Nothing was revoked."
                    )),
                ));
            }
            Err(e) => {
                return Ok(self.bulk_form(
                    a,
                    StatusCode::BAD_REQUEST,
                    Some(&format!("{e}. Nothing was revoked.")),
                ));
            }
        };
        let reason = match f.get("reason").trim() {
            "" => "bulk".to_string(),
            r => r.to_string(),
        };
        let results = self.revoke_rows(a, &rows, &reason).await?;
        Ok(self.bulk_results_page(a, &results))
    }

    async fn revoke_rows(
        &self,
        a: &Admin<'_>,
        rows: &[String],
        reason: &str,
    ) -> Result<Vec<RowResult>, GatewayError> {
        let known = self.known_users(a).await;
        let mut results = Vec::with_capacity(rows.len());
        let (mut todo, mut slots) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for (i, user) in rows.iter().enumerate() {
            let email = user.trim().to_ascii_lowercase();
            let mut r = RowResult {
                row: i + 1,
                user: email.clone(),
                status: "invalid",
                sessions: None,
                id: String::new(),
                not_before: String::new(),
                error: String::new(),
            };
            if email.is_empty() {
                r.error = "empty user".into();
            } else if !known.contains(&email) {
                r.status = "unknown_user";
            } else if !seen.insert(email.clone()) {
                r.status = "duplicate";
            } else {
                slots.push(results.len());
                todo.push(RevokeRequest {
                    scope: Scope::User,
                    target: email,
                    reason: reason.to_string(),
                    actor: a.actor(),
                    external_id: None,
                });
            }
            results.push(r);
        }
        if !todo.is_empty() {
            let outcomes = self
                .engine
                .revoke_batch(todo, "bulk_revoke")
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            for (slot, o) in slots.into_iter().zip(outcomes) {
                let r = &mut results[slot];
                r.status = "revoked";
                r.sessions = Some(o.sessions_revoked);
                r.id = o.id;
                r.not_before = o.not_before;
            }
        }
        tracing::warn!(admin = %a.email, rows = results.len(), "console: bulk revocation");
        Ok(results)
    }

    fn bulk_results_page(&self, a: &Admin<'_>, results: &[RowResult]) -> Response<Body> {
        let count = |s: &str| results.iter().filter(|r| r.status == s).count();
        let lines: Vec<Vec<String>> = results.iter().map(RowResult::cells).collect();
        let csv = csv_out::write(&HEADERS, &lines)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let token = self.form(a, "bulk-results", String::new(), String::new());
        let rows: String = results
            .iter()
            .map(|r| {
                let badge = match r.status {
                    "revoked" => view::badge("b-ok", "revoked"),
                    "unknown_user" => view::badge("b-warn", "unknown user"),
                    s => view::badge("b-bad", s),
                };
                view::tr(
                    "",
                    &[
                        ("Row", "num", r.row.to_string()),
                        ("User", "wrap", esc(&r.user)),
                        (
                            "Result",
                            "",
                            format!(
                                r#"{badge} <span class="muted small">{}</span>"#,
                                esc(&r.error)
                            ),
                        ),
                        (
                            "Sessions ended",
                            "num",
                            r.sessions.map(|n| n.to_string()).unwrap_or_default(),
                        ),
                        (
                            "Revocation id",
                            "nowrap",
                            format!("<code>{}</code>", esc(&r.id)),
                        ),
                    ],
                )
            })
            .collect();
        let body = format!(
            r#"<h1>Bulk revocation: results</h1><p class="notice ok" id="summary">{rev} revoked, {unk} unknown, {bad} invalid or repeated, of {n} rows.</p>
<form method="post" action="/admin/bulk/results.csv"><input type="hidden" name="csrf" value="{token}"><input type="hidden" name="results" value="{csv}">
<div class="bar"><button class="btn" type="submit" id="download-results">Download results (CSV)</button><a class="btn ghost" href="/admin/bulk">Another list</a></div></form>
<div class="table-wrap"><table id="results" class="stack"><thead><tr><th class="num">Row</th><th>User</th><th>Result</th><th class="num">Sessions ended</th><th>Revocation id</th></tr></thead><tbody>{rows}</tbody></table></div>"#,
            rev = count("revoked"),
            unk = count("unknown_user"),
            bad = count("invalid") + count("duplicate"),
            n = results.len(),
            token = esc(&token),
            csv = esc(&csv),
        );
        view::respond(
            StatusCode::OK,
            &Page {
                title: "Bulk results",
                tab: Tab::Bulk,
                body,
                script: None,
            },
            Some(&a.viewer()),
        )
    }

    /// The results of a bulk revocation as a CSV download (from the page's own copy).
    pub(super) async fn bulk_results(
        &self,
        a: &Admin<'_>,
        f: Fields,
    ) -> Result<Response<Body>, GatewayError> {
        if let Err(r) = self.form_token(a, &f, "bulk-results") {
            return Ok(*r);
        }
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(f.get("results").as_bytes());
        let mut lines = Vec::new();
        for rec in reader.records().take(MAX_ROWS) {
            let rec = rec.map_err(|e| GatewayError::BadRequest(format!("results: {e}")))?;
            lines.push(rec.iter().take(HEADERS.len()).map(str::to_string).collect());
        }
        let bytes =
            csv_out::write(&HEADERS, &lines).map_err(|e| GatewayError::Internal(e.to_string()))?;
        let stamp = crate::timefmt::format_rfc3339_millis(a.now).replace([':', '.'], "-");
        Ok(csv_out::download(
            &format!("bulk-results-{stamp}.csv"),
            bytes,
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pasted_lists_become_csv() {
        assert_eq!(super::pasted("a@x.com\nb@x.com"), "user\na@x.com\nb@x.com");
        assert_eq!(
            super::pasted("name,user\nA,a@x.com"),
            "name,user\nA,a@x.com"
        );
        assert_eq!(super::pasted("[\"a@x.com\"]"), "[\"a@x.com\"]");
    }
}
