//! The Groups page (each group's members, live sessions, the apps it opens, its last
//! revocation) and the access report after revoking a group: each member, their last
//! active session, the sessions the revocation ended, and the revocation's id and time,
//! as a page and as CSV (the evidence an auditor asks for at project close). The report
//! is computed from cluster-wide facts each time it is asked for, so it is the same on
//! every node and needs no stored state.

use super::data::{self, ReportRow};
use super::view::{self, Page, Tab, chips, confirm_href, esc, user_href, when};
use super::{Admin, Console, csv_out};
use crate::error::GatewayError;
use crate::revocation::Scope;
use crate::session::registry::merge;
use crate::timefmt::format_rfc3339_millis;
use crate::web::body::Body;
use crate::web::query;
use http::{Response, StatusCode};

/// The report's address for a group revocation.
pub fn report_href(group: &str, id: &str, at: i64) -> String {
    let at = at.to_string();
    format!(
        "/admin/groups/report?{}",
        query::encode(&[("group", group), ("id", id), ("at", &at)])
    )
}

/// The report's parameters, checked.
fn report_params(q: Option<&str>) -> Option<(String, String, i64)> {
    let group = query::param(q, "group")?.trim().to_string();
    let id = query::param(q, "id")?;
    let at = query::param(q, "at")?.parse().ok()?;
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!group.is_empty() && id_ok).then_some((group, id, at))
}

impl Console {
    pub(super) async fn groups_page(&self, a: &Admin<'_>) -> Result<Response<Body>, GatewayError> {
        let snap = self.snapshot(a).await;
        let rows = self.user_rows(a, &snap);
        let groups = data::groups(&rows, &a.rt.config, &snap.live.sessions, self.engine.set());
        let body_rows: String = groups
            .iter()
            .map(|g| {
                let members = format!(
                    r#"<a href="/admin/users?{}">{}</a>"#,
                    esc(&query::encode(&[("group", &g.name)])),
                    view::count(g.members.len() as u64, "member", "members")
                );
                let last = match g.revoked_at {
                    Some(t) => {
                        let report = self
                            .engine
                            .meta()
                            .get(Scope::Group, &g.name, t)
                            .map(|r| {
                                format!(
                                    r#" <a href="{}">report</a>"#,
                                    esc(&report_href(&g.name, &r.id, t))
                                )
                            })
                            .unwrap_or_default();
                        format!("{}{report}", when(t, a.now))
                    }
                    None => "&mdash;".into(),
                };
                let revoke = view::link_button(
                    &confirm_href("group", &[&g.name]),
                    "Revoke group",
                    "small outline",
                );
                view::tr(
                    "",
                    &[
                        ("Group", "", format!("<b>{}</b>", esc(&g.name))),
                        ("Members", "", members),
                        ("Live sessions", "num", g.live_sessions.to_string()),
                        ("Apps it opens", "hide-sm", chips(&g.apps)),
                        ("Last revoked", "hide-sm", last),
                        ("", "", revoke),
                    ],
                )
            })
            .collect();
        let table = if groups.is_empty() {
            r#"<div class="card muted">No groups yet: none of the known users has one.</div>"#
                .to_string()
        } else {
            format!(
                r#"<div class="table-wrap"><table id="groups" class="stack"><thead><tr><th>Group</th><th>Members</th><th class="num">Live sessions</th><th class="hide-sm">Apps it opens</th><th class="hide-sm">Last revoked</th><th></th></tr></thead><tbody>{body_rows}</tbody></table></div>"#
            )
        };
        let body = format!(
            r#"<h1>Groups</h1><p class="muted small">Revoking a group ends every session and token that carries it (for example contractors at the end of a project); you see who is affected first, and get an access report afterwards.</p>{}{table}"#,
            snap.missing_notice()
        );
        Ok(view::respond(
            StatusCode::OK,
            &Page {
                title: "Groups",
                tab: Tab::Groups,
                body,
                script: None,
            },
            Some(&a.viewer()),
        ))
    }

    pub(super) async fn group_report(
        &self,
        a: &Admin<'_>,
        q: Option<&str>,
        csv: bool,
    ) -> Result<Response<Body>, GatewayError> {
        let Some((group, id, at)) = report_params(q) else {
            return Err(GatewayError::BadRequest(
                "the report needs group, id and at".into(),
            ));
        };
        let snap = self.snapshot(a).await;
        let users = self.user_rows(a, &snap);
        let sessions = merge(
            snap.month
                .sessions
                .iter()
                .chain(&snap.live.sessions)
                .cloned(),
        );
        let rows = data::report(&users, &sessions, &group, at, self.engine.set());
        if csv {
            return report_csv(&group, &id, at, &rows);
        }
        let rec = self
            .engine
            .meta()
            .get(Scope::Group, &group, at)
            .filter(|r| r.id == id);
        let (actor, reason) = rec.map_or(("—".to_string(), "—".to_string()), |r| {
            (r.actor.clone(), r.reason.clone())
        });
        let ended: usize = rows.iter().map(|r| r.sessions_ended).sum();
        let table_rows: String = rows
            .iter()
            .map(|r| {
                let (sid, seen) = r.last_active.as_ref().map_or(("&mdash;".to_string(), "&mdash;".to_string()), |(sid, t)| (format!("<code>{}</code>", esc(sid)), when(*t, a.now)));
                format!(
                    r#"<tr><td><a href="{}">{}</a></td><td>{sid}</td><td>{seen}</td><td class="num">{}</td></tr>"#,
                    esc(&user_href(&r.member)),
                    esc(&r.member),
                    r.sessions_ended
                )
            })
            .collect();
        let csv_href = report_href(&group, &id, at).replacen("/report?", "/report.csv?", 1);
        let body = format!(
            r#"<p class="small"><a href="/admin/groups">&larr; Groups</a></p><h1>Access report: group {g}</h1>
<div class="card"><dl class="facts"><dt>Revocation</dt><dd><code id="revocation-id">{id}</code></dd><dt>Took effect</dt><dd>{when}</dd><dt>By</dt><dd>{actor}</dd><dt>Reason</dt><dd>{reason}</dd><dt>Members</dt><dd>{members}</dd><dt>Sessions ended</dt><dd>{ended}</dd></dl>
<div class="actions"><a class="btn" id="download-report" href="{csv}">Download CSV</a></div></div>
{missing}<div class="table-wrap"><table id="report"><thead><tr><th>Member</th><th>Last active session</th><th>Last active</th><th class="num">Sessions ended</th></tr></thead><tbody>{table_rows}</tbody></table></div>"#,
            g = esc(&group),
            id = esc(&id),
            when = when(at, a.now),
            actor = esc(&actor),
            reason = esc(&reason),
            members = rows.len(),
            csv = esc(&csv_href),
            missing = snap.missing_notice(),
        );
        Ok(view::respond(
            StatusCode::OK,
            &Page {
                title: "Access report",
                tab: Tab::Groups,
                body,
                script: None,
            },
            Some(&a.viewer()),
        ))
    }
}

fn report_csv(
    group: &str,
    id: &str,
    at: i64,
    rows: &[ReportRow],
) -> Result<Response<Body>, GatewayError> {
    let at_text = format_rfc3339_millis(at);
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (sid, seen) = r
                .last_active
                .as_ref()
                .map_or((String::new(), String::new()), |(s, t)| {
                    (s.clone(), format_rfc3339_millis(*t))
                });
            vec![
                group.to_string(),
                id.to_string(),
                at_text.clone(),
                r.member.clone(),
                sid,
                seen,
                r.sessions_ended.to_string(),
            ]
        })
        .collect();
    let bytes = csv_out::write(
        &[
            "group",
            "revocation_id",
            "revoked_at",
            "member",
            "last_active_session",
            "last_active_at",
            "sessions_ended",
        ],
        &lines,
    )
    .map_err(|e| GatewayError::Internal(format!("writing the report: {e}")))?;
    Ok(csv_out::download(
        &format!("access-report-{group}-{id}.csv"),
        bytes,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_links_round_trip() {
        let href = super::report_href("contractors", "AbC_-1", 42);
        let q = href.split_once('?').map(|(_, q)| q);
        assert_eq!(
            super::report_params(q),
            Some(("contractors".into(), "AbC_-1".into(), 42))
        );
        assert_eq!(super::report_params(Some("group=g&id=a%20b&at=1")), None);
        assert_eq!(super::report_params(Some("group=g&id=a&at=x")), None);
    }
}
