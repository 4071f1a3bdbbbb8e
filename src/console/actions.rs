//! Revoking from the console: the confirmation page (what will end, named and counted),
//! the revoke action, its result, and the emergency "revoke everyone" behind a typed
//! word. Every revocation goes through the engine (durable, enforced, audited, pushed)
//! with the actor `console:<admin email>`.

use super::form::Fields;
use super::view::{self, Page, Tab, count, esc, user_href, when};
use super::{Admin, Console, guard};
use crate::error::GatewayError;
use crate::revocation::Scope;
use crate::revocation::engine::{RevokeError, RevokeOutcome, RevokeRequest};
use crate::session::registry::SessionView;
use crate::web::body::{self, Body};
use crate::web::query;
use http::{Response, StatusCode};
use rand::Rng;

/// Targets one confirmation may name at most.
pub const MAX_TARGETS: usize = 200;
const WORDS: [&str; 8] = [
    "LOCKDOWN",
    "DRAWBRIDGE",
    "BARRICADE",
    "RAMPART",
    "SHUTTER",
    "BULWARK",
    "FLOODGATE",
    "TOCSIN",
];

/// The scope and targets a confirmation or an action names (trimmed, deduplicated).
fn scope_targets(scope: &str, raw: Vec<String>) -> Result<(Scope, Vec<String>), String> {
    let scope = match Scope::parse(scope) {
        Some(s @ (Scope::User | Scope::Session | Scope::App | Scope::Group)) => s,
        _ => return Err("Choose what to revoke: a user, a session, an app or a group.".into()),
    };
    let mut targets: Vec<String> = Vec::new();
    for t in raw {
        let t = t.trim();
        let t = if scope == Scope::User {
            t.to_ascii_lowercase()
        } else {
            t.to_string()
        };
        if !t.is_empty() && !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.is_empty() {
        return Err("Nothing selected: tick at least one user.".into());
    }
    if targets.len() > MAX_TARGETS {
        return Err(format!(
            "At most {MAX_TARGETS} at once; use the Bulk page for more."
        ));
    }
    Ok((scope, targets))
}

/// Every value of `name` in a query string.
fn all_params(q: Option<&str>, name: &str) -> Vec<String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// What a confirmation says will happen.
struct Plan {
    title: String,
    details: String,
    button: String,
    cancel: String,
    /// Extra hidden fields (e.g. the user a session belongs to, for the way back).
    extra: String,
}

fn live_of(live: &[SessionView], user: &str) -> usize {
    live.iter().filter(|s| s.info.user == user).count()
}

fn plan(
    a: &Admin<'_>,
    scope: Scope,
    targets: &[String],
    live: &[SessionView],
) -> Result<Plan, String> {
    let lockout = view::duration_text(a.rt.config.session.relogin_lockout.as_secs());
    Ok(match scope {
        Scope::User => {
            let n: usize = targets.iter().map(|t| live_of(live, t)).sum();
            let list: String = targets
                .iter()
                .map(|t| {
                    format!(
                        "<li><b>{}</b>: {} live sessions</li>",
                        esc(t),
                        live_of(live, t)
                    )
                })
                .collect();
            let who = if targets.len() == 1 {
                targets[0].clone()
            } else {
                format!("{} users", targets.len())
            };
            Plan {
                title: format!("Revoke all sessions of {who}?"),
                details: format!(
                    "<ul>{list}</ul><p>This ends <b>{}</b> (the global session and every app token) on every node at once, and refuses sign-in for {lockout}.</p>",
                    count(n as u64, "live session", "live sessions")
                ),
                button: format!("Revoke {} of {who}", count(n as u64, "session", "sessions")),
                cancel: if targets.len() == 1 {
                    user_href(&targets[0])
                } else {
                    "/admin/users".into()
                },
                extra: String::new(),
            }
        }
        Scope::Session => {
            let sid = &targets[0];
            let s = live.iter().find(|s| &s.info.sid == sid);
            let (user, details) = match s {
                Some(s) => (
                    s.info.user.clone(),
                    format!(
                        r#"<dl class="facts"><dt>User</dt><dd><b>{}</b></dd><dt>Session</dt><dd><code>{}</code></dd><dt>Node</dt><dd>{}</dd><dt>IP</dt><dd><code>{}</code></dd><dt>User agent</dt><dd class="ua">{}</dd><dt>Apps used</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd></dl><p>This session and every app token minted from it stop working at once, on every node. The user's other sessions stay signed in.</p>"#,
                        esc(&s.info.user),
                        esc(sid),
                        esc(&s.info.node),
                        esc(&s.info.ip),
                        esc(&s.info.user_agent),
                        view::chips(&s.apps),
                        when(s.info.created_us, a.now)
                    ),
                ),
                None => (
                    String::new(),
                    format!(
                        r#"<p class="notice warn">Session <code>{}</code> is not live anywhere in the cluster (it may have ended already). Revoking it again does no harm.</p>"#,
                        esc(sid)
                    ),
                ),
            };
            Plan {
                title: if user.is_empty() {
                    "Revoke this session?".into()
                } else {
                    format!("Revoke this session of {user}?")
                },
                details,
                button: "Revoke this session".into(),
                cancel: if user.is_empty() {
                    "/admin/users".into()
                } else {
                    user_href(&user)
                },
                extra: format!(
                    r#"<input type="hidden" name="user" value="{}">"#,
                    esc(&user)
                ),
            }
        }
        Scope::App => {
            let app = &targets[0];
            if a.rt.config.app_by_name(app).is_none() {
                return Err(format!("There is no app named {app:?}."));
            }
            let n = live.iter().filter(|s| s.apps.contains(app)).count();
            Plan {
                title: format!("Revoke the existing tokens of {app}?"),
                details: format!(
                    "<p><b>{}</b> {} a token for <b>{}</b>. Every token of this app issued before now stops working at once, on every node. Users whose global session is still valid get a new token silently on their next visit; to keep someone out, revoke the user.</p>",
                    count(n as u64, "live session", "live sessions"),
                    if n == 1 { "holds" } else { "hold" },
                    esc(app)
                ),
                button: format!(
                    "Revoke the tokens of {app} ({})",
                    count(n as u64, "session", "sessions")
                ),
                cancel: "/admin/apps".into(),
                extra: String::new(),
            }
        }
        Scope::Group => {
            let g = &targets[0];
            let affected: Vec<&SessionView> =
                live.iter().filter(|s| s.info.groups.contains(g)).collect();
            let mut users: Vec<&str> = affected.iter().map(|s| s.info.user.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            let list: String = users
                .iter()
                .map(|u| {
                    format!(
                        "<li>{}: {} live sessions</li>",
                        esc(u),
                        affected.iter().filter(|s| s.info.user == *u).count()
                    )
                })
                .collect();
            Plan {
                title: format!("Revoke group {g}?"),
                details: format!(
                    "<p>This affects <b>{}</b> with <b>{}</b>:</p><ul>{list}</ul><p>Every session and token carrying the group <b>{}</b>, issued before now, stops working at once, on every node. Afterwards you get an access report (CSV) for the auditor.</p>",
                    count(users.len() as u64, "member", "members"),
                    count(affected.len() as u64, "live session", "live sessions"),
                    esc(g)
                ),
                button: format!(
                    "Revoke group {g} ({})",
                    count(affected.len() as u64, "session", "sessions")
                ),
                cancel: "/admin/groups".into(),
                extra: String::new(),
            }
        }
        Scope::All => return Err("Use the Emergency page to revoke everyone.".into()),
        // Re-issuing a user's app tokens without one group is the SCIM trigger's job.
        Scope::Member => return Err("The console does not revoke memberships.".into()),
    })
}

fn revoke_error(e: RevokeError) -> Result<Response<Body>, GatewayError> {
    match e {
        RevokeError::Invalid(m) => Err(GatewayError::BadRequest(m)),
        RevokeError::Durability(m) => Err(GatewayError::Internal(m)),
    }
}

impl Console {
    pub(super) async fn confirm_page(
        &self,
        a: &Admin<'_>,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let scope = query::param(q, "scope").unwrap_or_default();
        if scope == "all" {
            return Ok(body::redirect(StatusCode::FOUND, "/admin/emergency"));
        }
        let bad = |m: String| {
            view::message(
                StatusCode::BAD_REQUEST,
                "Nothing to revoke",
                &m,
                Some(("/admin/users", "Back to users")),
                Some(&a.viewer()),
            )
        };
        let (scope, targets) = match scope_targets(&scope, all_params(q, "target")) {
            Ok(v) => v,
            Err(m) => return Ok(bad(m)),
        };
        let live = self.directory.live(None).await;
        let p = match plan(a, scope, &targets, &live.sessions) {
            Ok(p) => p,
            Err(m) => return Ok(bad(m)),
        };
        let token = self.form(
            a,
            "revoke",
            guard::binding(scope.as_str(), &targets),
            String::new(),
        );
        let hidden: String = targets
            .iter()
            .map(|t| format!(r#"<input type="hidden" name="target" value="{}">"#, esc(t)))
            .collect();
        let action = format!("/admin/revoke?{}", query::encode(&[("back", &a.here)]));
        let body = format!(
            r#"<div class="card danger"><h1>{title}</h1>{details}
<form method="post" action="{action}"><input type="hidden" name="csrf" value="{token}"><input type="hidden" name="scope" value="{scope}">{hidden}{extra}
<label for="reason">Reason (kept in the audit log)</label><input type="text" id="reason" name="reason" value="console" maxlength="128">
<div class="actions"><button class="btn danger" type="submit" id="confirm">{button}</button><a class="btn ghost" href="{cancel}">Cancel</a></div></form></div>"#,
            title = esc(&p.title),
            details = p.details,
            action = esc(&action),
            token = esc(&token),
            scope = scope.as_str(),
            extra = p.extra,
            button = esc(&p.button),
            cancel = esc(&p.cancel),
        );
        Ok(view::respond(
            StatusCode::OK,
            &Page {
                title: &p.title,
                tab: Tab::None,
                body,
                script: None,
            },
            Some(&a.viewer()),
        ))
    }

    pub(super) async fn revoke(
        &self,
        a: &Admin<'_>,
        f: Fields,
    ) -> Result<Response<Body>, GatewayError> {
        let t = match self.form_token(a, &f, "revoke") {
            Ok(t) => t,
            Err(r) => return Ok(*r),
        };
        let (scope, targets) =
            scope_targets(f.get("scope"), f.all("target")).map_err(GatewayError::BadRequest)?;
        if !crate::secrets::ct_eq(
            t.bind.as_bytes(),
            guard::binding(scope.as_str(), &targets).as_bytes(),
        ) {
            return Ok(view::message(
                StatusCode::FORBIDDEN,
                "Form refused",
                "The form was changed after it was made (other targets than the ones confirmed). Nothing was done.",
                Some(("/admin/users", "Back to users")),
                Some(&a.viewer()),
            ));
        }
        if let Err(r) = self.claim(a, &t).await {
            return Ok(*r);
        }
        let reason = f.get("reason").trim().to_string();
        let reqs = targets
            .iter()
            .map(|t| RevokeRequest {
                scope,
                target: t.clone(),
                reason: if reason.is_empty() {
                    "console".into()
                } else {
                    reason.clone()
                },
                actor: a.actor(),
                external_id: None,
            })
            .collect();
        let outcomes = match self.engine.revoke_batch(reqs, "revoke").await {
            Ok(o) => o,
            Err(e) => return revoke_error(e),
        };
        tracing::warn!(admin = %a.email, scope = scope.as_str(), targets = targets.len(), "console: revoked");
        if scope == Scope::Group
            && let Some(o) = outcomes.first()
        {
            return Ok(body::redirect(
                StatusCode::SEE_OTHER,
                &super::groups::report_href(&o.target, &o.id, o.not_before_us),
            ));
        }
        let back = match scope {
            Scope::User if targets.len() == 1 => {
                (user_href(&targets[0]), "Back to the user".to_string())
            }
            Scope::Session if !f.get("user").is_empty() => (
                user_href(f.get("user")),
                format!("Back to {}", f.get("user")),
            ),
            Scope::App => ("/admin/apps".into(), "Back to apps".into()),
            _ => ("/admin/users".into(), "Back to users".into()),
        };
        Ok(self.result_page(a, &outcomes, &back, ""))
    }

    /// What was revoked: each outcome with its id, time, sessions ended and peers.
    pub(super) fn result_page(
        &self,
        a: &Admin<'_>,
        outcomes: &[RevokeOutcome],
        back: &(String, String),
        note: &str,
    ) -> Response<Body> {
        let rows: String = outcomes
            .iter()
            .map(|o| format!(
                r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td>{} of {}</td><td><code>{}</code></td><td>{}</td></tr>"#,
                o.scope.as_str(), esc(&o.target), o.sessions_revoked, o.peers_acked, o.peers, esc(&o.id), when(o.not_before_us, a.now)))
            .collect();
        let ended: u64 = outcomes.iter().map(|o| o.sessions_revoked).sum();
        let body = format!(
            r#"<h1>Revoked</h1><p class="notice ok" id="result">Done: {n}, durable on this node and enforced; {ended} ended.</p>{note}
<div class="table-wrap"><table id="outcomes"><thead><tr><th>Scope</th><th>Target</th><th class="num">Sessions ended</th><th>Peers acknowledged</th><th>Revocation id</th><th>Not valid before</th></tr></thead><tbody>{rows}</tbody></table></div>
<div class="actions"><a class="btn ghost" href="{href}">{label}</a><a class="btn ghost" href="/admin/audit">See the audit log</a></div>"#,
            n = count(outcomes.len() as u64, "revocation", "revocations"),
            ended = count(ended, "session", "sessions"),
            href = esc(&back.0),
            label = esc(&back.1),
        );
        view::respond(
            StatusCode::OK,
            &Page {
                title: "Revoked",
                tab: Tab::None,
                body,
                script: None,
            },
            Some(&a.viewer()),
        )
    }

    pub(super) async fn emergency_page(
        &self,
        a: &Admin<'_>,
        error: Option<&str>,
    ) -> Response<Body> {
        let live = self.directory.live(None).await;
        let mut users: Vec<&str> = live.sessions.iter().map(|s| s.info.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let word = format!(
            "{}-{}",
            WORDS[rand::rng().random_range(0..WORDS.len())],
            rand::rng().random_range(1000..10000)
        );
        let token = self.form(a, "emergency", String::new(), word.clone());
        let error = error
            .map(|e| format!(r#"<p class="notice bad" role="alert">{}</p>"#, esc(e)))
            .unwrap_or_default();
        let body = format!(
            r#"<h1>Emergency: revoke everyone</h1>{error}
<div class="card danger"><p>This ends <b>every session and every token issued before now</b>, for every user and every app, on every node: <b>{n} live sessions of {u} users</b>. Everyone has to sign in again, <b>you included</b>. Use it when signing keys may have leaked or an intruder holds sessions.</p>
<form method="post" action="/admin/emergency" autocomplete="off"><input type="hidden" name="csrf" value="{token}">
<label for="reason">Reason (kept in the audit log)</label><input type="text" id="reason" name="reason" value="emergency" maxlength="128">
<label for="word">Type <span class="word" id="the-word">{word}</span> to confirm</label><input type="text" id="word" name="word" autocomplete="off" spellcheck="false" required>
<div class="actions"><button class="btn danger" type="submit" id="revoke-everyone">Revoke everyone</button><a class="btn ghost" href="/admin/users">Cancel</a></div></form></div>"#,
            n = live.sessions.len(),
            u = users.len(),
            token = esc(&token),
            word = esc(&word),
        );
        let status = if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        view::respond(
            status,
            &Page {
                title: "Emergency",
                tab: Tab::Emergency,
                body,
                script: None,
            },
            Some(&a.viewer()),
        )
    }

    pub(super) async fn emergency_submit(
        &self,
        a: &Admin<'_>,
        f: Fields,
    ) -> Result<Response<Body>, GatewayError> {
        let t = match self.acting_form(a, &f, "emergency").await {
            Ok(t) => t,
            Err(r) => return Ok(*r),
        };
        let typed = f.get("word").trim();
        if t.word.is_empty() || !typed.eq_ignore_ascii_case(&t.word) {
            return Ok(self
                .emergency_page(
                    a,
                    Some("The word you typed does not match. Nothing was revoked."),
                )
                .await);
        }
        let reason = match f.get("reason").trim() {
            "" => "emergency",
            r => r,
        };
        let out = match self
            .engine
            .revoke(RevokeRequest {
                scope: Scope::All,
                target: String::new(),
                reason: reason.into(),
                actor: a.actor(),
                external_id: None,
            })
            .await
        {
            Ok(o) => o,
            Err(e) => return revoke_error(e),
        };
        tracing::warn!(admin = %a.email, id = %out.id, "console: revoked everyone");
        let note = r#"<p class="notice warn">Your own session ended too: the next page asks you to sign in again.</p>"#;
        Ok(self.result_page(a, &[out], &("/admin/".into(), "Sign in again".into()), note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        let (s, t) =
            scope_targets("user", vec![" A@x.com".into(), "a@x.com".into(), "".into()]).unwrap();
        assert_eq!((s, t), (Scope::User, vec!["a@x.com".to_string()]));
        assert!(scope_targets("all", vec!["*".into()]).is_err());
        assert!(scope_targets("user", vec![]).is_err());
        assert!(scope_targets("nope", vec!["x".into()]).is_err());
        let many = (0..=MAX_TARGETS).map(|i| format!("u{i}@x.com")).collect();
        assert!(scope_targets("user", many).is_err());
        assert_eq!(
            all_params(Some("target=a&x=1&target=b%40c"), "target"),
            vec!["a", "b@c"]
        );
    }
}
