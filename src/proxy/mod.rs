//! The data plane: every request to the HTTPS (or plaintext) listener.
//!
//! The pipeline, in order (each step a plain method on [`DataPlane`]):
//! [`DataPlane::handle`] (access log, connection-close rule) → `context` (framing guard
//! verdict, Host, SNI match, scheme) → `route` (auth domain: `/admin` →
//! [`Console::handle`], `/scim/v2/` and `/ssf/` → [`Signals::handle`], else
//! [`Login::auth_domain`]; `/.portcullis/` → [`Login::reserved`], else the app by
//! host) → `authenticate`
//! ([`Authenticator::check_app`]: cookies, token, binding, revocation) → `authorize`
//! (the app's policy) → [`forward::forward`] (headers, origin exchange, streaming) →
//! errors become responses in [`GatewayError::into_response`].
//!
//! [`DataPlane`] holds what a request may touch and nothing else: the live config,
//! the authenticator, the sign-in flows, the session registry (last seen), the
//! revocation set (to end open streams), the cluster's freshness, and the counters.

pub mod echo;
pub mod forward;
pub mod framing_guard;
pub mod headers;

use crate::auth::{AuthFailure, Authenticator};
use crate::config::App;
use crate::config::file::Unauthenticated;
use crate::console::Console;
use crate::error::{Challenge, GatewayError};
use crate::login::Login;
use crate::metrics::{Metrics, Outcome};
use crate::revocation::Freshness;
use crate::revocation::set::RevocationSet;
use crate::runtime::{Live, Runtime};
use crate::session::cookies::GatewayCookies;
use crate::session::registry::Registry;
use crate::session::token::Verified;
use crate::triggers::Signals;
use crate::web::body::Body;
use crate::web::ctx::ReqCtx;
use compact_str::CompactString;
use http::request::Parts;
use http::{HeaderMap, Request, Response, header};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub sni: Option<String>,
    pub tls: bool,
    /// Raised by the HTTP/1 framing guard when a request head on this connection had
    /// ambiguous framing (hyper resolves it silently; we refuse it).
    pub framing: Option<framing_guard::FramingFlag>,
    /// The peer's address as a header value, rendered once per connection.
    pub peer_ip: http::HeaderValue,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        sni: Option<String>,
        tls: bool,
        framing: Option<framing_guard::FramingFlag>,
    ) -> Self {
        let peer_ip = http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        Self {
            peer,
            sni,
            tls,
            framing,
            peer_ip,
        }
    }
}

/// Redirect for browser navigations, 401 JSON for AJAX and API clients.
pub fn challenge(app: &App, h: &HeaderMap) -> Challenge {
    match app.unauthenticated {
        Unauthenticated::Redirect => Challenge::Redirect,
        Unauthenticated::Status401 => Challenge::Json,
        Unauthenticated::Auto => {
            let xhr = h
                .get("x-requested-with")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
            let html = h
                .get_all(header::ACCEPT)
                .iter()
                .any(|v| v.to_str().is_ok_and(|a| a.contains("text/html")));
            if !xhr && html {
                Challenge::Redirect
            } else {
                Challenge::Json
            }
        }
    }
}

/// What the data plane is built from.
pub struct DataPlane {
    live: Arc<Live>,
    auth: Arc<Authenticator>,
    login: Arc<Login>,
    console: Arc<Console>,
    signals: Arc<Signals>,
    sessions: Arc<Registry>,
    set: Arc<RevocationSet>,
    freshness: Arc<dyn Freshness>,
    metrics: Arc<Metrics>,
    upgrades: forward::UpgradeClient,
}

pub struct DataPlaneParts {
    pub live: Arc<Live>,
    pub auth: Arc<Authenticator>,
    pub login: Arc<Login>,
    pub console: Arc<Console>,
    /// SCIM and Shared Signals endpoints on the auth domain.
    pub signals: Arc<Signals>,
    pub sessions: Arc<Registry>,
    pub set: Arc<RevocationSet>,
    pub freshness: Arc<dyn Freshness>,
    pub metrics: Arc<Metrics>,
}

impl DataPlane {
    pub fn new(p: DataPlaneParts) -> Self {
        let connect_timeout = p.live.load().config.origin_connect_timeout;
        Self {
            live: p.live,
            auth: p.auth,
            login: p.login,
            console: p.console,
            signals: p.signals,
            sessions: p.sessions,
            set: p.set,
            freshness: p.freshness,
            metrics: p.metrics,
            upgrades: forward::upgrade_client(connect_timeout),
        }
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// One request, start to finish: the pipeline, then the access log line.
    pub async fn handle(&self, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
        let rt = self.live.load_full();
        let access = (rt.config.log.access_log).then(|| crate::access_log::Pending::of(&req));
        // The user for the access log: an inline copy of the email, no allocation.
        let mut user: Option<CompactString> = None;
        // The framing guard stops watching a connection after an upgrade request; when the
        // upgrade does not happen, the connection must not carry more requests.
        let close_unless_upgraded =
            req.version() == http::Version::HTTP_11 && headers::is_upgrade(req.headers());
        let mut resp = match self.route(&rt, &conn, req, &mut user).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.outcome(match &e {
                    GatewayError::Unauthenticated { .. } => Outcome::Unauthenticated,
                    GatewayError::Forbidden { .. } => Outcome::Forbidden,
                    _ => Outcome::Error,
                });
                e.into_response()
            }
        };
        if close_unless_upgraded && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        if let Some(a) = &access {
            let peer = conn.peer_ip.to_str().unwrap_or("-");
            crate::access_log::record(&a.line(resp.status(), user.as_deref(), peer));
        }
        resp
    }

    /// What the request says about itself and its connection, checked: framing, Host,
    /// SNI, and the scheme the client used.
    fn context(
        &self,
        rt: &Runtime,
        conn: &ConnInfo,
        req: &Request<Incoming>,
    ) -> Result<ReqCtx, GatewayError> {
        if conn.framing.as_ref().is_some_and(|f| f.is_set()) {
            return Err(GatewayError::BadFraming(
                "Content-Length with Transfer-Encoding, or a repeated or malformed Content-Length",
            ));
        }
        headers::check_framing(req.headers())?;
        let (host, port) = request_host(req)?;
        if let Some(sni) = &conn.sni
            && !sni.eq_ignore_ascii_case(&host)
        {
            return Err(GatewayError::Misdirected);
        }
        let trusted = rt.is_trusted(conn.peer.ip());
        let forwarded_https = trusted
            && req
                .headers()
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        Ok(ReqCtx {
            scheme: if conn.tls || forwarded_https {
                "https"
            } else {
                "http"
            },
            host,
            port,
            public_port: rt.config.public_port,
            peer: conn.peer,
            peer_ip: conn.peer_ip.clone(),
            trusted,
        })
    }

    async fn route(
        &self,
        rt: &Arc<Runtime>,
        conn: &ConnInfo,
        req: Request<Incoming>,
        user: &mut Option<CompactString>,
    ) -> Result<Response<Body>, GatewayError> {
        let ctx = self.context(rt, conn, &req)?;
        if let Some(reason) = self.freshness.not_ready() {
            return Err(GatewayError::Unavailable(reason));
        }
        if ctx.host == rt.config.auth_domain {
            self.metrics.outcome(Outcome::Gateway);
            if crate::console::is_console_path(req.uri().path()) {
                return self.console.handle(rt, &ctx, req).await;
            }
            if Signals::serves(req.uri().path()) {
                return self.signals.handle(rt, &ctx, req).await;
            }
            return self.login.auth_domain(rt, &ctx, req).await;
        }
        let Some(app) = rt.app_for_host(&ctx.host).cloned() else {
            return Err(GatewayError::UnknownHost(ctx.host));
        };
        if req.uri().path().starts_with("/.portcullis/") {
            self.metrics.outcome(Outcome::Gateway);
            return self.login.reserved(rt, &app, &ctx, req).await;
        }
        if let Some(reason) = self.freshness.stale_reason() {
            return Err(GatewayError::Unavailable(reason));
        }
        let (parts, body) = req.into_parts();
        let verified = self.authenticate(rt, &app, &ctx, &parts)?;
        self.authorize(&app, &verified, user)?;
        if let Some(s) = verified
            .session
            .get_or_init(|| self.sessions.get(&verified.claims.sid))
        {
            s.touch(self.auth.now_us());
        }
        // Only the access log reads it: no copy of the email per request without one.
        if rt.config.log.access_log {
            *user = Some(verified.claims.email.clone());
        }
        let token = verified.assertion.clone();
        let authed = forward::Authed {
            verified: &verified,
            token: &token,
        };
        let resp = forward::forward(self, rt, &app, &ctx, parts, body, authed).await?;
        self.metrics.outcome(Outcome::Proxied);
        Ok(resp)
    }

    /// The app token on the request, verified and not revoked; otherwise the challenge
    /// (a redirect to sign in, or a 401 for API clients).
    fn authenticate(
        &self,
        rt: &Runtime,
        app: &App,
        ctx: &ReqCtx,
        parts: &Parts,
    ) -> Result<Arc<Verified>, GatewayError> {
        let checked = GatewayCookies::parse(&parts.headers)
            .map_err(AuthFailure::from)
            .and_then(|c| self.auth.check_app(rt, app, &c));
        checked.map_err(|failure| {
            if matches!(failure, AuthFailure::Revoked(_)) {
                self.metrics.outcome(Outcome::Revoked);
            }
            let here = ctx.url(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            GatewayError::unauthenticated(
                failure.code(),
                ctx.login_url(&rt.config.auth_domain, &here),
                challenge(app, &parts.headers),
            )
        })
    }

    /// The app's policy: is this user let in?
    fn authorize(
        &self,
        app: &App,
        v: &Verified,
        user: &mut Option<CompactString>,
    ) -> Result<(), GatewayError> {
        let claims = &v.claims;
        if app.allows(&claims.email, &claims.groups) {
            return Ok(());
        }
        *user = Some(claims.email.clone());
        Err(GatewayError::Forbidden {
            email: claims.email.to_string(),
            app: app.name.clone(),
        })
    }
}

/// Host and port from the Host header (HTTP/1) or the authority (HTTP/2).
fn request_host<B>(req: &Request<B>) -> Result<(String, Option<u16>), GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let from_header = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest("more than one Host header".into()));
    }
    let raw = match (from_header, req.uri().authority()) {
        (Some(h), _) => h
            .to_str()
            .map_err(|_| GatewayError::BadRequest("Host header is not valid".into()))?,
        (None, Some(a)) => a.as_str(),
        (None, None) => return Err(GatewayError::BadRequest("no Host header".into())),
    };
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| GatewayError::BadRequest("Host header has a bad port".into()))?;
            (h, Some(port))
        }
        _ => (raw, None),
    };
    Ok((host.trim_end_matches('.').to_ascii_lowercase(), port))
}
