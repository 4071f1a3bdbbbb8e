//! Calls to the other nodes' control ports, authenticated with the cluster's peer
//! token, and what they tell about each peer's health (last answer, up or down, failed
//! pushes), for staleness, readiness and metrics. Peers are `http://` or `https://`;
//! each new connection to an `https://` peer uses the TLS config in force (the
//! cluster's roots and this node's client certificate), so a reload applies to it.

use super::peer::PeerError;
use crate::clock::{Micros, Ticker};
use crate::runtime::Live;
use crate::web::body::{self, Body};
use bytes::Bytes;
use dashmap::DashMap;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The header of every answer to a peer call: the cluster's time as the answering node
/// knew it when it answered (microseconds since the Unix epoch), so each node stamps
/// tokens and revocations in the cluster's time (see [`crate::clock::Ticker`]).
pub const CLOCK_HEADER: &str = "portcullis-clock";

/// Small calls to a peer (digests, pushes, session lists) must answer within this.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// A pull can carry a whole set (a million entries is ~33 MB).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(60);

/// What this node has seen of each peer.
#[derive(Default)]
pub struct PeerHealth {
    last_heard: DashMap<String, Micros>,
    /// The same moments on the monotonic clock, for staleness: a step of the wall
    /// clock must not make a cut-off node think it heard from its peers recently.
    heard_at: DashMap<String, Instant>,
    up: DashMap<String, bool>,
    push_failures: DashMap<String, u64>,
}

impl PeerHealth {
    pub fn heard(&self, peer: &str, now: Micros) {
        self.last_heard.insert(peer.to_string(), now);
        self.heard_at.insert(peer.to_string(), Instant::now());
        self.up.insert(peer.to_string(), true);
    }
    /// How long since `peer` last answered (`None`: never since this node started).
    pub fn silent_for(&self, peer: &str) -> Option<Duration> {
        self.heard_at.get(peer).map(|at| at.elapsed())
    }
    pub fn failed(&self, peer: &str) {
        self.up.insert(peer.to_string(), false);
    }
    pub fn push_failed(&self, peer: &str) {
        *self.push_failures.entry(peer.to_string()).or_default() += 1;
    }
    pub fn last_heard(&self, peer: &str) -> Option<Micros> {
        self.last_heard.get(peer).map(|v| *v)
    }
    pub fn is_up(&self, peer: &str) -> bool {
        self.up.get(peer).is_some_and(|u| *u)
    }
    pub fn push_failures(&self, peer: &str) -> u64 {
        self.push_failures.get(peer).map_or(0, |v| *v)
    }
}

/// Connects to a peer: plain TCP for `http://`, TLS with the runtime's `peer_tls` for
/// `https://` (read at each connect, not fixed when the client was built).
#[derive(Clone)]
struct PeerConnector {
    live: Arc<Live>,
    tcp: HttpConnector,
}

impl tower_service::Service<http::Uri> for PeerConnector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let tls = self.live.load().peer_tls.clone();
        HttpsConnector::from((self.tcp.clone(), tls)).call(dst)
    }
}

/// An error with its causes ("client error (Connect): invalid peer certificate:
/// UnknownIssuer"), so a refused TLS handshake says why in the log.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

pub struct PeerClient {
    live: Arc<Live>,
    node_id: String,
    ticker: Arc<Ticker>,
    http: Client<PeerConnector, Body>,
    pub health: PeerHealth,
}

impl PeerClient {
    pub fn new(live: Arc<Live>, node_id: String, ticker: Arc<Ticker>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(PEER_TIMEOUT));
        connector.set_nodelay(true);
        // The TLS layer wraps it and takes `https://` URLs.
        connector.enforce_http(false);
        let connector = PeerConnector {
            live: live.clone(),
            tcp: connector,
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self {
            live,
            node_id,
            ticker,
            http,
            health: PeerHealth::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The peers of the config in force.
    pub fn peers(&self) -> Vec<String> {
        self.live.load().config.sync.peers.clone()
    }

    pub async fn call(
        &self,
        peer: &str,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Bytes, PeerError> {
        self.call_with(peer, method, path, json, PEER_TIMEOUT).await
    }

    /// One authenticated call; the whole exchange (body included) must end within `limit`.
    pub async fn call_with(
        &self,
        peer: &str,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        limit: Duration,
    ) -> Result<Bytes, PeerError> {
        let req = self.request(peer, method, path, json)?;
        let fut = async {
            let sent = Instant::now();
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| PeerError::Unreachable(causes(&e)))?;
            self.heard_clock(resp.headers(), sent.elapsed());
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| PeerError::Unreachable(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(PeerError::Status(status));
            }
            Ok(bytes)
        };
        let out = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(PeerError::Timeout),
        };
        match &out {
            Ok(_) => self.health.heard(peer, self.ticker.now_us()),
            Err(_) => self.health.failed(peer),
        }
        out
    }

    /// Takes the peer's reading of the cluster's time from an answer's head (see
    /// [`CLOCK_HEADER`]).
    fn heard_clock(&self, headers: &http::HeaderMap, rtt: Duration) {
        let reading = headers
            .get(CLOCK_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Micros>().ok());
        if let Some(us) = reading {
            let max_lead = self.live.load().config.session.clock_skew;
            self.ticker.heard_clock(us, rtt, max_lead);
        }
    }

    fn request(
        &self,
        peer: &str,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Request<Body>, PeerError> {
        let token = self
            .live
            .load()
            .peer_token
            .clone()
            .ok_or(PeerError::NoToken)?;
        let uri: http::Uri = format!("{peer}{path}")
            .parse()
            .map_err(|_| PeerError::Url(peer.to_string()))?;
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("portcullis-node", self.node_id.as_str());
        let body = match json {
            Some(j) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                body::full(j)
            }
            None => body::empty(),
        };
        b.body(body).map_err(|e| PeerError::Url(e.to_string()))
    }
}
