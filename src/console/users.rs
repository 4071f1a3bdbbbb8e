//! The Users page (search, status, groups, identity provider, last sign-in, live
//! sessions; revoke one user or several) and the User page (that user's sessions across
//! the cluster, each revocable on its own).

use super::data::{self, Standing, UserRow};
use super::view::{self, Page, Tab, badge, chips, confirm_href, esc, user_href, when};
use super::{Admin, Console};
use crate::cluster::Directory;
use crate::error::GatewayError;
use crate::session::registry::SessionView;
use crate::timefmt::month_start;
use crate::web::body::Body;
use crate::web::query;
use http::{Response, StatusCode};

/// Rows shown at most on one page; a search narrows the rest.
const MAX_ROWS: usize = 500;

const SELECT_ALL: &str = "const all=document.getElementById('select-all');\
if(all){all.addEventListener('change',function(){document.querySelectorAll('input[name=target]')\
.forEach(function(c){c.checked=all.checked;});});}";

/// The cluster-wide session lists a page is drawn from.
pub(super) struct Snapshot {
    pub live: Directory,
    pub month: Directory,
}

impl Snapshot {
    /// Peers that did not answer, as a warning (empty when all did).
    pub fn missing_notice(&self) -> String {
        let mut missing = self.live.missing.clone();
        missing.extend(self.month.missing.iter().cloned());
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return String::new();
        }
        format!(
            r#"<p class="notice warn">Peers that did not answer (their sessions are missing here): {}</p>"#,
            esc(&missing.join(", "))
        )
    }
}

impl Console {
    pub(super) async fn snapshot(&self, a: &Admin<'_>) -> Snapshot {
        let since = month_start(a.now);
        let (live, month) = tokio::join!(
            self.directory.live(None),
            self.directory.created_since(since)
        );
        Snapshot { live, month }
    }

    pub(super) fn user_rows(&self, a: &Admin<'_>, s: &Snapshot) -> Vec<UserRow> {
        data::users(&data::Inputs {
            config: &a.rt.config,
            month: &s.month.sessions,
            live: &s.live.sessions,
            set: self.engine.set(),
            status: self.user_status.as_deref(),
            now: a.now,
        })
    }

    pub(super) async fn users_page(
        &self,
        a: &Admin<'_>,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let search = query::param(q, "q").unwrap_or_default();
        let group = query::param(q, "group").unwrap_or_default();
        let snap = self.snapshot(a).await;
        let rows = self.user_rows(a, &snap);
        let found = data::search(&rows, &search, &group);
        let live_users = rows.iter().filter(|r| r.live_sessions > 0).count();
        let shown: String = found
            .iter()
            .take(MAX_ROWS)
            .map(|r| user_row(r, a.now))
            .collect();
        let more = if found.len() > MAX_ROWS {
            format!(
                r#"<p class="muted small">Showing {MAX_ROWS} of {} matches: search to narrow.</p>"#,
                found.len()
            )
        } else {
            String::new()
        };
        let group_field = if group.is_empty() {
            String::new()
        } else {
            format!(
                r#"<input type="hidden" name="group" value="{}"><span class="badge b-info">group: {}</span>"#,
                esc(&group),
                esc(&group)
            )
        };
        let table = if found.is_empty() {
            r#"<div class="card muted">No user matches.</div>"#.to_string()
        } else {
            format!(
                r#"<form method="get" action="/admin/confirm"><input type="hidden" name="scope" value="user">
<div class="bar"><button class="btn danger" type="submit" id="revoke-selected">Revoke selected users&hellip;</button><span class="muted small">Tick users, then revoke them at once (you confirm on the next page).</span></div>
<div class="table-wrap"><table id="users" class="stack"><thead><tr><th><input type="checkbox" id="select-all" aria-label="Select all"></th><th>User</th><th>Status</th><th>Groups</th><th class="hide-sm">Identity provider</th><th class="hide-sm">Last sign-in</th><th class="num">Live sessions</th><th></th></tr></thead>
<tbody>{shown}</tbody></table></div></form>{more}"#
            )
        };
        let body = format!(
            r#"<h1>Users</h1>
<form class="bar" method="get" action="/admin/users" role="search"><input class="grow" type="search" name="q" value="{q}" placeholder="Search by email or group" aria-label="Search by email or group">{group_field}<button class="btn" type="submit">Search</button></form>
<p class="muted small">{n} known (configured, provisioned, or signed in this month); {live_users} with live sessions.</p>
{missing}{table}"#,
            q = esc(&search),
            n = view::count(rows.len() as u64, "user", "users"),
            missing = snap.missing_notice(),
        );
        Ok(view::respond(
            StatusCode::OK,
            &Page {
                title: "Users",
                tab: Tab::Users,
                body,
                script: Some(SELECT_ALL),
            },
            Some(&a.viewer()),
        ))
    }

    pub(super) async fn user_page(
        &self,
        a: &Admin<'_>,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let email = query::param(q, "email")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if email.is_empty() {
            return Err(GatewayError::BadRequest("no email".into()));
        }
        let snap = self.snapshot(a).await;
        let rows = self.user_rows(a, &snap);
        let row = rows
            .iter()
            .find(|r| r.email == email)
            .cloned()
            .unwrap_or_else(|| UserRow {
                email: email.clone(),
                groups: vec![],
                idp: "—".into(),
                standing: Standing::Active,
                locked_until: data::locked_until(&a.rt.config, self.engine.set(), &email, a.now),
                last_sign_in: None,
                live_sessions: 0,
            });
        let sessions: Vec<&SessionView> = snap
            .live
            .sessions
            .iter()
            .filter(|s| s.info.user == email)
            .collect();
        let body = user_body(&row, &sessions, a.now, &snap.missing_notice());
        Ok(view::respond(
            StatusCode::OK,
            &Page {
                title: &email,
                tab: Tab::Users,
                body,
                script: None,
            },
            Some(&a.viewer()),
        ))
    }
}

/// The status badges of a user.
pub(super) fn status_badges(r: &UserRow, now: i64) -> String {
    let mut out = match &r.standing {
        Standing::Active => badge("b-ok", "active"),
        Standing::Disabled => badge("b-grey", "disabled"),
        Standing::Inactive(why) => badge("b-bad", &format!("inactive: {why}")),
    };
    if let Some(until) = r.locked_until {
        let secs = ((until - now) / 1_000_000).max(1) as u64;
        let iso = crate::timefmt::format_rfc3339_millis(until);
        out.push_str(&badge(
            "b-warn",
            &format!(
                "locked out until {} UTC ({} more)",
                iso.get(11..19).unwrap_or(&iso),
                view::duration_text(secs)
            ),
        ));
    }
    out
}

fn user_row(r: &UserRow, now: i64) -> String {
    let last = r
        .last_sign_in
        .map_or("&mdash;".to_string(), |t| when(t, now));
    let e = esc(&r.email);
    let revoke = view::link_button(
        &confirm_href("user", &[&r.email]),
        "Revoke all sessions",
        "small outline",
    );
    view::tr(
        "",
        &[
            (
                "Select",
                "",
                format!(
                    r#"<input type="checkbox" name="target" value="{e}" aria-label="Select {e}">"#
                ),
            ),
            (
                "User",
                "wrap",
                format!(r#"<a href="{}">{e}</a>"#, esc(&user_href(&r.email))),
            ),
            ("Status", "", status_badges(r, now)),
            ("Groups", "", chips(&r.groups)),
            ("IdP", "hide-sm", esc(&r.idp)),
            ("Last sign-in", "hide-sm", last),
            ("Live sessions", "num", r.live_sessions.to_string()),
            ("", "", revoke),
        ],
    )
}

fn user_body(r: &UserRow, sessions: &[&SessionView], now: i64, missing: &str) -> String {
    let last = r
        .last_sign_in
        .map_or("&mdash;".to_string(), |t| when(t, now));
    let revoke_all = if sessions.is_empty() && r.locked_until.is_none() {
        String::new()
    } else {
        view::link_button(
            &confirm_href("user", &[&r.email]),
            &format!("Revoke all sessions ({})", sessions.len()),
            "danger",
        )
    };
    let table = if sessions.is_empty() {
        r#"<div class="card muted">No live session anywhere in the cluster.</div>"#.to_string()
    } else {
        let rows: String = sessions.iter().map(|s| session_row(s, now)).collect();
        format!(
            r#"<div class="table-wrap"><table id="sessions" class="stack"><thead><tr><th>Session</th><th>Node</th><th>Apps used</th><th>IP</th><th>User agent</th><th>Created</th><th>Last seen</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>"#
        )
    };
    format!(
        r#"<p class="small"><a href="/admin/users">&larr; All users</a></p>
<h1>{email}</h1>
<div class="card"><dl class="facts">
<dt>Status</dt><dd>{status}</dd>
<dt>Groups</dt><dd>{groups}</dd>
<dt>Identity provider</dt><dd>{idp}</dd>
<dt>Last sign-in</dt><dd>{last}</dd>
<dt>Live sessions</dt><dd>{n}</dd>
</dl><div class="actions">{revoke_all}</div></div>
<h2>Sessions across the cluster</h2>{missing}{table}"#,
        email = esc(&r.email),
        status = status_badges(r, now),
        groups = chips(&r.groups),
        idp = esc(&r.idp),
        n = sessions.len(),
    )
}

fn session_row(s: &SessionView, now: i64) -> String {
    let i = &s.info;
    let revoke = view::link_button(
        &confirm_href("session", &[&i.sid]),
        "Revoke this session",
        "small outline",
    );
    view::tr(
        &format!(r#" data-sid="{}""#, esc(&i.sid)),
        &[
            ("Session", "", format!("<code>{}</code>", esc(&i.sid))),
            ("Node", "node", esc(&i.node)),
            ("Apps used", "", chips(&s.apps)),
            ("IP", "nowrap", format!("<code>{}</code>", esc(&i.ip))),
            ("User agent", "ua", esc(&i.user_agent)),
            ("Created", "", when(i.created_us, now)),
            ("Last seen", "", when(s.last_seen_us, now)),
            ("", "", revoke),
        ],
    )
}
