//! The control port: admin API (revocations, sessions, users), peer API (sync), health,
//! readiness and metrics. One route table says, for every path, which methods it takes
//! and who may call it: anyone (health), an admin (`Authorization: Bearer <token>`,
//! checked in constant time against the SHA-256 hashes in `[[control.admin]]`), a
//! peer (the cluster's peer token, and with `[control] client_ca` a client certificate
//! the TLS handshake verified), or a webhook sender (the body's HMAC signature, checked
//! by the hook's handler).

mod admin;
mod bulk;
pub mod client;
mod health;
mod peer_api;

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::cluster::docs::DocStore;
use crate::metrics::Metrics;
use crate::revocation::engine::{Engine, RevokeError};
use crate::runtime::Live;
use crate::secrets::ct_eq;
use crate::session::registry::Registry;
use crate::sync::PeerSync;
use crate::triggers::Signals;
use crate::web::body::{self, Body};
use crate::web::router::{Miss, Routes, allow_header};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    Method(Vec<Method>),
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    fn response(&self) -> Response<Body> {
        let status = match self {
            ControlError::Unauthorized => StatusCode::UNAUTHORIZED,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound => StatusCode::NOT_FOUND,
            ControlError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut r = body::json(status, &json!({ "error": self.to_string() }));
        let h = r.headers_mut();
        match self {
            ControlError::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            ControlError::Method(allowed) => {
                if let Ok(v) = http::HeaderValue::from_str(&allow_header(allowed)) {
                    h.insert(header::ALLOW, v);
                }
            }
            _ => {}
        }
        r
    }
}

impl From<RevokeError> for ControlError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::Invalid(m) => ControlError::BadRequest(m),
            RevokeError::Durability(m) => ControlError::Internal(m),
        }
    }
}

impl From<Miss> for ControlError {
    fn from(m: Miss) -> Self {
        match m {
            Miss::NotFound => ControlError::NotFound,
            Miss::MethodNotAllowed(allowed) => ControlError::Method(allowed),
        }
    }
}

type Res = Result<Response<Body>, ControlError>;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    Anyone,
    Admin,
    Peer,
    /// A signed webhook: the handler checks the signature (the HMAC is the credential).
    Hook,
}

#[derive(Clone, Copy, Debug)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Revoke,
    Revocations,
    Bulk,
    Sessions,
    DeleteSession,
    Users,
    Selftest,
    LastSelftest,
    PeerPush,
    PeerDigest,
    PeerEntries,
    PeerSessions,
    PeerUsers,
    PeerBuckets,
    PeerPull,
    PeerCheck,
    PeerClaim,
    PeerFailure,
    PeerDocsPush,
    PeerDocsList,
    PeerDocsDigest,
    Hook,
}

fn routes() -> Routes<(Guard, Route)> {
    use Guard::*;
    use Route::*;
    let (get, post) = (&[Method::GET][..], &[Method::POST][..]);
    Routes::new()
        .route(get, "/healthz", (Anyone, Healthz))
        .route(get, "/readyz", (Anyone, Readyz))
        .route(get, "/metrics", (Anyone, Metrics))
        .route(post, "/v1/revocations", (Admin, Revoke))
        .route(get, "/v1/revocations", (Admin, Revocations))
        .route(post, "/v1/revocations/bulk", (Admin, Bulk))
        .route(get, "/v1/sessions", (Admin, Sessions))
        .route(
            &[Method::DELETE],
            "/v1/sessions/{sid}",
            (Admin, DeleteSession),
        )
        .route(get, "/v1/users", (Admin, Users))
        .route(post, "/v1/selftest", (Admin, Selftest))
        .route(get, "/v1/selftest", (Admin, LastSelftest))
        .route(post, "/v1/peer/revocations", (Peer, PeerPush))
        .route(get, "/v1/peer/digest", (Peer, PeerDigest))
        .route(get, "/v1/peer/entries", (Peer, PeerEntries))
        .route(get, "/v1/peer/sessions", (Peer, PeerSessions))
        .route(get, "/v1/peer/users", (Peer, PeerUsers))
        .route(get, "/v1/peer/buckets", (Peer, PeerBuckets))
        .route(post, "/v1/peer/pull", (Peer, PeerPull))
        .route(post, "/v1/peer/check", (Peer, PeerCheck))
        .route(post, "/v1/peer/claim", (Peer, PeerClaim))
        .route(post, "/v1/peer/failure", (Peer, PeerFailure))
        .route(post, "/v1/peer/docs", (Peer, PeerDocsPush))
        .route(get, "/v1/peer/docs", (Peer, PeerDocsList))
        .route(get, "/v1/peer/docs/digest", (Peer, PeerDocsDigest))
        .route(post, "/v1/hooks/{name}", (Guard::Hook, Route::Hook))
}

/// What the control port serves from.
pub struct Control {
    live: Arc<Live>,
    engine: Arc<Engine>,
    sync: Arc<PeerSync>,
    cluster: Cluster,
    sessions: Arc<Registry>,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    signals: Arc<Signals>,
    docs: Arc<DocStore>,
    routes: Routes<(Guard, Route)>,
}

pub struct ControlParts {
    pub live: Arc<Live>,
    pub engine: Arc<Engine>,
    pub sync: Arc<PeerSync>,
    pub cluster: Cluster,
    pub sessions: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    /// The webhook endpoints and the signal counters.
    pub signals: Arc<Signals>,
    /// The documents peers push and pull.
    pub docs: Arc<DocStore>,
}

impl Control {
    pub fn new(p: ControlParts) -> Result<Self, matchit::InsertError> {
        Ok(Self {
            live: p.live,
            engine: p.engine,
            sync: p.sync,
            cluster: p.cluster,
            sessions: p.sessions,
            auth: p.auth,
            metrics: p.metrics,
            signals: p.signals,
            docs: p.docs,
            routes: routes().build()?,
        })
    }

    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ControlError::Unauthorized | ControlError::Forbidden(_)) {
                    tracing::warn!(%peer, %method, path, reason = %e, "control call refused");
                }
                e.response()
            }
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Res {
        let found = self.routes.find(req.method(), req.uri().path())?;
        let (guard, route) = *found.handler;
        let sid = found.param("sid").to_string();
        let hook = found.param("name").to_string();
        let actor = match guard {
            Guard::Anyone | Guard::Hook => String::new(),
            Guard::Admin => self.admin(req.headers())?,
            Guard::Peer => {
                self.peer_certificate(&req)?;
                self.peer_auth(req.headers())?;
                String::new()
            }
        };
        let mut resp = self.dispatch(route, actor, sid, hook, req).await?;
        if matches!(guard, Guard::Peer) {
            // The caller's reading of the cluster's time (see `crate::clock::Ticker`).
            resp.headers_mut().insert(
                crate::sync::client::CLOCK_HEADER,
                http::HeaderValue::from(self.engine.cluster_now_us()),
            );
        }
        Ok(resp)
    }

    async fn dispatch(
        &self,
        route: Route,
        actor: String,
        sid: String,
        hook: String,
        req: Request<Incoming>,
    ) -> Res {
        let query = req.uri().query().map(str::to_string);
        let q = crate::web::query::map(query.as_deref());
        use Route::*;
        match route {
            Healthz => Ok(self.healthz()),
            Readyz => Ok(self.readyz()),
            Metrics => Ok(self.metrics_page()),
            Revoke => self.revoke_one(actor, req).await,
            Revocations => self.list_revocations(&q).await,
            Bulk => self.bulk(actor, req).await,
            Sessions => self.sessions(q.get("user").map(String::as_str)).await,
            DeleteSession => self.delete_session(actor, sid).await,
            Users => self.users().await,
            Selftest => {
                let b = read_body(req.into_body()).await?;
                Ok(crate::sync::http::run_selftest(&self.sync, &actor, &b).await)
            }
            LastSelftest => Ok(crate::sync::http::last_selftest(&self.sync).await),
            PeerPush => self.peer_push(req).await,
            PeerDigest => Ok(self.peer_digest()),
            PeerEntries => Ok(self.peer_entries()),
            PeerSessions => Ok(self.peer_sessions(q.get("user").map(String::as_str))),
            PeerUsers => Ok(self.peer_users()),
            PeerBuckets => Ok(crate::sync::http::buckets(&self.sync).await),
            PeerPull => {
                let b = read_body(req.into_body()).await?;
                Ok(crate::sync::http::pull(&self.sync, &b).await)
            }
            PeerCheck => {
                let b = read_body(req.into_body()).await?;
                Ok(crate::sync::http::check(&self.sync, &b).await)
            }
            PeerClaim => self.peer_claim(req).await,
            PeerFailure => self.peer_failure(req).await,
            PeerDocsPush => {
                let b = read_body(req.into_body()).await?;
                Ok(crate::sync::docs::receive(&self.docs, &b).await)
            }
            PeerDocsList => Ok(crate::sync::docs::list(&self.docs)),
            PeerDocsDigest => Ok(crate::sync::docs::digest(&self.docs)),
            Hook => Ok(self.signals.webhook(&hook, req).await),
        }
    }

    /// The admin's name when the bearer token matches one; every admin is compared, so
    /// the time taken does not depend on which (if any) matched.
    fn admin(&self, h: &HeaderMap) -> Result<String, ControlError> {
        let token = bearer(h).ok_or(ControlError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        let rt = self.live.load();
        let mut found = None;
        for a in &rt.config.control.admins {
            if ct_eq(&digest, &a.token_sha256) && found.is_none() {
                found = Some(a.name.clone());
            }
        }
        found.ok_or(ControlError::Unauthorized)
    }

    /// With `[control] client_ca`, the peer API answers only connections whose client
    /// certificate chained to it; checked before the token, so a caller without one
    /// learns nothing about the token.
    fn peer_certificate<B>(&self, req: &Request<B>) -> Result<(), ControlError> {
        let rt = self.live.load();
        let needed = rt.config.control.tls.as_ref();
        if !needed.is_some_and(crate::config::ControlTls::peers_need_certificate) {
            return Ok(());
        }
        match req.extensions().get::<crate::tls::VerifiedClientCert>() {
            Some(_) => Ok(()),
            None => Err(ControlError::Forbidden(
                "the peer API needs a client certificate signed by the cluster's CA",
            )),
        }
    }

    fn peer_auth(&self, h: &HeaderMap) -> Result<(), ControlError> {
        let token = bearer(h).ok_or(ControlError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        match self.live.load().peer_token_sha256 {
            Some(want) if ct_eq(&digest, &want) => Ok(()),
            _ => Err(ControlError::Unauthorized),
        }
    }
}

fn bearer(h: &HeaderMap) -> Option<&[u8]> {
    let v = h.get(header::AUTHORIZATION)?.as_bytes();
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.trim_ascii())
}

async fn read_body(b: Incoming) -> Result<Bytes, ControlError> {
    Ok(Limited::new(b, MAX_BODY)
        .collect()
        .await
        .map_err(|_| ControlError::BadRequest(format!("body larger than {MAX_BODY} bytes")))?
        .to_bytes())
}

fn json_of<T: serde::Serialize>(v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => body::json_bytes(StatusCode::OK, Bytes::from(b)),
        Err(e) => ControlError::Internal(e.to_string()).response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_table_builds() {
        assert!(super::routes().build().is_ok());
    }
}
