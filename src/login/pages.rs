//! The HTML the gateway itself shows: login form, signed-in and signed-out pages, the
//! 403 page and the hop page that finishes a hand-off for SameSite=Strict apps.

use crate::proxy::body::esc;

fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}}
main{{max-width:26rem;margin:8vh auto;background:#fff;padding:2rem 2.2rem;border-radius:10px;box-shadow:0 2px 12px rgba(0,0,0,.08)}}
h1{{font-size:1.35rem;margin:0 0 1.2rem}} label{{display:block;margin:.8rem 0 .3rem;font-weight:600}}
input{{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #c5cad3;border-radius:6px;font-size:1rem}}
button{{margin-top:1.2rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#2451b2;color:#fff;font-size:1rem;cursor:pointer}}
.err{{background:#fdecec;color:#8a1c1c;padding:.6rem .8rem;border-radius:6px}} .muted{{color:#5b6475;font-size:.9rem}}
</style></head><body><main>{body}</main></body></html>"#,
        title = esc(title),
    )
}

pub struct LoginForm<'a> {
    pub action: &'a str,
    pub csrf: &'a str,
    pub return_to: &'a str,
    pub email: &'a str,
    pub error: Option<&'a str>,
    pub demo_hint: bool,
}

pub fn login(f: &LoginForm<'_>) -> String {
    let error = f
        .error
        .map(|e| format!(r#"<p class="err" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let hint = if f.demo_hint {
        r#"<p class="muted">Demo user configured: demo@example.com / portcullis-demo</p>"#
    } else {
        ""
    };
    page(
        "Sign in",
        &format!(
            r#"<h1>Sign in</h1>{error}
<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="return_to" value="{return_to}">
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" value="{email}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>{hint}"#,
            action = esc(f.action),
            csrf = esc(f.csrf),
            return_to = esc(f.return_to),
            email = esc(f.email),
        ),
    )
}

pub fn signed_in(email: &str, apps: &[(String, String)]) -> String {
    let list: String = apps
        .iter()
        .map(|(name, url)| format!(r#"<li><a href="{}">{}</a></li>"#, esc(url), esc(name)))
        .collect();
    page(
        "Signed in",
        &format!(
            r#"<h1>Signed in</h1><p>You are signed in as <b>{}</b>.</p><ul>{list}</ul>
<form method="post" action="/logout"><button type="submit">Sign out</button></form>"#,
            esc(email)
        ),
    )
}

pub fn signed_out(login_url: &str) -> String {
    page(
        "Signed out",
        &format!(
            r#"<h1>Signed out</h1><p>Your session has ended on the server, for every application.</p><p><a href="{}">Sign in again</a></p>"#,
            esc(login_url)
        ),
    )
}

pub fn forbidden(email: &str, app: &str) -> String {
    page(
        "Access denied",
        &format!(
            r#"<h1>Access denied</h1><p><b>{}</b> is signed in but is not allowed to use <b>{}</b>.</p><p class="muted">Ask an administrator to add you to this application's policy.</p>"#,
            esc(email),
            esc(app)
        ),
    )
}

pub fn error(title: &str, message: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(message)),
    )
}

/// A 200 page on the app host that moves on to `target` by itself. Browsers do not send
/// SameSite=Strict cookies on a redirect chain another site started; a navigation this
/// page starts is same-site, so the fresh app cookie goes along.
pub fn hop(target: &str) -> String {
    let t = esc(target);
    let js = serde_json::to_string(target).unwrap_or_else(|_| "\"/\"".into());
    page(
        "Signing in",
        &format!(
            r#"<meta http-equiv="refresh" content="0;url={t}"><p>Signing you in&hellip; <a href="{t}">Continue</a></p>
<script>location.replace({js});</script>"#
        ),
    )
}
