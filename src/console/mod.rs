//! The admin console at `https://<auth_domain>/admin/`: server-rendered pages (no
//! JavaScript needed) for the people who revoke access under pressure. Users (search,
//! status, sessions, revoke one, several or all of a user's sessions), Apps, Groups
//! (revoke with an access report, CSV), Bulk (CSV upload, results as CSV), Emergency
//! (revoke everyone), Audit (the latest lines, whether the chain holds) and Cluster
//! (peers, lag, self-test).
//!
//! Who gets in ([`Console::handle`] → `gate`): a signed-in user (the global session on
//! the auth domain, verified and not revoked) matching `[console] admin_emails` /
//! `admin_groups`; others get 403. Entering needs a sign-in younger than `reauth_after`,
//! and so does every confirmation page and action; older sign-ins are sent to sign in
//! again (`/login?reauth=1&return_to=/admin/...`). See [`guard`] for the console's own
//! cookie, the CSRF tokens and the Origin check.
//!
//! Every action goes through the revocation engine, exactly like the control API, with
//! the actor `console:<admin email>`. The console holds only what its pages read or do
//! (the caller passes the config generation in force): the authenticator (sessions, sealing), the engine, the cluster-wide
//! session directory, the cluster's shared state (single-use tokens), a view of the
//! cluster backend, the audit log's path and, when wired, the identity sources' user
//! status. No `[console]` table: every `/admin` path is a 404.

mod actions;
mod apps;
mod audit_view;
mod bulk;
mod cluster;
mod csv_out;
pub mod data;
mod form;
mod groups;
pub mod guard;
pub mod rows;
mod scim_status;
mod users;
pub mod view;

pub use cluster::{ClusterView, NodeCluster};
pub use data::UserStatus;
pub use scim_status::AccountStatus;

use crate::auth::{AuthFailure, Authenticator};
use crate::clock::Micros;
use crate::cluster::{SessionDirectory, SharedState};
use crate::config::console::ConsoleConfig;
use crate::error::GatewayError;
use crate::revocation::engine::Engine;
use crate::runtime::Runtime;
use crate::session::cookies::GatewayCookies;
use crate::web::body::{self, Body};
use crate::web::ctx::ReqCtx;
use crate::web::query;
use crate::web::router::Routes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use view::Viewer;

/// Bodies of ordinary forms, and of the CSV upload.
const MAX_FORM: usize = 256 * 1024;
const MAX_UPLOAD: usize = 4 * 1024 * 1024;

/// Whether `path` belongs to the console (the data plane asks before the sign-in routes).
pub fn is_console_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Home,
    Users,
    User,
    Apps,
    Groups,
    GroupReport,
    GroupReportCsv,
    Bulk,
    BulkUpload,
    BulkResults,
    Emergency,
    EmergencySubmit,
    Audit,
    Cluster,
    Selftest,
    Confirm,
    Revoke,
}

impl Route {
    /// Pages that lead straight to an action, and the actions themselves, need a recent
    /// sign-in.
    fn needs_fresh(self) -> bool {
        use Route::*;
        matches!(
            self,
            Confirm | Revoke | Emergency | EmergencySubmit | BulkUpload | Selftest
        )
    }
}

fn routes() -> Routes<Route> {
    use Route::*;
    let (get, post) = (&[Method::GET][..], &[Method::POST][..]);
    Routes::new()
        .route(get, "/admin/", Home)
        .route(get, "/admin/users", Users)
        .route(get, "/admin/user", User)
        .route(get, "/admin/apps", Apps)
        .route(get, "/admin/groups", Groups)
        .route(get, "/admin/groups/report", GroupReport)
        .route(get, "/admin/groups/report.csv", GroupReportCsv)
        .route(get, "/admin/bulk", Bulk)
        .route(post, "/admin/bulk", BulkUpload)
        .route(post, "/admin/bulk/results.csv", BulkResults)
        .route(get, "/admin/emergency", Emergency)
        .route(post, "/admin/emergency", EmergencySubmit)
        .route(get, "/admin/audit", Audit)
        .route(get, "/admin/cluster", Cluster)
        .route(post, "/admin/cluster/selftest", Selftest)
        .route(get, "/admin/confirm", Confirm)
        .route(post, "/admin/revoke", Revoke)
}

/// What the console is built from.
pub struct ConsoleParts {
    pub auth: Arc<Authenticator>,
    pub engine: Arc<Engine>,
    pub directory: Arc<dyn SessionDirectory>,
    pub shared: Arc<dyn SharedState>,
    pub cluster: Arc<dyn ClusterView>,
    /// The JSON-lines audit log (`<state_dir>/audit.log`).
    pub audit_path: PathBuf,
    /// Inactive users at the identity sources (SCIM); None: everyone is active.
    pub user_status: Option<Arc<dyn UserStatus>>,
}

pub struct Console {
    auth: Arc<Authenticator>,
    engine: Arc<Engine>,
    directory: Arc<dyn SessionDirectory>,
    shared: Arc<dyn SharedState>,
    cluster: Arc<dyn ClusterView>,
    audit_path: PathBuf,
    user_status: Option<Arc<dyn UserStatus>>,
    chain: Arc<audit_view::ChainCache>,
    routes: Routes<Route>,
}

/// The signed-in administrator and the request, as every handler sees them.
pub(crate) struct Admin<'a> {
    pub rt: &'a Arc<Runtime>,
    pub cfg: &'a ConsoleConfig,
    pub email: String,
    pub sid: String,
    /// When the admin last authenticated (`session::authn`); None: unknown (no marker
    /// for this session), which counts as too long ago.
    pub signed_in_us: Option<Micros>,
    pub now: Micros,
    pub node: String,
    /// This request's path and query.
    pub here: String,
}

impl Admin<'_> {
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            email: &self.email,
            node: &self.node,
            signed_in_secs: self.signed_in_us.map(|t| (self.now - t) / 1_000_000),
            reauth_secs: self.cfg.reauth_after.as_secs(),
        }
    }

    /// The audit actor of this admin's actions.
    pub fn actor(&self) -> String {
        format!("console:{}", self.email)
    }

    fn fresh(&self) -> bool {
        self.signed_in_us
            .is_some_and(|t| self.now - t <= self.cfg.reauth_after.as_micros() as i64)
    }
}

/// `/login?reauth=1&return_to=<path>`: the form again, then back to `path`.
pub fn reauth_url(path: &str) -> String {
    format!(
        "/login?{}",
        query::encode(&[("reauth", "1"), ("return_to", path)])
    )
}

/// The gate's verdict: let the admin through (and maybe set the console cookie), or
/// answer now.
enum Gate<'a> {
    Pass(Admin<'a>, Option<String>),
    Answer(Response<Body>),
}

impl Console {
    pub fn new(p: ConsoleParts) -> Result<Self, matchit::InsertError> {
        Ok(Self {
            auth: p.auth,
            engine: p.engine,
            directory: p.directory,
            shared: p.shared,
            cluster: p.cluster,
            audit_path: p.audit_path,
            user_status: p.user_status,
            chain: Arc::default(),
            routes: routes().build()?,
        })
    }

    /// A request to `/admin` or below on the auth domain.
    pub async fn handle(
        &self,
        rt: &Arc<Runtime>,
        ctx: &ReqCtx,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let Some(cfg) = rt.config.console.as_ref() else {
            return Err(GatewayError::NotFound);
        };
        if req.uri().path() == "/admin" {
            return Ok(body::redirect(StatusCode::FOUND, "/admin/"));
        }
        let route = *self
            .routes
            .find(req.method(), req.uri().path())
            .map_err(GatewayError::from_miss)?
            .handler;
        let (admin, cookie) = match self.gate(rt, cfg, ctx, &req, route) {
            Gate::Pass(a, c) => (a, c),
            Gate::Answer(r) => return Ok(r),
        };
        let mut resp = self.dispatch(&admin, route, req).await?;
        if let Some(c) = cookie
            && let Ok(v) = HeaderValue::from_str(&c)
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        Ok(resp)
    }

    async fn dispatch(
        &self,
        a: &Admin<'_>,
        route: Route,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let q = req.uri().query().map(str::to_string);
        let q = q.as_deref();
        use Route::*;
        match route {
            Home => Ok(body::redirect(StatusCode::FOUND, "/admin/users")),
            Users => self.users_page(a, q).await,
            User => self.user_page(a, q).await,
            Apps => self.apps_page(a).await,
            Groups => self.groups_page(a).await,
            GroupReport => self.group_report(a, q, false).await,
            GroupReportCsv => self.group_report(a, q, true).await,
            Bulk => Ok(self.bulk_page(a)),
            Emergency => Ok(self.emergency_page(a, None).await),
            Audit => self.audit_page(a, q).await,
            Cluster => Ok(self.cluster_page(a, None).await),
            Confirm => self.confirm_page(a, q).await,
            BulkUpload => {
                let f = read_form(req, MAX_UPLOAD).await?;
                self.bulk_upload(a, f).await
            }
            BulkResults => {
                let f = read_form(req, MAX_UPLOAD).await?;
                self.bulk_results(a, f).await
            }
            EmergencySubmit => {
                let f = read_form(req, MAX_FORM).await?;
                self.emergency_submit(a, f).await
            }
            Selftest => {
                let f = read_form(req, MAX_FORM).await?;
                self.selftest(a, f).await
            }
            Revoke => {
                let f = read_form(req, MAX_FORM).await?;
                self.revoke(a, f).await
            }
        }
    }

    /// Origin (posts), global session, admin, console session, recent sign-in.
    fn gate<'a>(
        &self,
        rt: &'a Arc<Runtime>,
        cfg: &'a ConsoleConfig,
        ctx: &'a ReqCtx,
        req: &Request<Incoming>,
        route: Route,
    ) -> Gate<'a> {
        let post = req.method() == Method::POST;
        let h = req.headers();
        let here = req
            .uri()
            .path_and_query()
            .map_or("/admin/", |p| p.as_str())
            .to_string();
        let own = ctx.origin_for(&rt.config.auth_domain);
        if post && !guard::same_origin(h, &own) {
            tracing::warn!(path = %req.uri().path(), ip = %ctx.peer.ip(), "console: cross-site post refused");
            return Gate::Answer(view::message(
                StatusCode::FORBIDDEN,
                "Refused",
                "This form was not posted from the console itself (cross-site request).",
                Some(("/admin/", "Open the console")),
                None,
            ));
        }
        let session = GatewayCookies::parse(h)
            .map_err(AuthFailure::from)
            .and_then(|c| self.auth.check_session(rt, &c));
        let v = match session {
            Ok(v) => v,
            Err(f) => return Gate::Answer(not_signed_in(post, &here, f)),
        };
        let c = &v.claims;
        if !cfg.is_admin(&c.email, &c.groups) {
            tracing::warn!(email = %c.email, "console: not an administrator");
            return Gate::Answer(view::message(
                StatusCode::FORBIDDEN,
                "Not an administrator",
                &format!(
                    "{} is signed in but may not use the admin console. Ask an administrator to add you to [console] admin_emails or admin_groups.",
                    c.email
                ),
                Some(("/", "Back")),
                None,
            ));
        }
        let admin = Admin {
            rt,
            cfg,
            email: c.email.to_string(),
            sid: c.sid.to_string(),
            signed_in_us: {
                let keys = self.auth.keys();
                crate::session::authn::authenticated_at(keys.sealer(), h, &c.sid)
            },
            now: self.auth.now_us(),
            node: self.engine.node_id().to_string(),
            here,
        };
        let keys = self.auth.keys();
        let sealer = keys.sealer();
        let has_console = guard::session_value(h)
            .and_then(|val| guard::open_session(sealer, val))
            .is_some_and(|sid| crate::secrets::ct_eq(sid.as_bytes(), admin.sid.as_bytes()));
        let mut cookie = None;
        if !has_console {
            if post {
                return Gate::Answer(view::message(
                    StatusCode::FORBIDDEN,
                    "Console session missing",
                    "This request did not carry the console's session cookie (it ended, or the request came from another site). Open the console again.",
                    Some(("/admin/", "Open the console")),
                    None,
                ));
            }
            if !admin.fresh() {
                return Gate::Answer(body::redirect(StatusCode::FOUND, &reauth_url(&admin.here)));
            }
            let value = guard::seal_session(sealer, &admin.sid, &admin.email, admin.now);
            cookie = value.map(|v| guard::session_cookie(&v));
        }
        if route.needs_fresh() && !admin.fresh() {
            let back = if post {
                back_of(route, req.uri().query())
            } else {
                admin.here.clone()
            };
            return Gate::Answer(stale(&admin, post, &back));
        }
        Gate::Pass(admin, cookie)
    }
}

/// No valid global session: sign in (a post cannot be carried through the form).
fn not_signed_in(post: bool, here: &str, f: AuthFailure) -> Response<Body> {
    let mut pairs = vec![("return_to", here)];
    if matches!(f, AuthFailure::Revoked(_)) {
        pairs.push(("why", "revoked"));
    }
    let login = format!("/login?{}", query::encode(&pairs));
    if post {
        return view::message(
            StatusCode::FORBIDDEN,
            "Signed out",
            "Your session has ended (signed out, expired or revoked); nothing was done.",
            Some(("/login?return_to=%2Fadmin%2F", "Sign in")),
            None,
        );
    }
    body::redirect(StatusCode::FOUND, &login)
}

/// The page a post was made on: its action's `back` parameter (a console path), else the
/// action's own page.
fn back_of(route: Route, q: Option<&str>) -> String {
    let default = match route {
        Route::EmergencySubmit => "/admin/emergency",
        Route::BulkUpload => "/admin/bulk",
        Route::Selftest => "/admin/cluster",
        _ => "/admin/",
    };
    query::param(q, "back")
        .filter(|b| b.starts_with("/admin/") && !b.contains("//") && !b.contains('\\'))
        .unwrap_or_else(|| default.into())
}

/// The sign-in is too old for this: sign in again, then come back to `back` (for a
/// post, the page it was made on; the login checks it again).
fn stale(a: &Admin<'_>, post: bool, back: &str) -> Response<Body> {
    if !post {
        return body::redirect(StatusCode::FOUND, &reauth_url(back));
    }
    let mins = a.cfg.reauth_after.as_secs() / 60;
    view::message(
        StatusCode::FORBIDDEN,
        "Please sign in again",
        &format!(
            "Actions need a sign-in from the last {mins} minutes; yours is older. Nothing was done. Sign in again, then repeat the action."
        ),
        Some((&reauth_url(back), "Sign in again")),
        Some(&a.viewer()),
    )
}

/// Reads a posted form (bounded).
async fn read_form(req: Request<Incoming>, limit: usize) -> Result<form::Fields, GatewayError> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|_| GatewayError::BodyTooLarge(limit as u64))?
        .to_bytes();
    form::parse(&ctype, &bytes).map_err(|e| GatewayError::BadRequest(e.to_string()))
}

impl Console {
    /// Checks the form's token: made for this session and this form, not expired.
    /// Err: the refusal to answer with.
    fn form_token(
        &self,
        a: &Admin<'_>,
        f: &form::Fields,
        form: &str,
    ) -> Result<guard::FormToken, Refusal> {
        let checked = {
            let keys = self.auth.keys();
            guard::check_form(keys.sealer(), f.get("csrf"), &a.sid, form, a.now)
        };
        checked.map_err(|e| Box::new(refuse_form(a, form, &capitalize(&e.to_string()))))
    }

    /// Uses up a checked token of a form that acts: the first submission anywhere in
    /// the cluster counts, any later one is refused.
    async fn claim(&self, a: &Admin<'_>, t: &guard::FormToken) -> Result<(), Refusal> {
        let key = format!("console-form:{}", t.id);
        let ttl = Duration::from_micros(guard::FORM_TTL_US as u64);
        match self.shared.claim_once(&key, ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Box::new(refuse_form(
                a,
                &t.form,
                "This form was already submitted",
            ))),
            Err(e) => Err(Box::new(refuse_form(
                a,
                &t.form,
                &format!("The cluster state cannot be reached ({e})"),
            ))),
        }
    }

    /// Checks and uses up the token of a form that acts.
    async fn acting_form(
        &self,
        a: &Admin<'_>,
        f: &form::Fields,
        form: &str,
    ) -> Result<guard::FormToken, Refusal> {
        let t = self.form_token(a, f, form)?;
        self.claim(a, &t).await?;
        Ok(t)
    }

    fn form(&self, a: &Admin<'_>, form: &str, bind: String, word: String) -> String {
        guard::issue_form(self.auth.keys().sealer(), &a.sid, form, bind, word, a.now)
    }
}

/// The answer to a form that does not count (boxed: responses are large).
type Refusal = Box<Response<Body>>;

/// A form that does not count, and why; nothing was done.
fn refuse_form(a: &Admin<'_>, form: &str, why: &str) -> Response<Body> {
    tracing::warn!(email = %a.email, form, why, "console: form refused");
    view::message(
        StatusCode::FORBIDDEN,
        "Form refused",
        &format!("{why}. Nothing was done."),
        Some(("/admin/", "Back to the console")),
        Some(&a.viewer()),
    )
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_table_builds_and_paths_are_ours() {
        assert!(super::routes().build().is_ok());
        assert!(super::is_console_path("/admin"));
        assert!(super::is_console_path("/admin/users"));
        assert!(!super::is_console_path("/administrator"));
        assert!(!super::is_console_path("/login"));
        assert_eq!(
            super::reauth_url("/admin/confirm?scope=user"),
            "/login?reauth=1&return_to=%2Fadmin%2Fconfirm%3Fscope%3Duser"
        );
    }
}
