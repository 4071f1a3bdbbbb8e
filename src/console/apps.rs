//! The Apps page: each app with its hosts, its policy, its live-token count (live
//! sessions that used it) and when its tokens were last revoked; "Revoke existing
//! tokens" leads to a confirmation.

use super::view::{self, Page, Tab, badge, confirm_href, esc, when};
use super::{Admin, Console};
use crate::config::{App, EmailPattern};
use crate::error::GatewayError;
use crate::revocation::Scope;
use crate::web::body::Body;
use http::{Response, StatusCode};

/// An email pattern as written in the config.
pub fn pattern_text(p: &EmailPattern) -> String {
    match p {
        EmailPattern::Any => "*".into(),
        EmailPattern::Domain(d) => format!("*@{d}"),
        EmailPattern::Exact(e) => e.clone(),
    }
}

fn policy(app: &App) -> String {
    let mut out: String = app
        .allow_emails
        .iter()
        .map(|p| badge("b-info", &pattern_text(p)))
        .collect();
    out.extend(
        app.allow_groups
            .iter()
            .map(|g| badge("b-grey", &format!("group {g}"))),
    );
    let flags = format!(
        r#"<div class="muted small">SameSite={:?}, binding cookie {}, tokens live {}</div>"#,
        app.same_site,
        if app.binding_cookie { "on" } else { "off" },
        view::duration_text(app.session_duration.as_secs())
    );
    out + &flags
}

impl Console {
    pub(super) async fn apps_page(&self, a: &Admin<'_>) -> Result<Response<Body>, GatewayError> {
        let live = self.directory.live(None).await;
        let rows: String =
            a.rt.config
                .apps
                .iter()
                .map(|app| {
                    let n = live
                        .sessions
                        .iter()
                        .filter(|s| s.apps.contains(&app.name))
                        .count();
                    let hosts: String = app
                        .hosts
                        .iter()
                        .map(|h| format!("<code>{}</code><br>", esc(h)))
                        .collect();
                    let revoked = self
                        .engine
                        .set()
                        .get(Scope::App, &app.name)
                        .map_or("&mdash;".to_string(), |t| when(t, a.now));
                    let revoke = view::link_button(
                        &confirm_href("app", &[&app.name]),
                        "Revoke existing tokens",
                        "small outline",
                    );
                    view::tr(
                        "",
                        &[
                            ("App", "", format!("<b>{}</b>", esc(&app.name))),
                            ("Hosts", "", hosts),
                            ("Policy", "", policy(app)),
                            ("Live tokens", "num", n.to_string()),
                            ("Last revoked", "hide-sm", revoked),
                            ("", "", revoke),
                        ],
                    )
                })
                .collect();
        let body = format!(
            r#"<h1>Apps</h1><p class="muted small">Live tokens: live sessions that hold a token for the app, across the cluster.</p>
<div class="table-wrap"><table id="apps" class="stack"><thead><tr><th>App</th><th>Hosts</th><th>Policy</th><th class="num">Live tokens</th><th class="hide-sm">Tokens last revoked</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>"#
        );
        Ok(view::respond(
            StatusCode::OK,
            &Page {
                title: "Apps",
                tab: Tab::Apps,
                body,
                script: None,
            },
            Some(&a.viewer()),
        ))
    }
}
