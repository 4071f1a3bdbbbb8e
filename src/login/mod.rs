//! The auth domain: login form, global session, the authorize step that hands a
//! one-time code to an app host, and logout.

pub mod codes;
pub mod limiter;
pub mod pages;
pub mod users;

use crate::auth;
use crate::config::file::SameSite;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Runtime};
use crate::proxy::ReqCtx;
use crate::proxy::body::{self, Body};
use crate::proxy::reserved::append_cookie;
use crate::revocation::Scope;
use crate::revocation::engine::{self, RevokeRequest};
use crate::secrets::ct_eq;
use crate::session::cookies::{self, CookieSpec, GatewayCookies};
use codes::Pending;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const MAX_FORM: usize = 16 * 1024;

pub async fn handle(
    gw: &Arc<Gateway>,
    rt: &Arc<Runtime>,
    ctx: &ReqCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let path = req.uri().path().to_string();
    let query = query_map(req.uri().query());
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/") => home(gw, rt, ctx, req.headers()),
        (Method::GET, "/login") => {
            let return_to = query.get("return_to").cloned().unwrap_or_default();
            let notice = match query.get("why").map(String::as_str) {
                Some("revoked") => Some(
                    "Your session was ended by an administrator (access revoked). Please sign in again.",
                ),
                Some("expired") => Some("Your session has expired. Please sign in again."),
                _ => None,
            };
            login_form(gw, rt, ctx, req.headers(), &return_to, notice)
        }
        (Method::POST, "/login") => login_submit(gw, rt, ctx, req).await,
        (Method::GET, "/authorize") => {
            let return_to = query.get("return_to").cloned().unwrap_or_default();
            authorize(gw, rt, ctx, req.headers(), &return_to)
        }
        (Method::GET | Method::POST, "/logout") => logout(gw, rt, ctx, req.headers()).await,
        (Method::GET, "/.well-known/jwks.json" | "/.portcullis/certs") => {
            Ok(body::json_bytes(StatusCode::OK, gw.keys.load().jwks()))
        }
        (_, "/" | "/login" | "/authorize" | "/logout") => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// A return target after login: only an absolute http(s) URL on a configured app host.
/// Returns the app's name and the path and query to land on.
pub fn validate_return_to<'a>(
    rt: &'a Runtime,
    return_to: &str,
) -> Option<(&'a Arc<crate::config::App>, String, String)> {
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

fn session_of(
    gw: &Gateway,
    rt: &Runtime,
    h: &HeaderMap,
) -> Result<Arc<crate::session::token::Verified>, auth::AuthFailure> {
    let c = GatewayCookies::parse(h)?;
    auth::check_session(gw, rt, &c)
}

fn home(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &ReqCtx,
    h: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    match session_of(gw, rt, h).ok() {
        Some(v) => {
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
            Ok(body::html(
                StatusCode::OK,
                pages::signed_in(&v.claims.email, &apps),
            ))
        }
        None => Ok(body::redirect(StatusCode::FOUND, "/login")),
    }
}

fn login_form(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &ReqCtx,
    h: &HeaderMap,
    return_to: &str,
    notice: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    if !return_to.is_empty() && session_of(gw, rt, h).is_ok() {
        return authorize(gw, rt, ctx, h, return_to);
    }
    Ok(render_form(rt, StatusCode::OK, return_to, "", notice))
}

fn render_form(
    rt: &Runtime,
    status: StatusCode,
    return_to: &str,
    email: &str,
    error: Option<&str>,
) -> Response<Body> {
    let csrf = crate::secrets::random_b64(24);
    let mut resp = body::html(
        status,
        pages::login(&pages::LoginForm {
            action: "/login",
            csrf: &csrf,
            return_to,
            email,
            error,
            demo_hint: rt.config.has_demo_user(),
        }),
    );
    append_cookie(
        resp.headers_mut(),
        &cookies::set_cookie(&CookieSpec {
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

fn client_ip(ctx: &ReqCtx) -> String {
    ctx.peer.ip().to_string()
}

async fn login_submit(
    gw: &Arc<Gateway>,
    rt: &Arc<Runtime>,
    ctx: &ReqCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    // A cross-site form post is refused outright (the CSRF cookie check below also
    // catches it; this gives a clearer answer).
    if let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        && origin != "null"
        && origin != ctx.origin_for(&rt.config.auth_domain)
    {
        return Ok(body::html(
            StatusCode::FORBIDDEN,
            pages::error(
                "Sign-in refused",
                "The sign-in form was posted from another site.",
            ),
        ));
    }
    let bytes = Limited::new(incoming, MAX_FORM)
        .collect()
        .await
        .map_err(|_| GatewayError::BodyTooLarge(MAX_FORM as u64))?
        .to_bytes();
    let form: HashMap<String, String> = form_urlencoded::parse(&bytes).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let return_to = field("return_to");
    let email = field("email").trim().to_ascii_lowercase();
    let password = field("password").to_string();

    let cookie_csrf = GatewayCookies::parse(&parts.headers)
        .ok()
        .and_then(|c| c.csrf);
    let csrf_ok =
        cookie_csrf.is_some_and(|c| !c.is_empty() && ct_eq(c.as_bytes(), field("csrf").as_bytes()));
    if !csrf_ok {
        return Ok(render_form(
            rt,
            StatusCode::FORBIDDEN,
            return_to,
            &email,
            Some("This sign-in form expired or was not sent by this site. Please try again."),
        ));
    }

    let now = gw.now_us();
    let cfg = &rt.config.login;
    let window = cfg.failure_window.as_micros() as i64;
    let ip_key = format!("ip:{}", client_ip(ctx));
    let user_key = format!("user:{email}");
    let blocked = gw
        .limiter
        .blocked_for(&user_key, cfg.max_failures_per_user, now, window)
        .or_else(|| {
            gw.limiter
                .blocked_for(&ip_key, cfg.max_failures_per_ip, now, window)
        });
    if let Some(wait) = blocked {
        gw.metrics
            .login_throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = render_form(
            rt,
            StatusCode::TOO_MANY_REQUESTS,
            return_to,
            &email,
            Some(&format!(
                "Too many failed sign-ins. Try again in {wait} seconds."
            )),
        );
        if let Ok(v) = http::HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }

    // After a user revocation, sign-ins are refused for `relogin_lockout`.
    if let Some(revoked_at) = gw.revocations.get(Scope::User, &email) {
        let until = revoked_at + rt.config.session.relogin_lockout.as_micros() as i64;
        if now < until {
            gw.metrics
                .login_throttled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let secs = (((until - now) as f64 / 1e6).round() as u64).max(1);
            let mut r = render_form(
                rt,
                StatusCode::FORBIDDEN,
                return_to,
                &email,
                Some(&format!(
                    "Access for this account was revoked by an administrator. Signing in is blocked for {secs} more seconds."
                )),
            );
            if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(r);
        }
    }

    let user = rt.users.get(&email).filter(|u| !u.disabled).cloned();
    let ok = users::verify(password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let Some(user) = user.filter(|_| ok) else {
        gw.limiter.record_failure(&user_key, now, window);
        gw.limiter.record_failure(&ip_key, now, window);
        gw.metrics
            .login_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(email = %email, ip = %client_ip(ctx), "sign-in failed");
        return Ok(render_form(
            rt,
            StatusCode::UNAUTHORIZED,
            return_to,
            &email,
            Some("Wrong email or password."),
        ));
    };
    gw.limiter.clear(&user_key);
    let (token, claims) = auth::mint_session(gw, rt, &user)
        .map_err(|e| GatewayError::Internal(format!("minting a session: {e}")))?;
    let ua = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    gw.registry.create(crate::session::registry::NewSession {
        sid: &claims.sid,
        user: &claims.sub,
        groups: &claims.groups,
        ip: &client_ip(ctx),
        user_agent: ua,
        created_us: claims.iat_us,
        expires_us: claims.exp_us(),
        node: &gw.node_id,
    });
    gw.metrics
        .login_success
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(email = %email, sid = %claims.sid, ip = %client_ip(ctx), "signed in");
    let next = if validate_return_to(rt, return_to).is_some() {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", return_to)
            .finish();
        format!("/authorize?{q}")
    } else {
        "/".to_string()
    };
    let mut resp = body::redirect(StatusCode::SEE_OTHER, &next);
    let h = resp.headers_mut();
    append_cookie(
        h,
        &cookies::set_cookie(&CookieSpec {
            name: cookies::SESSION,
            value: &token,
            max_age: Some(rt.config.session.global_duration),
            http_only: true,
            same_site: SameSite::Lax,
            path: "/",
        }),
    );
    append_cookie(h, &cookies::clear_cookie(cookies::CSRF, SameSite::Strict));
    Ok(resp)
}

/// Turns a valid global session into a one-time code for the app host, without showing
/// anything; without a session, shows the login form.
fn authorize(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &ReqCtx,
    h: &HeaderMap,
    return_to: &str,
) -> Result<Response<Body>, GatewayError> {
    let Some((app, host, path)) = validate_return_to(rt, return_to) else {
        return Ok(body::html(
            StatusCode::BAD_REQUEST,
            pages::error(
                "Unknown destination",
                "The page you were sent back to is not an application this gateway protects.",
            ),
        ));
    };
    let v = match session_of(gw, rt, h) {
        Ok(v) => v,
        Err(failure) => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("return_to", return_to);
            // Say why the form is back when a session existed but no longer counts.
            match failure {
                auth::AuthFailure::Revoked(_) => {
                    q.append_pair("why", "revoked");
                }
                auth::AuthFailure::Token(crate::session::token::TokenError::Expired) => {
                    q.append_pair("why", "expired");
                }
                _ => {}
            }
            return Ok(body::redirect(
                StatusCode::FOUND,
                &format!("/login?{}", q.finish()),
            ));
        }
    };
    if !app.allows(&v.claims.email, &v.claims.groups) {
        return Err(GatewayError::Forbidden {
            email: v.claims.email.to_string(),
            app: app.name.clone(),
        });
    }
    let now = gw.now_us();
    gw.codes.sweep(now);
    let code = gw.codes.issue(Pending {
        session: v.claims.to_claims(),
        app: app.name.clone(),
        return_path: path,
        expires_us: now + rt.config.session.code_ttl.as_micros() as i64,
    });
    let location = format!("{}/.portcullis/callback?code={code}", ctx.origin_for(&host));
    Ok(body::redirect(StatusCode::FOUND, &location))
}

async fn logout(
    gw: &Arc<Gateway>,
    rt: &Runtime,
    ctx: &ReqCtx,
    h: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    if let Ok(v) = session_of(gw, rt, h) {
        engine::revoke(
            gw,
            RevokeRequest {
                scope: Scope::Session,
                target: v.claims.sid.to_string(),
                reason: "logout".into(),
                actor: format!("user:{}", v.claims.email),
            },
        )
        .await
        .map_err(|e| GatewayError::Internal(format!("logout: {e}")))?;
    }
    let mut resp = body::html(
        StatusCode::OK,
        pages::signed_out(&format!("{}/login", ctx.origin_for(&rt.config.auth_domain))),
    );
    append_cookie(
        resp.headers_mut(),
        &cookies::clear_cookie(cookies::SESSION, SameSite::Lax),
    );
    Ok(resp)
}
