//! Logout, on the auth domain (`/logout`) and on app hosts (`/.portcullis/logout`):
//! the session's sid is revoked (so every app token minted from it and the global
//! session die on every node), this host's cookies are cleared, and the page says so.
//! With identity providers configured, an app host's logout continues on the auth
//! domain, which sends the browser on to the IdP's own logout when the session came
//! from one (see `oidc::logout`).

use super::Login;
use crate::config::App;
use crate::error::GatewayError;
use crate::revocation::Scope;
use crate::revocation::engine::RevokeRequest;
use crate::runtime::Runtime;
use crate::session::cookies::{self, GatewayCookies};
use crate::web::body::{self, Body};
use crate::web::cookie::{SameSite, append_cookie, clear_cookie};
use crate::web::ctx::ReqCtx;
use crate::web::html::{html, signed_out};
use http::{HeaderMap, Response, StatusCode};

impl Login {
    async fn end_session(&self, sid: &str, email: &str) -> Result<(), GatewayError> {
        self.engine
            .revoke(RevokeRequest {
                scope: Scope::Session,
                target: sid.to_string(),
                reason: "logout".into(),
                actor: format!("user:{email}"),
                external_id: None,
            })
            .await
            .map_err(|e| GatewayError::Internal(format!("logout: {e}")))?;
        Ok(())
    }

    pub(super) async fn logout_global(
        &self,
        rt: &Runtime,
        ctx: &ReqCtx,
        h: &HeaderMap,
    ) -> Result<Response<Body>, GatewayError> {
        if let Ok(v) = self.session_of(rt, h) {
            self.end_session(&v.claims.sid, &v.claims.email).await?;
        }
        // The session this browser holds (even revoked, e.g. by an app host's logout
        // just before): if it came from an IdP, end the IdP session too.
        let iss = &rt.config.issuer;
        let idp_exit = GatewayCookies::parse(h)
            .ok()
            .and_then(|c| c.session)
            .and_then(|t| self.auth.verify(t, iss, iss).ok())
            .and_then(|v| self.idp_logout_url(rt, ctx, h, &v.claims.sid));
        let mut resp = match idp_exit {
            Some(url) => body::redirect(StatusCode::SEE_OTHER, url.as_str()),
            None => {
                let login = format!("{}/login", ctx.origin_for(&rt.config.auth_domain));
                html(StatusCode::OK, signed_out(&login))
            }
        };
        let h = resp.headers_mut();
        append_cookie(h, &clear_cookie(cookies::SESSION, SameSite::Lax));
        append_cookie(h, &clear_cookie(super::oidc::LINK_COOKIE, SameSite::Lax));
        Ok(resp)
    }

    pub(super) async fn logout_app(
        &self,
        rt: &Runtime,
        app: &App,
        ctx: &ReqCtx,
        h: &HeaderMap,
    ) -> Result<Response<Body>, GatewayError> {
        let cookies = GatewayCookies::parse(h).unwrap_or_default();
        // A token whose binding cookie went missing still identifies the session to end.
        let verified = cookies
            .app
            .and_then(|t| self.auth.verify(t, &app.name, &rt.config.issuer).ok());
        if let Some(v) = verified {
            self.end_session(&v.claims.sid, &v.claims.email).await?;
        }
        let home = format!("{}/", ctx.origin_for(&rt.config.auth_domain));
        let mut resp = if self.idps.is_empty() {
            html(StatusCode::OK, signed_out(&home))
        } else {
            // The auth domain ends the IdP session too, when the session came from one.
            let logout = format!("{}/logout", ctx.origin_for(&rt.config.auth_domain));
            body::redirect(StatusCode::SEE_OTHER, &logout)
        };
        let h = resp.headers_mut();
        append_cookie(h, &clear_cookie(cookies::APP, app.same_site));
        append_cookie(h, &clear_cookie(cookies::BINDING, app.same_site));
        Ok(resp)
    }
}
