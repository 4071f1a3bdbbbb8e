//! Reserved paths on app hosts, under `/.portcullis/`: the hand-off callback, logout,
//! the JWKS and the current identity.

use super::body::{self, Body};
use super::{ReqCtx, login_url};
use crate::auth::{self, AuthFailure};
use crate::config::App;
use crate::config::file::SameSite;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Runtime};
use crate::login::pages;
use crate::revocation::Scope;
use crate::revocation::engine::{self, RevokeRequest};
use crate::session::cookies::{self, CookieSpec, GatewayCookies};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::sync::Arc;

pub async fn handle(
    gw: &Arc<Gateway>,
    rt: &Arc<Runtime>,
    app: &Arc<App>,
    ctx: &ReqCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/.portcullis/callback") => callback(gw, rt, app, ctx, &req),
        (&Method::GET | &Method::POST, "/.portcullis/logout") => {
            logout(gw, rt, app, ctx, &req).await
        }
        (&Method::GET, "/.portcullis/certs") => {
            Ok(body::json_bytes(StatusCode::OK, gw.keys.load().jwks()))
        }
        (&Method::GET, "/.portcullis/identity") => identity(gw, rt, app, ctx, &req),
        (_, "/.portcullis/callback" | "/.portcullis/certs" | "/.portcullis/identity") => {
            Err(GatewayError::MethodNotAllowed)
        }
        _ => Err(GatewayError::NotFound),
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Redeems a one-time code: mints the app token, sets the app and binding cookies, and
/// sends the browser to the page it first asked for.
fn callback(
    gw: &Arc<Gateway>,
    rt: &Runtime,
    app: &App,
    ctx: &ReqCtx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let restart = |why: &str| {
        // An unusable code: start the flow again from the app's front page.
        tracing::info!(app = %app.name, why, "hand-off code refused");
        Ok(body::redirect(
            StatusCode::FOUND,
            &login_url(ctx, rt, &ctx.url("/")),
        ))
    };
    let Some(code) = query_param(req, "code") else {
        return restart("no code");
    };
    let now = gw.now_us();
    let Some(pending) = gw.codes.redeem(&code, now) else {
        return restart("unknown, used or expired code");
    };
    if pending.app != app.name {
        return restart("code was issued for another app");
    }
    if gw.revocations.check(&pending.session, false).is_some() {
        return restart("session was revoked");
    }
    let minted = auth::mint_app_token(gw, rt, app, &pending)
        .map_err(|e| GatewayError::Internal(format!("minting an app token: {e}")))?;
    gw.registry.add_app(&minted.claims.sid, &app.name, now);
    let lifetime =
        std::time::Duration::from_secs((minted.claims.exp - minted.claims.iat).max(0) as u64);
    let target = pending.return_path;
    let mut resp = if app.same_site == SameSite::Strict {
        body::html(StatusCode::OK, pages::hop(&target))
    } else {
        body::redirect(StatusCode::FOUND, &target)
    };
    let h = resp.headers_mut();
    let app_cookie = cookies::set_cookie(&CookieSpec {
        name: cookies::APP,
        value: &minted.token,
        max_age: Some(lifetime),
        http_only: app.http_only,
        same_site: app.same_site,
        path: "/",
    });
    append_cookie(h, &app_cookie);
    match &minted.binding {
        Some(secret) => append_cookie(
            h,
            &cookies::set_cookie(&CookieSpec {
                name: cookies::BINDING,
                value: secret,
                max_age: Some(lifetime),
                http_only: true,
                same_site: app.same_site,
                path: "/",
            }),
        ),
        None => append_cookie(h, &cookies::clear_cookie(cookies::BINDING, app.same_site)),
    }
    Ok(resp)
}

pub fn append_cookie(h: &mut http::HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.append(header::SET_COOKIE, v);
    }
}

/// Ends the session on the server (its sid is revoked, so every app token minted from
/// it and the global session die on every node), clears this host's cookies and says so.
async fn logout(
    gw: &Arc<Gateway>,
    rt: &Runtime,
    app: &App,
    ctx: &ReqCtx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let cookies = GatewayCookies::parse(req.headers()).unwrap_or_default();
    // A token whose binding cookie went missing still identifies the session to end.
    let token = cookies.app.map(|t| {
        let keys = gw.keys.load();
        gw.verifier
            .verify(&keys, t, &app.name, &rt.config.issuer, gw.now_us())
    });
    if let Some(Ok((v, _))) = token {
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
    let home = format!("{}/", ctx.origin_for(&rt.config.auth_domain));
    let mut resp = body::html(StatusCode::OK, pages::signed_out(&home));
    let h = resp.headers_mut();
    append_cookie(h, &cookies::clear_cookie(cookies::APP, app.same_site));
    append_cookie(h, &cookies::clear_cookie(cookies::BINDING, app.same_site));
    Ok(resp)
}

fn identity(
    gw: &Arc<Gateway>,
    rt: &Runtime,
    app: &App,
    ctx: &ReqCtx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let checked = GatewayCookies::parse(req.headers())
        .map_err(AuthFailure::from)
        .and_then(|c| auth::check_app(gw, rt, app, &c));
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
            login_url(ctx, rt, &ctx.url("/")),
            crate::error::Challenge::Json,
        )),
    }
}
