//! The auth domain's pages: home, the sign-in form and its submission (CSRF, throttle,
//! relogin lockout, password check, new global session), and the authorize step that
//! turns a valid global session into a one-time code for an app host.

use super::codes::{self, Pending};
use super::{Login, accounts, pages, users};
use crate::auth::{AuthFailure, Identity};
use crate::clock::Micros;
use crate::cluster::{ClusterError, blocked_for};
use crate::config::{App, User};
use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::secrets::ct_eq;
use crate::session::authn;
use crate::session::cookies::{self, GatewayCookies};
use crate::session::token::{Claims, TokenError};
use crate::web::body::{self, Body};
use crate::web::body_deadline::{self, BodyDeadline};
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
/// The Retry-After of a sign-in refused because too many wait for a password check.
const BUSY_RETRY_AFTER_SECS: u64 = 2;

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

/// A return target on the auth domain itself: the admin console (`/admin` and paths
/// under `/admin/`), given as a path or as an absolute URL on the auth domain. Returns
/// the path and query to land on (always a local path, so never an open redirect).
pub fn admin_return_path(auth_domain: &str, return_to: &str) -> Option<String> {
    let base = url::Url::parse(&format!("https://{auth_domain}/")).ok()?;
    let url = base.join(return_to).ok()?;
    let same_host = url
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(auth_domain));
    let path = url.path();
    let console = path == "/admin" || path.starts_with("/admin/");
    if !same_host
        || !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || !console
    {
        return None;
    }
    Some(match url.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    })
}

/// Who a new global session is for, and the IdP session it comes from (None: a
/// built-in user).
pub(super) struct NewSession<'a> {
    pub email: &'a str,
    pub groups: &'a [String],
    pub idp: Option<IdpSession<'a>>,
    /// When the user proved who they are (the password check, the IdP's `auth_time`);
    /// None: unknown. Kept in the sign-in marker (`session::authn`).
    pub authenticated_us: Option<Micros>,
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

/// A sign-in refusal shown on the form again.
fn refused_form(
    form_again: &dyn Fn(StatusCode, &str) -> Response<Body>,
    r: super::Refusal,
) -> Response<Body> {
    let resp = form_again(r.status, &r.message);
    match r.retry_after {
        Some(secs) => with_retry_after(resp, secs),
        None => resp,
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
        let groups = self.current_groups(&v.claims.email, &v.claims.groups);
        let apps: Vec<(String, String)> = rt
            .config
            .apps
            .iter()
            .filter(|a| a.allows(&v.claims.email, &groups))
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

    pub(super) async fn login_form(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        h: &HeaderMap,
        q: Option<&str>,
    ) -> Result<Response<Body>, GatewayError> {
        let return_to = query::param(q, "return_to").unwrap_or_default();
        // `reauth=1` asks for the form even while a global session is valid (the admin
        // console wants a recent sign-in before an action).
        let reauth = query::param(q, "reauth").as_deref() == Some("1");
        if !return_to.is_empty() && !reauth && self.session_of(rt, h).is_ok() {
            if let Some(path) = admin_return_path(&rt.config.auth_domain, &return_to) {
                return Ok(body::redirect(StatusCode::FOUND, &path));
            }
            return self.authorize(rt, ctx, h, &return_to).await;
        }
        if let Some(only) = self.only_idp(rt, &return_to, reauth) {
            return Ok(only);
        }
        let notice = match query::param(q, "why").as_deref() {
            _ if reauth => Some("Please sign in again to confirm it is you."),
            Some("revoked") => Some(
                "Your session was ended by an administrator (access revoked). Please sign in again.",
            ),
            Some("expired") => Some("Your session has expired. Please sign in again."),
            _ => None,
        };
        Ok(self.render_form(rt, StatusCode::OK, (&return_to, reauth), "", notice))
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
        let limits = &rt.config.limits;
        let incoming = BodyDeadline::new(incoming, limits.body_timeout, limits.body_min_rate);
        let bytes = Limited::new(incoming, MAX_FORM)
            .collect()
            .await
            .map_err(|e| self.form_body_failure(e))?
            .to_bytes();
        let form = Form::parse(&bytes);
        let form_again = |status, error: &str| {
            self.render_form(
                rt,
                status,
                (&form.return_to, false),
                &form.email,
                Some(error),
            )
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
        // The lockout is said before the password step; what the directory says about
        // the account only to someone who knows the password.
        if let Err(r) = self.relogin_lockout(rt, &form.email) {
            return Ok(refused_form(&form_again, r));
        }
        let user = match self.check_password(rt, ctx, &form).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                return Ok(form_again(
                    StatusCode::UNAUTHORIZED,
                    "Wrong email or password.",
                ));
            }
            Err(users::Busy) => {
                let msg = "Too many sign-ins at once. Please try again in a few seconds.";
                return Ok(with_retry_after(
                    form_again(StatusCode::SERVICE_UNAVAILABLE, msg),
                    BUSY_RETRY_AFTER_SECS,
                ));
            }
        };
        if let Err(r) = self.may_sign_in(rt, &user.email) {
            return Ok(refused_form(&form_again, r));
        }
        let ua = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let who = NewSession {
            email: &user.email,
            groups: &user.groups,
            idp: None,
            authenticated_us: Some(self.auth.now_us()),
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

    /// The sign-in form's body failed: too slow (408) or too large (413).
    fn form_body_failure(&self, e: crate::web::body::BoxError) -> GatewayError {
        if body_deadline::is_timeout(&e) {
            crate::metrics::inc(&self.metrics.limits.body_timeouts);
            GatewayError::BodyTimeout
        } else {
            GatewayError::BodyTooLarge(MAX_FORM as u64)
        }
    }

    /// The built-in user whose password this is; counts a failure otherwise. `Busy`
    /// (nothing counted) when too many sign-ins wait for a password check.
    async fn check_password(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        form: &Form,
    ) -> Result<Option<User>, users::Busy> {
        let user = rt.users.get(&form.email).filter(|u| !u.disabled).cloned();
        let ok = self
            .password_checks(rt)
            .verify(
                form.password.clone(),
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await?;
        let window = rt.config.login.failure_window;
        if let Some(user) = user.filter(|_| ok) {
            if let Err(e) = self.shared.clear_failures(&user_key(&form.email)).await {
                tracing::warn!(error = %e, "cannot clear the sign-in failures");
            }
            return Ok(Some(user));
        }
        let now = self.auth.now_us();
        for key in [user_key(&form.email), ip_key(ctx)] {
            if let Err(e) = self.shared.record_failure(&key, now, window).await {
                tracing::warn!(error = %e, "cannot record a failed sign-in");
            }
        }
        self.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
        tracing::info!(email = %form.email, ip = %ctx.peer.ip(), "sign-in failed");
        Ok(None)
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
        // Where the directory (SCIM) knows the person, its groups are the ones the
        // session carries, whichever way they signed in.
        let groups = self.current_groups(who.email, who.groups);
        let identity = Identity {
            email: who.email,
            groups: &groups,
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
            admin_return_path(&rt.config.auth_domain, return_to).unwrap_or_else(|| "/".to_string())
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
        let life = rt.config.session.global_duration;
        let marker = who
            .authenticated_us
            .and_then(|at| authn::set_marker(self.auth.keys().sealer(), &claims.sid, at, life));
        if let Some(m) = marker {
            append_cookie(h, &m);
        }
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
    pub(super) async fn authorize(
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
        // What the directory says now, including changes made at another node.
        self.accounts.catch_up().await;
        if let Err(refusal) = self.directory_admits(&v.claims.email) {
            return Ok(accounts::refused_page(&refusal));
        }
        // The policy sees the person's groups as they are now (a role downgrade takes
        // effect at once), not the snapshot the global session carries.
        let groups = self.current_groups(&v.claims.email, &v.claims.groups);
        if !app.allows(&v.claims.email, &groups) {
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
    /// button per identity provider. `to` is the page to return to, and whether a fresh
    /// authentication was asked for (the IdP buttons then ask the IdP for one).
    pub(super) fn render_form(
        &self,
        rt: &Runtime,
        status: StatusCode,
        to: (&str, bool),
        email: &str,
        error: Option<&str>,
    ) -> Response<Body> {
        let (return_to, reauth) = to;
        let csrf = crate::secrets::random_b64(24);
        let idps = self.idp_buttons(return_to, reauth);
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

#[cfg(test)]
mod tests {
    use super::admin_return_path as p;

    #[test]
    fn admin_return_targets_stay_on_the_console() {
        let a = "auth.localhost";
        assert_eq!(p(a, "/admin/").as_deref(), Some("/admin/"));
        assert_eq!(p(a, "/admin").as_deref(), Some("/admin"));
        assert_eq!(
            p(a, "/admin/user?email=a%40b.com").as_deref(),
            Some("/admin/user?email=a%40b.com")
        );
        assert_eq!(
            p(a, "https://auth.localhost:8443/admin/apps").as_deref(),
            Some("/admin/apps")
        );
        for bad in [
            "",
            "/",
            "/login",
            "/administrator",
            "/admin/../login",
            "/admin/%2e%2e/login",
            "//evil.example/admin/",
            "/\\evil.example/admin/",
            "https://evil.example/admin/",
            "https://user:pw@auth.localhost/admin/",
            "javascript:alert(1)//admin/",
            "https://echo.localhost/admin/",
        ] {
            assert_eq!(p(a, bad), None, "{bad:?}");
        }
    }
}
