//! The auth domain's own pages: the login form, the signed-in page, and the hop page
//! that finishes a hand-off for SameSite=Strict apps.

use crate::web::html::{esc, page};

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
