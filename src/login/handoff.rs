//! The app host's side of a sign-in: redeeming the one-time code at
//! `/.portcullis/callback` (mint the app token, set the app and binding cookies, land on
//! the page first asked for) and `/.portcullis/identity`.

use super::{Login, codes, pages};
use crate::auth::AuthFailure;
use crate::config::App;
use crate::error::{Challenge, GatewayError};
use crate::runtime::Runtime;
use crate::session::cookies::{self, GatewayCookies};
use crate::web::body::{self, Body};
use crate::web::cookie::{CookieSpec, SameSite, append_cookie, clear_cookie, set_cookie};
use crate::web::ctx::ReqCtx;
use crate::web::html::html;
use http::{HeaderMap, Response, StatusCode};
use std::time::Duration;

impl Login {
    /// Redeems a one-time code: mints the app token, sets the app and binding cookies,
    /// and sends the browser to the page it first asked for.
    pub(super) async fn callback(
        &self,
        rt: &Runtime,
        app: &App,
        ctx: &ReqCtx,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, GatewayError> {
        let restart = |why: &str| {
            // An unusable code: start the flow again from the app's front page.
            tracing::info!(app = %app.name, why, "hand-off code refused");
            Ok(body::redirect(
                StatusCode::FOUND,
                &ctx.login_url(&rt.config.auth_domain, &ctx.url("/")),
            ))
        };
        let Some(code) = crate::web::query::param(query, "code") else {
            return restart("no code");
        };
        let now = self.auth.now_us();
        let pending = match codes::open(self.auth.keys().sealer(), &code, now) {
            Ok(p) => p,
            Err(e) => return restart(&e.to_string()),
        };
        if pending.app != app.name {
            return restart("code was issued for another app");
        }
        let ttl = std::time::Duration::from_micros((pending.expires_us - now).max(0) as u64);
        match self
            .shared
            .claim_once(&format!("code:{}", pending.id), ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => return restart("the code was used already"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check that a hand-off code is unused");
                return Err(GatewayError::Unavailable(
                    "sign-in is unavailable: the cluster state cannot be reached".into(),
                ));
            }
        }
        if self
            .auth
            .revocations()
            .check(&pending.session, false)
            .is_some()
        {
            return restart("session was revoked");
        }
        self.accounts.catch_up().await;
        if self.directory_admits(&pending.session.email).is_err() {
            return restart("the directory refuses this account");
        }
        // The token carries the person's groups as they are now.
        let session = self.with_current_groups(&pending.session);
        let minted = self
            .auth
            .mint_app_token(rt, app, &session)
            .map_err(|e| GatewayError::Internal(format!("minting an app token: {e}")))?;
        let ua = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.sessions
            .add_app(&minted.claims.sid, &app.name, now, || {
                self.session_info(&pending.session, ctx, ua)
            });
        let lifetime = Duration::from_secs((minted.claims.exp - minted.claims.iat).max(0) as u64);
        let target = pending.return_path;
        let mut resp = if app.same_site == SameSite::Strict {
            html(StatusCode::OK, pages::hop(&target))
        } else {
            body::redirect(StatusCode::FOUND, &target)
        };
        set_app_cookies(
            resp.headers_mut(),
            app,
            &minted.token,
            minted.binding.as_deref(),
            lifetime,
        );
        Ok(resp)
    }

    pub(super) fn identity(
        &self,
        rt: &Runtime,
        app: &App,
        ctx: &ReqCtx,
        h: &HeaderMap,
    ) -> Result<Response<Body>, GatewayError> {
        let checked = GatewayCookies::parse(h)
            .map_err(AuthFailure::from)
            .and_then(|c| self.auth.check_app(rt, app, &c));
        match checked {
            Ok(v) => {
                let c = &v.claims;
                Ok(body::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "email": c.email, "sub": c.sub, "groups": c.groups, "sid": c.sid,
                        "app": c.aud, "iat": c.iat, "exp": c.exp, "iss": c.iss,
                    }),
                ))
            }
            Err(f) => Err(GatewayError::unauthenticated(
                f.code(),
                ctx.login_url(&rt.config.auth_domain, &ctx.url("/")),
                Challenge::Json,
            )),
        }
    }
}

/// The app token cookie and its binding cookie (or the binding cookie's removal).
fn set_app_cookies(
    h: &mut HeaderMap,
    app: &App,
    token: &str,
    binding: Option<&str>,
    lifetime: Duration,
) {
    append_cookie(
        h,
        &set_cookie(&CookieSpec {
            name: cookies::APP,
            value: token,
            max_age: Some(lifetime),
            http_only: app.http_only,
            same_site: app.same_site,
            path: "/",
        }),
    );
    match binding {
        Some(secret) => append_cookie(
            h,
            &set_cookie(&CookieSpec {
                name: cookies::BINDING,
                value: secret,
                max_age: Some(lifetime),
                http_only: true,
                same_site: app.same_site,
                path: "/",
            }),
        ),
        None => append_cookie(h, &clear_cookie(cookies::BINDING, app.same_site)),
    }
}
