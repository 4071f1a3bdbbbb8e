//! Signing in: the auth domain (login form, global session, the authorize step that
//! hands a one-time code to an app host, logout) and the reserved `/.portcullis/` paths
//! on app hosts (the hand-off callback, logout, JWKS, identity).
//!
//! [`Login`] holds what these flows touch and nothing else (the caller passes the
//! config generation in force): the authenticator (verify, mint, seal), the revocation engine (logout revokes), the
//! session registry, the cluster's shared state (single-use codes, the throttle), the
//! cluster-wide session list, the identity providers ([`Idps`], built and refreshed
//! by the composition root) and the directory's view of accounts (deactivated or
//! disabled people, current groups).
//!
//! Identity providers (`oidc`): `/oidc/<name>/start`, `/oidc/<name>/callback`,
//! `/oidc/<name>/backchannel-logout` and `/signed-out` on the auth domain.

mod accounts;
mod admission;
pub mod codes;
mod handoff;
pub mod idps;
mod logout;
mod oidc;
pub mod pages;
mod signin;
pub mod users;

pub use admission::Refusal;
pub use idps::Idps;

use crate::auth::{AuthFailure, Authenticator};
use crate::cluster::accounts::Accounts;
use crate::cluster::{SessionDirectory, SharedState};
use crate::config::App;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::revocation::engine::Engine;
use crate::runtime::Runtime;
use crate::session::cookies::GatewayCookies;
use crate::session::registry::{Registry, SessionInfo};
use crate::session::token::{Claims, Verified};
use crate::web::body::{self, Body};
use crate::web::ctx::ReqCtx;
use crate::web::router::Routes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;

/// The auth domain's routes.
#[derive(Clone, Copy, Debug)]
enum AuthRoute {
    Home,
    LoginForm,
    LoginSubmit,
    Authorize,
    Logout,
    Jwks,
    OidcStart,
    OidcCallback,
    OidcBackchannel,
    SignedOut,
}

/// The reserved routes on app hosts.
#[derive(Clone, Copy, Debug)]
enum AppRoute {
    Callback,
    Logout,
    Jwks,
    Identity,
}

pub struct Login {
    auth: Arc<Authenticator>,
    engine: Arc<Engine>,
    sessions: Arc<Registry>,
    metrics: Arc<Metrics>,
    shared: Arc<dyn SharedState>,
    /// Sized from `[limits]` at the first sign-in (a restart applies a change).
    password_checks: std::sync::OnceLock<users::PasswordChecks>,
    accounts: Accounts,
    directory: Arc<dyn SessionDirectory>,
    idps: Arc<Idps>,
    auth_routes: Routes<AuthRoute>,
    app_routes: Routes<AppRoute>,
}

fn auth_routes() -> Routes<AuthRoute> {
    use AuthRoute::*;
    Routes::new()
        .route(&[Method::GET], "/", Home)
        .route(&[Method::GET], "/login", LoginForm)
        .route(&[Method::POST], "/login", LoginSubmit)
        .route(&[Method::GET], "/authorize", Authorize)
        .route(&[Method::GET, Method::POST], "/logout", Logout)
        .route(&[Method::GET], "/.well-known/jwks.json", Jwks)
        .route(&[Method::GET], "/.portcullis/certs", Jwks)
        .route(&[Method::GET], "/oidc/{idp}/start", OidcStart)
        .route(&[Method::GET], "/oidc/{idp}/callback", OidcCallback)
        .route(
            &[Method::POST],
            "/oidc/{idp}/backchannel-logout",
            OidcBackchannel,
        )
        .route(&[Method::GET], "/signed-out", SignedOut)
}

fn app_routes() -> Routes<AppRoute> {
    use AppRoute::*;
    Routes::new()
        .route(&[Method::GET], "/.portcullis/callback", Callback)
        .route(&[Method::GET, Method::POST], "/.portcullis/logout", Logout)
        .route(&[Method::GET], "/.portcullis/certs", Jwks)
        .route(&[Method::GET], "/.portcullis/identity", Identity)
}

/// What the sign-in flows are built from.
pub struct LoginParts {
    pub auth: Arc<Authenticator>,
    pub engine: Arc<Engine>,
    pub sessions: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub shared: Arc<dyn SharedState>,
    /// The directory's view of accounts (SCIM, Shared Signals): sign-in refusals and
    /// current groups.
    pub accounts: Accounts,
    /// The cluster-wide session list (back-channel logout, re-authentication checks).
    pub directory: Arc<dyn SessionDirectory>,
    pub idps: Arc<Idps>,
}

impl Login {
    pub fn new(p: LoginParts) -> Result<Self, matchit::InsertError> {
        Ok(Self {
            auth: p.auth,
            engine: p.engine,
            sessions: p.sessions,
            metrics: p.metrics,
            shared: p.shared,
            password_checks: std::sync::OnceLock::new(),
            accounts: p.accounts,
            directory: p.directory,
            idps: p.idps,
            auth_routes: auth_routes().build()?,
            app_routes: app_routes().build()?,
        })
    }

    /// The bound on concurrent password checks.
    fn password_checks(&self, rt: &Runtime) -> &users::PasswordChecks {
        self.password_checks.get_or_init(|| {
            let l = &rt.config.limits;
            users::PasswordChecks::new(
                l.password_checks,
                l.password_check_queue,
                self.metrics.clone(),
            )
        })
    }

    /// A request to the auth domain.
    pub async fn auth_domain(
        &self,
        rt: &Arc<Runtime>,
        ctx: &ReqCtx,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let found = self
            .auth_routes
            .find(req.method(), req.uri().path())
            .map_err(GatewayError::from_miss)?;
        let (route, idp) = (*found.handler, found.param("idp").to_string());
        let query = req.uri().query();
        match route {
            AuthRoute::Home => self.home(rt, ctx, req.headers()),
            AuthRoute::LoginForm => self.login_form(rt, ctx, req.headers(), query).await,
            AuthRoute::LoginSubmit => self.login_submit(rt, ctx, req).await,
            AuthRoute::Authorize => {
                let return_to = crate::web::query::param(query, "return_to").unwrap_or_default();
                self.authorize(rt, ctx, req.headers(), &return_to).await
            }
            AuthRoute::Logout => self.logout_global(rt, ctx, req.headers()).await,
            AuthRoute::Jwks => Ok(self.jwks()),
            AuthRoute::OidcStart => self.oidc_start(rt, ctx, req.headers(), &idp, query),
            AuthRoute::OidcCallback => {
                self.oidc_callback(rt, ctx, req.headers(), &idp, query)
                    .await
            }
            AuthRoute::OidcBackchannel => self.oidc_backchannel(&idp, req).await,
            AuthRoute::SignedOut => Ok(self.signed_out(rt, ctx)),
        }
    }

    /// A request under `/.portcullis/` on an app host.
    pub async fn reserved(
        &self,
        rt: &Arc<Runtime>,
        app: &Arc<App>,
        ctx: &ReqCtx,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let route = *self
            .app_routes
            .find(req.method(), req.uri().path())
            .map_err(GatewayError::from_miss)?
            .handler;
        match route {
            AppRoute::Callback => {
                self.callback(rt, app, ctx, req.uri().query(), req.headers())
                    .await
            }
            AppRoute::Logout => self.logout_app(rt, app, ctx, req.headers()).await,
            AppRoute::Jwks => Ok(self.jwks()),
            AppRoute::Identity => self.identity(rt, app, ctx, req.headers()),
        }
    }

    fn jwks(&self) -> Response<Body> {
        body::json_bytes(StatusCode::OK, self.auth.keys().jwks())
    }

    /// What the registry records of the session `claims` belong to, seen on this request.
    fn session_info(&self, claims: &Claims, ctx: &ReqCtx, user_agent: &str) -> SessionInfo {
        SessionInfo {
            sid: claims.sid.clone(),
            user: claims.sub.clone(),
            groups: claims.groups.clone(),
            ip: ctx.peer.ip().to_string(),
            user_agent: user_agent.to_string(),
            created_us: claims.iat_us,
            expires_us: claims.exp_us(),
            node: self.engine.node_id().to_string(),
            ..Default::default()
        }
    }

    /// The global session on this request, verified and not revoked.
    fn session_of(&self, rt: &Runtime, h: &HeaderMap) -> Result<Arc<Verified>, AuthFailure> {
        let c = GatewayCookies::parse(h)?;
        self.auth.check_session(rt, &c)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_tables_build() {
        assert!(super::auth_routes().build().is_ok());
        assert!(super::app_routes().build().is_ok());
    }
}
