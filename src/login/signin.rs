//! The auth domain's pages: home, the sign-in form and its submission (CSRF, throttle,
//! relogin lockout, password check, new global session), and the authorize step that
//! turns a valid global session into a one-time code for an app host.

use super::codes::{self, Pending};
use super::{Login, pages, users};
use crate::auth::{AuthFailure, Identity};
use crate::cluster::{ClusterError, blocked_for};
use crate::config::{App, User};
use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::secrets::ct_eq;
use crate::session::cookies::{self, GatewayCookies};
use crate::session::token::{Claims, TokenError};
use crate::web::body::{self, Body};
use crate::web::cookie::{CookieSpec, SameSite, append_cookie, clear_cookie, set_cookie};
use crate::web::ctx::ReqCtx;
use crate::web::html::{self, html};
use crate::web::query;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const MAX_FORM: usize = 16 * 1024;

/// A return target after login: only an absolute http(s) URL on a configured app host.
/// Returns the app, its host and the path and query to land on.
pub fn validate_return_to<'a>(
    rt: &'a Runtime,
    return_to: &str,
) -> Option<(&'a Arc<App>, String, String)> {
    let url = url::Url::parse(return_to).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let app = rt.app_for_host(&host)?;
    let mut path = url.path().to_string();
    if !path.starts_with('/') || path.starts_with("//") {
        path = "/".into();
    }
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Some((app, host, path))
}

/// Who a new global session is for, and the IdP session it comes from (None: a
/// built-in user).
pub(super) struct NewSession<'a> {
    pub email: &'a str,
    pub groups: &'a [String],
    pub idp: Option<IdpSession<'a>>,
}

/// The identity provider's side of a sign-in, as the session registry records it.
pub(super) struct IdpSession<'a> {
    pub idp: &'a str,
    pub sub: &'a str,
    pub sid: Option<&'a str>,
}

/// The sign-in form's fields.
struct Form {
    return_to: String,
    email: String,
    password: String,
    csrf: String,
}

impl Form {
    fn parse(bytes: &[u8]) -> Form {
        let mut form: HashMap<String, String> =
            form_urlencoded::parse(bytes).into_owned().collect();
        let mut take = |k: &str| form.remove(k).unwrap_or_default();
        Form {
            return_to: take("return_to"),
            email: take("email").trim().to_ascii_lowercase(),
            password: take("password"),
            csrf: take("csrf"),
        }
    }
}

/// A refusal shown on the form again, with a Retry-After when there is a wait.
fn with_retry_after(mut r: Response<Body>, secs: u64) -> Response<Body> {
    if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

impl Login {
    pub(super) fn home(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        h: &HeaderMap,
    ) -> Result<Response<Body>, GatewayError> {
        let Ok(v) = self.session_of(rt, h) else {
            return Ok(body::redirect(StatusCode::FOUND, "/login"));
        };
        let apps: Vec<(String, String)> = rt
            .config
            .apps
            .iter()
            .filter(|a| a.allows(&v.claims.email, &v.claims.groups))
            .filter_map(|a| {
                a.hosts
                    .first()
                    .map(|h| (a.name.clone(), format!("{}/", ctx.origin_for(h))))
            })
            .collect();
        Ok(html(
            StatusCode::OK,
            pages::signed_in(&v.claims.email, &apps),
        ))
    }

    pub(super) fn login_form(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        h: &HeaderMap,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let return_to = query::param(q, "return_to").unwrap_or_default();
        if !return_to.is_empty() && self.session_of(rt, h).is_ok() {
            return self.authorize(rt, ctx, h, &return_to);
        }
        if let Some(only) = self.only_idp(rt, &return_to) {
            return Ok(only);
        }
        let notice = match query::param(q, "why").as_deref() {
            Some("revoked") => Some(
                "Your session was ended by an administrator (access revoked). Please sign in again.",
            ),
            Some("expired") => Some("Your session has expired. Please sign in again."),
            _ => None,
        };
        Ok(self.render_form(rt, StatusCode::OK, &return_to, "", notice))
    }

    pub(super) async fn login_submit(
        &self,
        rt: &Arc<Runtime>,
        ctx: &ReqCtx,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let (parts, incoming) = req.into_parts();
        if let Some(refused) = cross_site_post(rt, ctx, &parts.headers) {
            return Ok(refused);
        }
        let bytes = Limited::new(incoming, MAX_FORM)
            .collect()
            .await
            .map_err(|_| GatewayError::BodyTooLarge(MAX_FORM as u64))?
            .to_bytes();
        let form = Form::parse(&bytes);
        let form_again = |status, error: &str| {
            self.render_form(rt, status, &form.return_to, &form.email, Some(error))
        };
        let cookie_csrf = GatewayCookies::parse(&parts.headers)
            .ok()
            .and_then(|c| c.csrf);
        if !cookie_csrf.is_some_and(|c| !c.is_empty() && ct_eq(c.as_bytes(), form.csrf.as_bytes()))
        {
            return Ok(form_again(
                StatusCode::FORBIDDEN,
                "This sign-in form expired or was not sent by this site. Please try again.",
            ));
        }
        if let Some(refused) = self.throttled(rt, ctx, &form, &form_again).await? {
            return Ok(refused);
        }
        if let Err(r) = self.may_sign_in(rt, &form.email) {
            let resp = form_again(r.status, &r.message);
            return Ok(match r.retry_after {
                Some(secs) => with_retry_after(resp, secs),
                None => resp,
            });
        }
        let Some(user) = self.check_password(rt, ctx, &form).await else {
            return Ok(form_again(
                StatusCode::UNAUTHORIZED,
                "Wrong email or password.",
            ));
        };
        let ua = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let who = NewSession {
            email: &user.email,
            groups: &user.groups,
            idp: None,
        };
        let (mut resp, _) = self.start_session(rt, ctx, &who, ua, &form.return_to)?;
        // A session of a built-in user has no IdP session to end at logout.
        append_cookie(
            resp.headers_mut(),
            &clear_cookie(super::oidc::LINK_COOKIE, SameSite::Lax),
        );
        Ok(resp)
    }

    /// Too many recent failures for this user or this address (counted over the
    /// cluster): the form again with the wait.
    async fn throttled(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        form: &Form,
        form_again: &(dyn Fn(StatusCode, &str) -> Response<Body> + Sync),
    ) -> Result<Option<Response<Body>>, GatewayError> {
        let now = self.auth.now_us();
        let cfg = &rt.config.login;
        let window = cfg.failure_window;
        let (user, ip) = (user_key(&form.email), ip_key(ctx));
        let (by_user, by_ip) = tokio::join!(
            self.shared.failures(&user, now, window),
            self.shared.failures(&ip, now, window),
        );
        let (by_user, by_ip) = (by_user.map_err(unavailable)?, by_ip.map_err(unavailable)?);
        let w = window.as_micros() as i64;
        let Some(wait) = blocked_for(&by_user, cfg.max_failures_per_user, now, w)
            .or_else(|| blocked_for(&by_ip, cfg.max_failures_per_ip, now, w))
        else {
            return Ok(None);
        };
        self.metrics.login_throttled.fetch_add(1, Ordering::Relaxed);
        let msg = format!("Too many failed sign-ins. Try again in {wait} seconds.");
        Ok(Some(with_retry_after(
            form_again(StatusCode::TOO_MANY_REQUESTS, &msg),
            wait,
        )))
    }

    /// The built-in user whose password this is; counts a failure otherwise.
    async fn check_password(&self, rt: &Runtime, ctx: &ReqCtx, form: &Form) -> Option<User> {
        let user = rt.users.get(&form.email).filter(|u| !u.disabled).cloned();
        let ok = users::verify(
            form.password.clone(),
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await;
        let window = rt.config.login.failure_window;
        if let Some(user) = user.filter(|_| ok) {
            if let Err(e) = self.shared.clear_failures(&user_key(&form.email)).await {
                tracing::warn!(error = %e, "cannot clear the sign-in failures");
            }
            return Some(user);
        }
        let now = self.auth.now_us();
        for key in [user_key(&form.email), ip_key(ctx)] {
            if let Err(e) = self.shared.record_failure(&key, now, window).await {
                tracing::warn!(error = %e, "cannot record a failed sign-in");
            }
        }
        self.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
        tracing::info!(email = %form.email, ip = %ctx.peer.ip(), "sign-in failed");
        None
    }

    /// Mints and records the global session, then sends the browser on.
    pub(super) fn start_session(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        who: &NewSession<'_>,
        user_agent: &str,
        return_to: &str,
    ) -> Result<(Response<Body>, Claims), GatewayError> {
        let identity = Identity {
            email: who.email,
            groups: who.groups,
        };
        let (token, claims) = self
            .auth
            .mint_session(rt, &identity)
            .map_err(|e| GatewayError::Internal(format!("minting a session: {e}")))?;
        self.record_session(&claims, ctx, user_agent, who.idp.as_ref());
        self.metrics.login_success.fetch_add(1, Ordering::Relaxed);
        tracing::info!(email = %claims.email, sid = %claims.sid, ip = %ctx.peer.ip(), "signed in");
        let next = if validate_return_to(rt, return_to).is_some() {
            format!("/authorize?{}", query::encode(&[("return_to", return_to)]))
        } else {
            "/".to_string()
        };
        let mut resp = body::redirect(StatusCode::SEE_OTHER, &next);
        let h = resp.headers_mut();
        append_cookie(
            h,
            &set_cookie(&CookieSpec {
                name: cookies::SESSION,
                value: &token,
                max_age: Some(rt.config.session.global_duration),
                http_only: true,
                same_site: SameSite::Lax,
                path: "/",
            }),
        );
        append_cookie(h, &clear_cookie(cookies::CSRF, SameSite::Strict));
        Ok((resp, claims))
    }

    fn record_session(
        &self,
        claims: &Claims,
        ctx: &ReqCtx,
        user_agent: &str,
        idp: Option<&IdpSession<'_>>,
    ) {
        let mut info = self.session_info(claims, ctx, user_agent);
        if let Some(i) = idp {
            info.idp = i.idp.to_string();
            info.idp_sub = i.sub.to_string();
            info.idp_sid = i.sid.unwrap_or_default().to_string();
        }
        self.sessions.create(info);
    }

    /// Turns a valid global session into a one-time code for the app host, without
    /// showing anything; without a session, shows the login form.
    pub(super) fn authorize(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        h: &HeaderMap,
        return_to: &str,
    ) -> Result<Response<Body>, GatewayError> {
        let Some((app, host, path)) = validate_return_to(rt, return_to) else {
            return Ok(html(
                StatusCode::BAD_REQUEST,
                html::error(
                    "Unknown destination",
                    "The page you were sent back to is not an application this gateway protects.",
                ),
            ));
        };
        let v = match self.session_of(rt, h) {
            Ok(v) => v,
            Err(failure) => return Ok(back_to_form(return_to, failure)),
        };
        if !app.allows(&v.claims.email, &v.claims.groups) {
            return Err(GatewayError::Forbidden {
                email: v.claims.email.to_string(),
                app: app.name.clone(),
            });
        }
        let now = self.auth.now_us();
        let grant = Pending {
            id: crate::secrets::random_b64(16),
            session: v.claims.to_claims(),
            app: app.name.clone(),
            return_path: path,
            expires_us: now + rt.config.session.code_ttl.as_micros() as i64,
        };
        let code = codes::issue(self.auth.keys().sealer(), &grant)
            .ok_or_else(|| GatewayError::Internal("cannot seal a hand-off code".into()))?;
        let location = format!("{}/.portcullis/callback?code={code}", ctx.origin_for(&host));
        Ok(body::redirect(StatusCode::FOUND, &location))
    }
}

/// The login form again, saying why when a session existed but no longer counts.
fn back_to_form(return_to: &str, failure: AuthFailure) -> Response<Body> {
    let why = match failure {
        AuthFailure::Revoked(_) => Some("revoked"),
        AuthFailure::Token(TokenError::Expired) => Some("expired"),
        _ => None,
    };
    let mut pairs = vec![("return_to", return_to)];
    if let Some(w) = why {
        pairs.push(("why", w));
    }
    body::redirect(
        StatusCode::FOUND,
        &format!("/login?{}", query::encode(&pairs)),
    )
}

/// A cross-site form post is refused outright (the CSRF cookie check also catches it;
/// this gives a clearer answer).
fn cross_site_post(rt: &Runtime, ctx: &ReqCtx, h: &HeaderMap) -> Option<Response<Body>> {
    let origin = h.get(header::ORIGIN).and_then(|o| o.to_str().ok())?;
    if origin == "null" || origin == ctx.origin_for(&rt.config.auth_domain) {
        return None;
    }
    Some(html(
        StatusCode::FORBIDDEN,
        html::error(
            "Sign-in refused",
            "The sign-in form was posted from another site.",
        ),
    ))
}

fn unavailable(e: ClusterError) -> GatewayError {
    tracing::warn!(error = %e, "cannot read the sign-in throttle");
    GatewayError::Unavailable("sign-in is unavailable: the cluster state cannot be reached".into())
}

fn user_key(email: &str) -> String {
    format!("user:{email}")
}

fn ip_key(ctx: &ReqCtx) -> String {
    format!("ip:{}", ctx.peer.ip())
}

impl Login {
    /// The sign-in page with a fresh CSRF token (cookie and hidden field): the
    /// email/password form when there are built-in users (or no IdP at all), and a
    /// button per identity provider.
    pub(super) fn render_form(
        &self,
        rt: &Runtime,
        status: StatusCode,
        return_to: &str,
        email: &str,
        error: Option<&str>,
    ) -> Response<Body> {
        let csrf = crate::secrets::random_b64(24);
        let idps = self.idp_buttons(return_to);
        let mut resp = html(
            status,
            pages::login(&pages::LoginForm {
                action: "/login",
                csrf: &csrf,
                return_to,
                email,
                error,
                demo_hint: rt.config.has_demo_user(),
                password: !rt.users.is_empty() || idps.is_empty(),
                idps: &idps,
            }),
        );
        append_cookie(
            resp.headers_mut(),
            &set_cookie(&CookieSpec {
                name: cookies::CSRF,
                value: &csrf,
                max_age: Some(Duration::from_secs(3600)),
                http_only: true,
                same_site: SameSite::Strict,
                path: "/",
            }),
        );
        resp
    }
}
