//! The forward step: rewrite the request for the origin, send it over the pooled client
//! (or to the built-in echo), stream both bodies, tunnel upgrades, and close long-lived
//! streams whose token is revoked.

use super::{DataPlane, headers};
use crate::config::{App, Origin};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::revocation::set::RevocationSet;
use crate::runtime::Runtime;
use crate::session::cookies;
use crate::session::token::Verified;
use crate::web::body::{self, Body, BoxError};
use crate::web::body_deadline::{self, BodyDeadline};
use crate::web::ctx::ReqCtx;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Limited};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Protocol upgrades (WebSocket) go through hyper's client, which hands over both
/// sides of the upgraded connection.
pub type UpgradeClient = Client<HttpConnector, Body>;

pub fn upgrade_client(connect_timeout: std::time::Duration) -> UpgradeClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// Who the request is forwarded for: its verified token and the raw assertion.
pub struct Authed<'a> {
    pub verified: &'a Arc<Verified>,
    pub token: &'a HeaderValue,
}

/// The forward step: rewrite the request for the origin, send it, and answer with the
/// origin's response (or tunnel a protocol upgrade).
pub async fn forward(
    dp: &DataPlane,
    rt: &Runtime,
    app: &Arc<App>,
    ctx: &ReqCtx,
    mut parts: Parts,
    incoming: hyper::body::Incoming,
    auth: Authed<'_>,
) -> Result<Response<Body>, GatewayError> {
    let max = rt.config.max_body_bytes;
    if headers::content_length(&parts.headers).is_some_and(|n| n > max) {
        return Err(GatewayError::BodyTooLarge(max));
    }
    let upgrade = parts.version == Version::HTTP_11 && headers::is_upgrade(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    rewrite_headers(
        &mut parts.headers,
        app,
        ctx,
        upgrade,
        original_host.as_ref(),
        auth.token,
    );
    // A cheap clone (shared bytes) of the request target.
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let limits = &rt.config.limits;
    let req_body = BodyDeadline::new(incoming, limits.body_timeout, limits.body_min_rate);
    let req_body: Body = Limited::new(req_body, max as usize).boxed_unsync();
    // Nothing reaches the origin before the body's first bytes arrived (and, chunked,
    // parsed): a body refused at its start leaves the origin with nothing.
    let req_body = first_frame(req_body)
        .await
        .map_err(|e| body_failure(dp, e, max))?;
    parts.version = Version::HTTP_11;
    let (base, authority) = match &app.origin {
        Origin::Echo => {
            parts.uri = Uri::from(path_and_query);
            if let Some(hv) = original_host {
                parts.headers.insert(header::HOST, hv);
            }
            return super::echo::respond(&parts, req_body)
                .await
                .map_err(|e| body_failure(dp, e, max));
        }
        Origin::Http { base, authority } => (base, authority),
    };
    parts.uri = origin_uri(base, path_and_query)?;
    set_host(&mut parts.headers, app, base, original_host);
    let req = Request::from_parts(parts, req_body);
    if upgrade {
        return send_upgrade(dp, app, req, client_upgrade, &auth).await;
    }
    let target = crate::origin::Target {
        authority,
        connect_timeout: rt.config.origin_connect_timeout,
        response_timeout: app.origin_timeout,
    };
    match crate::origin::send(target, req).await {
        Err(crate::origin::OriginError::Timeout) => {
            Err(GatewayError::OriginTimeout(app.origin_timeout))
        }
        // Part of the request may have gone out: the origin connection was reset.
        Err(crate::origin::OriginError::RequestBody(e)) => Err(body_failure(dp, e, max)),
        Err(e) => Err(origin_failure(app, e)),
        Ok(resp) => Ok(finish_response(dp, &auth, resp)),
    }
}

/// Hop-by-hop and gateway headers out, X-Forwarded-* and the assertion in, gateway
/// cookies stripped.
fn rewrite_headers(
    h: &mut http::HeaderMap,
    app: &App,
    ctx: &ReqCtx,
    upgrade: bool,
    original_host: Option<&HeaderValue>,
    assertion: &HeaderValue,
) {
    headers::strip_hop_by_hop(h, upgrade);
    headers::strip_gateway_headers(h);
    headers::set_forwarded(h, &ctx.peer_ip, ctx.trusted, ctx.scheme, original_host);
    cookies::strip_for_origin(h, app.pass_gateway_cookies);
    h.insert(headers::ASSERTION, assertion.clone());
}

/// The Host the origin sees: the client's (`preserve_host`) or the origin's authority.
fn set_host(h: &mut http::HeaderMap, app: &App, base: &Uri, original: Option<HeaderValue>) {
    match (app.preserve_host, original) {
        (true, Some(hv)) => {
            h.insert(header::HOST, hv);
        }
        _ => {
            if let Some(a) = base
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                h.insert(header::HOST, a);
            }
        }
    }
}

/// A protocol upgrade goes through hyper's client, which hands over both sides; on a
/// 101 the two are spliced until either closes or the token is revoked.
async fn send_upgrade(
    dp: &DataPlane,
    app: &App,
    req: Request<Body>,
    client_upgrade: Option<OnUpgrade>,
    auth: &Authed<'_>,
) -> Result<Response<Body>, GatewayError> {
    let resp = match tokio::time::timeout(app.origin_timeout, dp.upgrades.request(req)).await {
        Err(_) => return Err(GatewayError::OriginTimeout(app.origin_timeout)),
        Ok(Err(e)) => {
            let what = if e.is_connect() {
                "connection refused or unreachable"
            } else {
                "the origin closed the connection"
            };
            tracing::warn!(app = %app.name, error = %e, "origin request failed");
            return Err(GatewayError::OriginUnavailable(what.into()));
        }
        Ok(Ok(r)) => r,
    };
    let (mut rparts, rbody) = resp.into_parts();
    if rparts.status != StatusCode::SWITCHING_PROTOCOLS {
        let resp = Response::from_parts(rparts, body::incoming(rbody));
        return Ok(finish_response(dp, auth, resp));
    }
    let (Some(client_up), Some(origin_up)) =
        (client_upgrade, rparts.extensions.remove::<OnUpgrade>())
    else {
        return Err(GatewayError::OriginUnavailable(
            "unexpected protocol switch".into(),
        ));
    };
    headers::strip_response(&mut rparts.headers, true);
    tokio::spawn(tunnel(
        dp.set.clone(),
        dp.metrics.clone(),
        auth.verified.clone(),
        client_up,
        origin_up,
    ));
    Ok(Response::from_parts(rparts, body::empty()))
}

/// Strips the response's hop-by-hop headers; open-ended responses (event streams, long
/// polls) are made to end when their token is revoked.
fn finish_response(dp: &DataPlane, auth: &Authed<'_>, resp: Response<Body>) -> Response<Body> {
    let (mut parts, rbody) = resp.into_parts();
    headers::strip_response(&mut parts.headers, false);
    let rbody = if parts.headers.contains_key(header::CONTENT_LENGTH) {
        rbody
    } else {
        Revocable::wrap(
            dp.set.clone(),
            dp.metrics.clone(),
            auth.verified.clone(),
            rbody,
        )
    };
    Response::from_parts(parts, rbody)
}

/// The request body's first frame read ahead (the body unchanged otherwise), or the
/// error it started with.
async fn first_frame(mut b: Body) -> Result<Body, BoxError> {
    if b.is_end_stream() {
        return Ok(b);
    }
    match b.frame().await {
        None => Ok(body::empty()),
        Some(Err(e)) => Err(e),
        Some(Ok(f)) if b.is_end_stream() => Ok(match f.into_data() {
            Ok(data) => body::full(data),
            Err(f) => Prepend::wrap(f, b),
        }),
        Some(Ok(f)) => Ok(Prepend::wrap(f, b)),
    }
}

/// The gateway's answer when the request body fails: too slow (408), too large (413),
/// or malformed or cut short (400).
fn body_failure(dp: &DataPlane, e: BoxError, max: u64) -> GatewayError {
    if body_deadline::is_timeout(&e) {
        crate::metrics::inc(&dp.metrics.limits.body_timeouts);
        GatewayError::BodyTimeout
    } else if e.is::<http_body_util::LengthLimitError>() {
        GatewayError::BodyTooLarge(max)
    } else {
        GatewayError::BadRequest(format!("the request body is malformed or ended early: {e}"))
    }
}

/// A body with a frame already read put back in front.
struct Prepend {
    first: Option<Frame<Bytes>>,
    rest: Body,
}

impl Prepend {
    fn wrap(first: Frame<Bytes>, rest: Body) -> Body {
        Prepend {
            first: Some(first),
            rest,
        }
        .boxed_unsync()
    }
}

impl http_body::Body for Prepend {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }
}

/// The gateway's answer when the origin exchange fails.
fn origin_failure(app: &App, e: crate::origin::OriginError) -> GatewayError {
    use crate::origin::OriginError;
    tracing::warn!(app = %app.name, error = %e, "origin request failed");
    GatewayError::OriginUnavailable(
        match e {
            e if e.is_connect() => "connection refused or unreachable",
            OriginError::Malformed(_) => "the origin sent a malformed response",
            _ => "the origin closed the connection",
        }
        .into(),
    )
}

/// The origin's URI for a request target: its scheme and authority, its base path (if
/// any) in front of the target. Without a base path nothing is copied.
fn origin_uri(base: &Uri, path_and_query: PathAndQuery) -> Result<Uri, GatewayError> {
    let prefix = base.path().trim_end_matches('/');
    let mut parts = http::uri::Parts::default();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    parts.path_and_query = Some(if prefix.is_empty() {
        path_and_query
    } else {
        PathAndQuery::try_from(format!("{prefix}{path_and_query}"))
            .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded".into()))?
    });
    Uri::from_parts(parts)
        .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded".into()))
}

/// Copies bytes both ways between the upgraded client and origin connections until
/// either side closes, or until the token that opened the tunnel is revoked.
async fn tunnel(
    set: Arc<RevocationSet>,
    metrics: Arc<Metrics>,
    v: Arc<Verified>,
    client: OnUpgrade,
    origin: OnUpgrade,
) {
    let (client, origin) = match tokio::try_join!(client, origin) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut origin = TokioIo::new(origin);
    let mut changes = set.subscribe();
    let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            changed = changes.changed() => {
                if changed.is_err() || set.check(&v.claims, true).is_some() {
                    metrics.tunnels_closed_on_revocation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(sid = %v.claims.sid, user = %v.claims.email, "closing a tunnel: its token was revoked");
                    return;
                }
            }
        }
    }
}

type Wait = Pin<Box<dyn Future<Output = tokio::sync::watch::Receiver<u64>> + Send>>;

/// A response body that ends with an error as soon as its token is revoked.
struct Revocable {
    inner: Body,
    set: Arc<RevocationSet>,
    metrics: Arc<Metrics>,
    v: Arc<Verified>,
    wait: Wait,
}

fn arm(mut rx: tokio::sync::watch::Receiver<u64>) -> Wait {
    Box::pin(async move {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        rx
    })
}

impl Revocable {
    fn wrap(set: Arc<RevocationSet>, metrics: Arc<Metrics>, v: Arc<Verified>, inner: Body) -> Body {
        let wait = arm(set.subscribe());
        Revocable {
            inner,
            set,
            metrics,
            v,
            wait,
        }
        .boxed_unsync()
    }
}

impl http_body::Body for Revocable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        while let Poll::Ready(rx) = self.wait.as_mut().poll(cx) {
            if self.set.check(&self.v.claims, true).is_some() {
                self.metrics
                    .tunnels_closed_on_revocation
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Poll::Ready(Some(Err("token revoked".into())));
            }
            self.wait = arm(rx);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_uri_keeps_the_target_and_prefixes_a_base_path() {
        let pq = PathAndQuery::from_static("/x/y?z=1");
        let plain: Uri = "http://127.0.0.1:3000".parse().unwrap();
        assert_eq!(
            origin_uri(&plain, pq.clone()).unwrap().to_string(),
            "http://127.0.0.1:3000/x/y?z=1"
        );
        let based: Uri = "http://127.0.0.1:3000/base/".parse().unwrap();
        assert_eq!(
            origin_uri(&based, pq).unwrap().to_string(),
            "http://127.0.0.1:3000/base/x/y?z=1"
        );
    }
}
