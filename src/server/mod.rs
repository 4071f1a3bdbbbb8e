//! Listeners and lifecycle: the TLS data plane (and optional plaintext listener), the
//! control port, config reload on file change and SIGHUP, background maintenance and
//! graceful shutdown. `start` takes a config and a clock, so tests run the real server
//! in-process on 127.0.0.1:0.

mod admission;
mod deadline;
mod node;

pub use node::Node;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::metrics;
use crate::proxy::ConnInfo;
use crate::proxy::framing_guard::FramingGuard;
use crate::web::body::Body;
use admission::{Admission, Caps, Gate, Permit};
use deadline::{Activity, Tracked, Watched, drive};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("signing keys: {0}")]
    Keys(#[from] crate::session::keys::KeyError),
    #[error("revocation log: {0}")]
    RevocationLog(#[from] crate::revocation::log::LogError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// A running gateway.
pub struct Handle {
    pub https_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub control_addr: SocketAddr,
    pub gateway: Arc<Node>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    // Kept alive for as long as the gateway runs.
    _watcher: Option<notify::RecommendedWatcher>,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Io {
            what,
            path: addr.to_string(),
            source,
        })
}

pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Handle, StartError> {
    crate::tls::provider();
    let (listen, http_listen, control_listen) =
        (config.listen, config.http_listen, config.control.listen);
    let gw = Node::build(config, clock)?;
    let tls_l = bind(listen, "cannot listen on gateway.listen").await?;
    let http_l = match http_listen {
        Some(a) => Some(bind(a, "cannot listen on gateway.http_listen").await?),
        None => None,
    };
    let control_l = bind(control_listen, "cannot listen on control.listen").await?;
    let https_addr = local(&tls_l);
    let http_addr = http_l.as_ref().map(local);
    let control_addr = local(&control_l);
    let (shutdown, rx) = watch::channel(false);
    // The data-plane caps hold for both data listeners together.
    let data_gate = Admission::new(Gate::Data, gw.metrics.clone());
    let control_gate = Admission::new(Gate::Control, gw.metrics.clone());

    let mut listeners = vec![tokio::spawn(accept_loop(
        tls_l,
        gw.clone(),
        rx.clone(),
        Plane::Tls,
        data_gate.clone(),
    ))];
    if let Some(l) = http_l {
        listeners.push(tokio::spawn(accept_loop(
            l,
            gw.clone(),
            rx.clone(),
            Plane::Plain,
            data_gate,
        )));
    }
    listeners.push(tokio::spawn(accept_loop(
        control_l,
        gw.clone(),
        rx.clone(),
        Plane::Control,
        control_gate,
    )));
    let mut background = vec![tokio::spawn(maintenance(gw.clone(), rx.clone()))];
    background.extend(gw.sync.spawn(rx.clone()));
    background.extend(gw.spawn_signals(rx.clone()));
    if let Some(r) = &gw.redis {
        background.extend(r.spawn(rx.clone()));
    }
    let auth = gw.auth.clone();
    background.push(tokio::spawn(
        gw.idps.clone().run(move || auth.now_us(), rx.clone()),
    ));
    let watcher = watch_config(gw.clone());
    tracing::info!(
        https = %https_addr, http = ?http_addr, control = %control_addr,
        node = %gw.node_id, generation = gw.generation(),
        "portcullis is listening"
    );
    Ok(Handle {
        https_addr,
        http_addr,
        control_addr,
        gateway: gw,
        shutdown,
        listeners,
        background,
        _watcher: watcher,
    })
}

fn local(l: &TcpListener) -> SocketAddr {
    l.local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Handle {
    /// Stops accepting, lets in-flight requests finish within `shutdown_grace`, then
    /// stops background work.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for l in self.listeners {
            let _ = l.await;
        }
        for b in self.background {
            b.abort();
        }
        // Every request has finished: its access line reaches the log before we return.
        crate::access_log::flush();
        tracing::info!("portcullis stopped");
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plane {
    Tls,
    Plain,
    Control,
}

/// The same HTTP/1 settings on hyper's builder and on the auto builder's.
macro_rules! h1_settings {
    ($b:expr, $max_header:expr, $limits:expr) => {
        $b.timer(TokioTimer::new())
            // A backstop: the connection deadlines (deadline.rs) end idle connections
            // and late heads first.
            .header_read_timeout($limits.request_head_timeout + $limits.idle_timeout)
            .max_buf_size($max_header.max(8192))
            .keep_alive(true)
    };
}

/// The same HTTP/2 settings on hyper's builder and on the auto builder's.
macro_rules! h2_settings {
    ($b:expr, $max_header:expr, $limits:expr) => {
        $b.timer(TokioTimer::new())
            .max_header_list_size($max_header.min(u32::MAX as usize) as u32)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams($limits.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams($limits.h2_max_pending_reset_streams)
            .max_local_error_reset_streams($limits.h2_max_local_reset_streams)
    };
}

/// The HTTP settings of one config generation: HTTP/1 and HTTP/2 for TLS connections
/// (ALPN decides), the sniffing builder for plaintext and the control port.
struct Protocols {
    generation: u64,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(gw: &Node) -> Self {
        let rt = gw.live.load();
        let (max_header, limits) = (rt.config.max_header_bytes, &rt.config.limits);
        let mut h1 = http1::Builder::new();
        h1_settings!(h1, max_header, limits);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2_settings!(h2, max_header, limits);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        h1_settings!(auto.http1(), max_header, limits);
        h2_settings!(auto.http2(), max_header, limits);
        Self {
            generation: gw.generation(),
            h1,
            h2,
            auto,
        }
    }
}

/// The caps a new connection on `plane` from `ip` is admitted under.
fn caps(plane: Plane, rt: &crate::runtime::Runtime, ip: std::net::IpAddr) -> Caps {
    let l = &rt.config.limits;
    match plane {
        Plane::Control => Caps {
            total: l.max_control_connections,
            per_address: None,
        },
        // A load balancer in front speaks for many clients.
        _ if rt.is_trusted(ip) => Caps {
            total: l.max_connections,
            per_address: None,
        },
        _ => Caps {
            total: l.max_connections,
            per_address: Some(l.max_connections_per_address),
        },
    }
}

/// What every connection task gets from its accept loop.
struct ConnCtx {
    gw: Arc<Node>,
    protocols: Arc<Protocols>,
    shutdown: watch::Receiver<bool>,
    permit: Permit,
    /// Dropped when the task ends: the loop waits for all of them at shutdown.
    _done: mpsc::Sender<()>,
}

async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
    plane: Plane,
    admission: Arc<Admission>,
) {
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut protocols = Arc::new(Protocols::new(&gw));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, ?plane, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let caps = caps(plane, &gw.live.load(), peer.ip());
                let permit = match admission.admit(peer.ip(), caps) {
                    Ok(p) => p,
                    Err(why) => {
                        tracing::debug!(%peer, ?plane, ?why, "connection refused: limit reached");
                        continue;
                    }
                };
                if protocols.generation != gw.generation() {
                    protocols = Arc::new(Protocols::new(&gw));
                }
                let _ = stream.set_nodelay(true);
                let ctx = ConnCtx {
                    gw: gw.clone(),
                    protocols: protocols.clone(),
                    shutdown: shutdown.clone(),
                    permit,
                    _done: done.clone(),
                };
                tokio::spawn(serve_conn(stream, peer, ctx, plane));
            }
            _ = shutdown.changed() => break,
        }
    }
    drop((listener, done));
    let grace = gw.live.load().config.shutdown_grace;
    tokio::select! {
        _ = all_done.recv() => tracing::debug!(?plane, "all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?plane, "shutdown grace elapsed; closing remaining connections"),
    }
}

async fn serve_conn(stream: TcpStream, peer: SocketAddr, ctx: ConnCtx, plane: Plane) {
    let limits = ctx.gw.live.load().config.limits.clone();
    // The first request head is due this long after accept, TLS handshake included.
    let first_head = tokio::time::Instant::now() + limits.request_head_timeout;
    let (head, idle) = (limits.request_head_timeout, limits.idle_timeout);
    match plane {
        Plane::Tls => serve_tls(stream, peer, ctx, first_head).await,
        Plane::Plain => {
            let activity = Activity::new(first_head, head, idle, true);
            let (io, flag) = FramingGuard::new(stream, max_head(&ctx.gw));
            let conn = ConnInfo::new(peer, None, false, Some(flag));
            let io = TokioIo::new(Watched::new(io, Some(activity.clone()), ctx.permit));
            let svc = data_service(&ctx.gw, conn, &activity);
            let c = ctx.protocols.auto.serve_connection_with_upgrades(io, svc);
            let graceful = |c: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
            let res = drive(c, graceful, &activity, ctx.shutdown, &ctx.gw.metrics).await;
            note_end(res, &ctx.gw.metrics);
        }
        Plane::Control => serve_control(stream, peer, ctx, first_head).await,
    }
}

/// Serves one control-port connection: plain HTTP, or HTTPS when the config in force
/// has `[control] tls_cert` (read per connection, so a reload applies to the next one).
/// The handshake counts against the first request head's deadline.
async fn serve_control(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: ConnCtx,
    first_head: tokio::time::Instant,
) {
    let Some(tls) = ctx.gw.live.load().control_tls.clone() else {
        return serve_control_io(stream, peer, false, ctx, first_head).await;
    };
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    let by = first_head.min(tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT);
    let stream = match tokio::time::timeout_at(by, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            // A TLS failure (no or an untrusted client certificate, a bad hello).
            tracing::warn!(%peer, error = %e, "control port: TLS handshake refused");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "control port: connection closed in the handshake");
            return;
        }
        Err(_) => {
            metrics::inc(&ctx.gw.metrics.limits.head_timeouts);
            return;
        }
    };
    // With a client verifier every certificate presented was checked in the handshake.
    let verified = stream.get_ref().1.peer_certificates().is_some();
    serve_control_io(stream, peer, verified, ctx, first_head).await;
}

/// Requests on a connection whose client certificate was verified carry
/// [`crate::tls::VerifiedClientCert`] for the route guard.
async fn serve_control_io<IO>(
    io: IO,
    peer: SocketAddr,
    verified: bool,
    ctx: ConnCtx,
    first_head: tokio::time::Instant,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = ctx.gw.live.load().config.limits.clone();
    let (head, idle) = (limits.request_head_timeout, limits.idle_timeout);
    let activity = Activity::new(first_head, head, idle, true);
    let control = ctx.gw.control.clone();
    let svc = tracked(&activity, move |mut req: Request<Incoming>| {
        let control = control.clone();
        if verified {
            req.extensions_mut().insert(crate::tls::VerifiedClientCert);
        }
        async move { control.handle(peer, req).await }
    });
    let io = TokioIo::new(Watched::new(io, Some(activity.clone()), ctx.permit));
    let c = ctx.protocols.auto.serve_connection(io, svc);
    let graceful = |c: Pin<&mut _>| auto::Connection::graceful_shutdown(c);
    let res = drive(c, graceful, &activity, ctx.shutdown, &ctx.gw.metrics).await;
    note_end(res, &ctx.gw.metrics);
}

/// A TLS connection: the handshake within the first head's deadline, then HTTP/2 or
/// HTTP/1 as ALPN decided (no protocol sniff).
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: ConnCtx,
    first_head: tokio::time::Instant,
) {
    let limits = ctx.gw.live.load().config.limits.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(ctx.gw.live.load().tls.clone());
    let by = first_head.min(tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT);
    let tls = match tokio::time::timeout_at(by, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics::inc(&ctx.gw.metrics.limits.head_timeouts);
            return;
        }
    };
    let sni = tls
        .get_ref()
        .1
        .server_name()
        .map(|s| s.to_ascii_lowercase());
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let (head, idle) = (limits.request_head_timeout, limits.idle_timeout);
    let activity = Activity::new(first_head, head, idle, !h2);
    let metrics = &ctx.gw.metrics;
    if h2 {
        // HTTP/2 frames its own messages: no framing guard.
        let conn = ConnInfo::new(peer, sni, true, None);
        let io = TokioIo::new(Watched::new(tls, None, ctx.permit));
        let svc = data_service(&ctx.gw, conn, &activity);
        let c = ctx.protocols.h2.serve_connection(io, svc);
        let graceful = |c: Pin<&mut _>| http2::Connection::graceful_shutdown(c);
        note_end(
            drive(c, graceful, &activity, ctx.shutdown, metrics).await,
            metrics,
        );
    } else {
        let (io, flag) = FramingGuard::new(tls, max_head(&ctx.gw));
        let conn = ConnInfo::new(peer, sni, true, Some(flag));
        let io = TokioIo::new(Watched::new(io, Some(activity.clone()), ctx.permit));
        let svc = data_service(&ctx.gw, conn, &activity);
        let c = ctx.protocols.h1.serve_connection(io, svc).with_upgrades();
        let graceful = |c: Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(c);
        note_end(
            drive(c, graceful, &activity, ctx.shutdown, metrics).await,
            metrics,
        );
    }
}

/// A service whose requests are in flight on `activity` until their response body is
/// dropped.
fn tracked<F, Fut>(
    activity: &Arc<Activity>,
    handle: F,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<Body>>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = activity.clone();
    service_fn(move |req| {
        let guard = activity.begin();
        let fut = handle(req);
        async move { Ok::<_, Infallible>(fut.await.map(|b| Tracked::new(b, guard))) }
    })
}

/// The data plane's service for one connection.
fn data_service(
    gw: &Node,
    conn: ConnInfo,
    activity: &Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<Body>>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    let conn = Arc::new(conn);
    let data = gw.data.clone();
    tracked(activity, move |req| {
        let (data, conn) = (data.clone(), conn.clone());
        async move { data.handle(conn, req).await }
    })
}

/// Counts HTTP/2 connections the gateway ended with a GOAWAY for the client's
/// behaviour (rapid reset, CONTINUATION flood, protocol errors).
fn note_end<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    res: Option<Result<(), E>>,
    metrics: &crate::metrics::Metrics,
) {
    let Some(Err(e)) = res else { return };
    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
    while let Some(err) = cur {
        if let Some(h2e) = err.downcast_ref::<h2::Error>() {
            if h2e.is_go_away() && !h2e.is_remote() {
                let i = match h2e.reason() {
                    Some(h2::Reason::ENHANCE_YOUR_CALM) => 0,
                    Some(h2::Reason::PROTOCOL_ERROR | h2::Reason::COMPRESSION_ERROR) => 1,
                    _ => 2,
                };
                metrics::inc(&metrics.limits.h2_goaway[i]);
                tracing::info!(reason = ?h2e.reason(), "HTTP/2 connection ended with GOAWAY");
            }
            return;
        }
        cur = err.source();
    }
}

/// The largest request head hyper buffers; the framing guard must track at least as
/// much, or a large head would switch it off.
fn max_head(gw: &Node) -> usize {
    gw.live.load().config.max_header_bytes.max(8192)
}

/// Periodic upkeep: drop revocations no live token can match, compact the log, journal
/// `last seen`, forget expired codes and old login failures.
async fn maintenance(gw: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut rounds: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        rounds += 1;
        let horizon = gw.revocation_horizon();
        let pruned = gw.revocations.prune(horizon);
        gw.engine.meta().prune(horizon);
        if pruned > 0 {
            tracing::info!(pruned, "dropped revocations older than any live token");
        }
        gw.sync
            .shared
            .sweep(gw.live.load().config.login.failure_window);
        gw.sessions
            .flush(gw.now_us(), crate::session::registry::KEEP_ENDED_US);
        // Compact the durable log (and prune Redis) every ten minutes.
        if rounds.is_multiple_of(60) {
            compact_revocation_log(&gw, horizon).await;
            if let Some(r) = &gw.redis {
                r.prune(horizon).await;
            }
        }
    }
}

async fn compact_revocation_log(gw: &Node, horizon: i64) {
    let log = gw.engine.log().clone();
    let res = tokio::task::spawn_blocking(move || {
        log.compact(|r| r.scope == crate::revocation::Scope::All || r.not_before_us >= horizon)
    })
    .await;
    match res {
        Ok(Ok(stats)) if stats.dropped > 0 => tracing::info!(
            kept = stats.kept,
            dropped = stats.dropped,
            "compacted the revocation log"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "revocation log compaction failed"),
        _ => {}
    }
}

/// Reloads when the config file changes (editors often replace the file, so the folder
/// is watched and events are filtered by name, then debounced).
fn watch_config(gw: Arc<Node>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let path = gw.live.config_path().to_path_buf();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into());
    let name = path.file_name()?.to_os_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the config file; SIGHUP still reloads"))
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config folder");
        return None;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the editor finish writing, then coalesce the burst of events.
            tokio::time::sleep(Duration::from_millis(250)).await;
            while rx.try_recv().is_ok() {}
            let g = gw.clone();
            let _ = tokio::task::spawn_blocking(move || g.reload()).await;
        }
    });
    Some(watcher)
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the config.
pub async fn run_until_signal(handle: Handle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(h)) => (t, h),
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                handle.shutdown().await;
                return;
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let g = handle.gateway.clone();
                    let _ = tokio::task::spawn_blocking(move || g.reload()).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    handle.shutdown().await;
}
