//! The data plane's request pipeline: route by host, authenticate, authorize, forward,
//! respond. Each step is a plain function; `handle` strings them together and writes
//! the access log line.

pub mod body;
pub mod echo;
pub mod forward;
pub mod framing_guard;
pub mod headers;
pub mod reserved;

use crate::auth::{self, AuthFailure};
use crate::config::App;
use crate::config::file::Unauthenticated;
use crate::error::{Challenge, GatewayError};
use crate::gateway::{Gateway, Runtime};
use crate::metrics::Outcome;
use crate::session::cookies::GatewayCookies;
use body::Body;
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

/// Per-request facts the steps share.
#[derive(Debug, Clone)]
pub struct ReqCtx {
    /// The scheme the client used (a trusted TLS terminator may say https).
    pub scheme: &'static str,
    pub host: String,
    pub port: Option<u16>,
    pub public_port: Option<u16>,
    pub peer: SocketAddr,
    pub peer_ip: http::HeaderValue,
    pub trusted: bool,
}

impl ReqCtx {
    /// `scheme://host[:port]` as the client reaches `host`: redirects keep the client's
    /// scheme and port unless `public_port` says otherwise.
    pub fn origin_for(&self, host: &str) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match self.public_port.or(self.port) {
            Some(p) if p != default => format!("{}://{host}:{p}", self.scheme),
            _ => format!("{}://{host}", self.scheme),
        }
    }

    /// The full URL of this request as the client sees it.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.origin_for(&self.host), path_and_query)
    }
}

/// The auth domain's authorize URL that sends the browser back to `return_to`.
pub fn login_url(ctx: &ReqCtx, rt: &Runtime, return_to: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", return_to)
        .finish();
    format!("{}/authorize?{q}", ctx.origin_for(&rt.config.auth_domain))
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

pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<Body> {
    let rt = gw.runtime.load_full();
    let access = (rt.config.log.access_log).then(|| crate::access_log::Pending::of(&req));
    // The user for the access log: an inline copy of the email, no allocation.
    let mut user: Option<compact_str::CompactString> = None;
    // The framing guard stops watching a connection after an upgrade request; when the
    // upgrade does not happen, the connection must not carry more requests.
    let close_unless_upgraded =
        req.version() == http::Version::HTTP_11 && headers::is_upgrade(req.headers());
    let mut resp = match route(&gw, &rt, &conn, req, &mut user).await {
        Ok(r) => r,
        Err(e) => {
            gw.metrics.outcome(match &e {
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

async fn route(
    gw: &Arc<Gateway>,
    rt: &Arc<Runtime>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    user: &mut Option<compact_str::CompactString>,
) -> Result<Response<Body>, GatewayError> {
    if conn.framing.as_ref().is_some_and(|f| f.is_set()) {
        return Err(GatewayError::BadFraming(
            "Content-Length with Transfer-Encoding, or a repeated or malformed Content-Length",
        ));
    }
    headers::check_framing(req.headers())?;
    let (host, port) = request_host(&req)?;
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
    let ctx = ReqCtx {
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
    };
    if ctx.host == rt.config.auth_domain {
        gw.metrics.outcome(Outcome::Gateway);
        return crate::login::handle(gw, rt, &ctx, req).await;
    }
    let Some(app) = rt.app_for_host(&ctx.host).cloned() else {
        return Err(GatewayError::UnknownHost(ctx.host));
    };
    if req.uri().path().starts_with("/.portcullis/") {
        gw.metrics.outcome(Outcome::Gateway);
        return reserved::handle(gw, rt, &app, &ctx, req).await;
    }
    if let Some(reason) = crate::sync::stale_reason(gw) {
        return Err(GatewayError::Unavailable(reason));
    }
    let (parts, body) = req.into_parts();
    let checked = GatewayCookies::parse(&parts.headers)
        .map_err(AuthFailure::from)
        .and_then(|c| auth::check_app(gw, rt, &app, &c));
    let verified = match checked {
        Ok(v) => v,
        Err(failure) => {
            if matches!(failure, AuthFailure::Revoked(_)) {
                gw.metrics.outcome(Outcome::Revoked);
            }
            let here = ctx.url(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            return Err(GatewayError::unauthenticated(
                failure.code(),
                login_url(&ctx, rt, &here),
                challenge(&app, &parts.headers),
            ));
        }
    };
    let claims = &verified.claims;
    if !app.allows(&claims.email, &claims.groups) {
        *user = Some(claims.email.clone());
        return Err(GatewayError::Forbidden {
            email: claims.email.to_string(),
            app: app.name.clone(),
        });
    }
    if let Some(s) = verified
        .session
        .get_or_init(|| gw.registry.get(&claims.sid))
    {
        s.touch(gw.now_us());
    }
    // Only the access log reads it: no copy of the email per request without one.
    if rt.config.log.access_log {
        *user = Some(claims.email.clone());
    }
    let token = verified.assertion.clone();
    let resp = forward::forward(
        gw,
        rt,
        &app,
        &ctx,
        parts,
        body,
        forward::Authed {
            verified: &verified,
            token: &token,
        },
    )
    .await?;
    gw.metrics.outcome(Outcome::Proxied);
    Ok(resp)
}
