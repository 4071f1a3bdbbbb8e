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
    /// Show the email/password form (there are built-in users).
    pub password: bool,
    /// A sign-in button per identity provider.
    pub idps: &'a [IdpButton],
}

/// One identity provider on the sign-in page.
pub struct IdpButton {
    pub label: String,
    /// Where the button goes (`/oidc/<name>/start?return_to=...`).
    pub href: String,
    /// False: the IdP cannot be reached now; the button says so and is disabled.
    pub available: bool,
}

fn idp_buttons(idps: &[IdpButton]) -> String {
    idps.iter()
        .map(|b| {
            if b.available {
                format!(
                    r#"<a class="idp" href="{}">Sign in with {}</a>"#,
                    esc(&b.href),
                    esc(&b.label)
                )
            } else {
                format!(
                    r#"<button class="idp" type="button" disabled>{} is unavailable right now</button>"#,
                    esc(&b.label)
                )
            }
        })
        .collect()
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
    let form = if f.password {
        format!(
            r#"<form method="post" action="{action}">
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
        )
    } else {
        String::new()
    };
    let or = if f.password && !f.idps.is_empty() {
        r#"<p class="muted or">or</p>"#
    } else {
        ""
    };
    page(
        "Sign in",
        &format!(
            r#"<h1>Sign in</h1>{error}{form}{or}<div class="idps">{buttons}</div>{style}"#,
            buttons = idp_buttons(f.idps),
            style = IDP_STYLE,
        ),
    )
}

/// The IdP buttons look like the form's button (the page shell styles `button` only).
const IDP_STYLE: &str = "<style>.idp{display:block;box-sizing:border-box;margin-top:.8rem;width:100%;padding:.7rem;border-radius:6px;border:1px solid #2451b2;background:#fff;color:#2451b2;text-align:center;text-decoration:none;font-size:1rem}.idp[disabled]{border-color:#c5cad3;color:#5b6475;background:#f4f5f7;cursor:not-allowed}.or{text-align:center;margin:1rem 0 0}</style>";

/// A sign-in through an identity provider that went wrong: what happened, and a way
/// to start again.
pub fn idp_error(title: &str, message: &str, again: &str) -> String {
    page(
        title,
        &format!(
            r#"<h1>{}</h1><p class="err" role="alert">{}</p><p><a id="start-again" href="{}">Start again</a></p>"#,
            esc(title),
            esc(message),
            esc(again)
        ),
    )
}

/// Where the identity provider sends the browser back after its own logout.
pub fn idp_signed_out(login_url: &str) -> String {
    page(
        "Signed out",
        &format!(
            r#"<h1>Signed out</h1><p>Your session has ended on the server, for every application, and at your identity provider.</p><p><a href="{}">Sign in again</a></p>"#,
            esc(login_url)
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
