//! Listeners and lifecycle: the TLS data plane (and optional plaintext listener), the
//! control port, config reload on file change and SIGHUP, background maintenance and
//! graceful shutdown. `start` takes a config and a clock, so tests run the real server
//! in-process on 127.0.0.1:0.

mod node;

pub use node::Node;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::proxy::ConnInfo;
use crate::proxy::framing_guard::FramingGuard;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
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

    let mut listeners = vec![tokio::spawn(accept_loop(
        tls_l,
        gw.clone(),
        rx.clone(),
        Plane::Tls,
    ))];
    if let Some(l) = http_l {
        listeners.push(tokio::spawn(accept_loop(
            l,
            gw.clone(),
            rx.clone(),
            Plane::Plain,
        )));
    }
    listeners.push(tokio::spawn(accept_loop(
        control_l,
        gw.clone(),
        rx.clone(),
        Plane::Control,
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

fn builder(gw: &Node) -> auto::Builder<TokioExecutor> {
    let rt = gw.live.load();
    let max_header = rt.config.max_header_bytes;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(max_header.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_header.min(u32::MAX as usize) as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
    plane: Plane,
) {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(builder(&gw));
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
                let _ = stream.set_nodelay(true);
                let watcher = graceful.watcher();
                let gw = gw.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    serve_conn(stream, peer, gw, builder, watcher, plane).await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let grace = gw.live.load().config.shutdown_grace;
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!(?plane, "all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?plane, "shutdown grace elapsed; closing remaining connections"),
    }
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    gw: Arc<Node>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    plane: Plane,
) {
    match plane {
        Plane::Tls => {
            let acceptor = tokio_rustls::TlsAcceptor::from(gw.live.load().tls.clone());
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let sni = tls
                .get_ref()
                .1
                .server_name()
                .map(|s| s.to_ascii_lowercase());
            if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                // HTTP/2 frames its own messages: no guard needed.
                let conn = ConnInfo::new(peer, sni, true, None);
                serve_data(tls, conn, gw, &builder, watcher).await;
            } else {
                let (io, flag) = FramingGuard::new(tls, max_head(&gw));
                let conn = ConnInfo::new(peer, sni, true, Some(flag));
                serve_data(io, conn, gw, &builder, watcher).await;
            }
        }
        Plane::Plain => {
            let (io, flag) = FramingGuard::new(stream, max_head(&gw));
            let conn = ConnInfo::new(peer, None, false, Some(flag));
            serve_data(io, conn, gw, &builder, watcher).await;
        }
        Plane::Control => serve_control(stream, peer, gw, &builder, watcher).await,
    }
}

/// Serves one control-port connection: plain HTTP, or HTTPS when the config in force
/// has `[control] tls_cert` (read per connection, so a reload applies to the next one).
async fn serve_control(
    stream: TcpStream,
    peer: SocketAddr,
    gw: Arc<Node>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let Some(tls) = gw.live.load().control_tls.clone() else {
        return serve_control_io(stream, peer, false, gw, builder, watcher).await;
    };
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
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
        Err(_) => return,
    };
    // With a client verifier every certificate presented was checked in the handshake.
    let verified = stream.get_ref().1.peer_certificates().is_some();
    serve_control_io(stream, peer, verified, gw, builder, watcher).await;
}

/// Requests on a connection whose client certificate was verified carry
/// [`crate::tls::VerifiedClientCert`] for the route guard.
async fn serve_control_io<IO>(
    io: IO,
    peer: SocketAddr,
    verified: bool,
    gw: Arc<Node>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let control = gw.control.clone();
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let control = control.clone();
        if verified {
            req.extensions_mut().insert(crate::tls::VerifiedClientCert);
        }
        async move { Ok::<_, Infallible>(control.handle(peer, req).await) }
    });
    let c = builder.serve_connection(TokioIo::new(io), svc);
    let _ = watcher.watch(c.into_owned()).await;
}

/// Serves one data-plane connection (TLS or plain, guarded or not) until it closes.
async fn serve_data<IO>(
    io: IO,
    conn: ConnInfo,
    gw: Arc<Node>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let data = gw.data.clone();
    let svc = service_fn(move |req| {
        let (data, conn) = (data.clone(), conn.clone());
        async move { Ok::<_, Infallible>(data.handle(conn, req).await) }
    });
    let c = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let _ = watcher.watch(c.into_owned()).await;
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
