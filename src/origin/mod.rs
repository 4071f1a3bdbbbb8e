//! A lean HTTP/1.1 client for origins. The request's own task checks a connection out
//! of a per-thread pool, writes the request and reads the response on it: no connection
//! task, no channels, no lock. (hyper-util's pooled client, which the gateway still
//! uses for protocol upgrades and for calls between nodes, hands every request to a
//! connection task through a channel and the response back through another; on the
//! hot path those hops and wake-ups cost more than all of the gateway's own checks.)

pub(crate) mod body;
pub mod head;
mod pool;

pub use body::OriginBody;

use crate::web::body::{self as gbody, Body, BoxError};
use bytes::BytesMut;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, Sleep};

/// Process-wide counts of the origin side's rare events, for the metrics page. Nothing
/// here is touched on an ordinary request (a reused connection counts nothing).
pub struct Stats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub retries: AtomicU64,
    pub malformed: AtomicU64,
    /// Requests abandoned after part of them was sent (the request body failed): the
    /// connection was reset, so the origin cannot take them as complete.
    pub aborted: AtomicU64,
}

pub static STATS: Stats = Stats {
    connects: AtomicU64::new(0),
    connect_failures: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    malformed: AtomicU64::new(0),
    aborted: AtomicU64::new(0),
};

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A new connection's timer before its first request sets it.
const IDLE_DEADLINE: Duration = Duration::from_secs(3600);

/// Largest response head accepted from an origin.
const MAX_HEAD: usize = 64 * 1024;
/// How much is read from the origin at a time.
const READ_CHUNK: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("no response head in time")]
    Timeout,
    #[error("the origin closed the connection")]
    Closed,
    #[error("i/o with the origin: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("request body: {0}")]
    RequestBody(BoxError),
}

impl OriginError {
    /// Whether the request may be sent again on a fresh connection: a pooled
    /// connection the origin had already closed fails before any response byte.
    fn is_stale_connection(&self) -> bool {
        match self {
            OriginError::Closed => true,
            OriginError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// One connection to an origin with its read buffer and its response-head timer.
pub(crate) struct Conn {
    io: TcpStream,
    rbuf: BytesMut,
    names: head::HeaderNames,
    /// Reset for each request. Moving a registered timer's deadline later is a single
    /// atomic update in tokio, where a timer per request would be inserted into and
    /// removed from the timer wheel every time.
    deadline: Pin<Box<Sleep>>,
}

/// Where requests go: the origin's `host:port` (also the pool's key), how long a new
/// connection may take, and how long the response head may take in all.
pub struct Target<'a> {
    pub authority: &'a Arc<str>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

/// How the request body goes on the wire.
enum ReqFraming {
    None,
    Length,
    Chunked,
}

/// Sends `req` (origin-form target, Host set, hop-by-hop headers already removed) and
/// returns the response with a body that streams from the connection. The connection
/// goes back to the pool when the body has been read to its end.
pub async fn send(target: Target<'_>, req: Request<Body>) -> Result<Response<Body>, OriginError> {
    let (mut parts, mut body) = req.into_parts();
    parts.headers.remove(header::EXPECT);
    let framing = match gbody::content_length(&parts.headers) {
        Some(0) => ReqFraming::None,
        Some(_) => ReqFraming::Length,
        None if body.is_end_stream() => {
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            }
            ReqFraming::None
        }
        None => {
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            ReqFraming::Chunked
        }
    };
    let mut wire = Vec::with_capacity(512);
    head::encode_request(&parts, &mut wire);
    let is_head = parts.method == Method::HEAD;

    // A request that meets a pooled connection the origin closed while it sat idle is
    // sent once more on a new connection, if it has no body (that is gone) and is
    // idempotent: the origin may instead have died while handling it, and only an
    // idempotent request may then be repeated (RFC 9110 §9.2.2).
    let retryable = matches!(framing, ReqFraming::None) && parts.method.is_idempotent();
    let deadline = Instant::now() + target.response_timeout;
    let mut pooled = pool::take(target.authority);
    loop {
        let reused = pooled.is_some();
        let mut c = match pooled.take() {
            Some(c) => c,
            None => match tokio::time::timeout_at(deadline, connect(&target)).await {
                Ok(Ok(c)) => {
                    count(&STATS.connects);
                    c
                }
                Ok(Err(e)) => {
                    count(&STATS.connect_failures);
                    return Err(e);
                }
                Err(_) => return Err(OriginError::Timeout),
            },
        };
        c.deadline.as_mut().reset(deadline);
        let Conn {
            io,
            rbuf,
            names,
            deadline: timer,
        } = &mut c;
        let attempt = tokio::select! {
            biased;
            r = exchange(io, rbuf, names, &wire, &framing, &mut body, is_head) => r,
            () = timer.as_mut() => Err(OriginError::Timeout),
        };
        match attempt {
            Ok(parsed) => return Ok(build(&target, c, parsed)),
            // The next round connects afresh, so this retries at most once.
            Err(e) if reused && retryable && e.is_stale_connection() => {
                count(&STATS.retries);
                tracing::debug!(origin = %target.authority, error = %e, "pooled origin connection was stale; retrying");
            }
            Err(e) => {
                match e {
                    OriginError::Malformed(_) => count(&STATS.malformed),
                    OriginError::RequestBody(_) => c.abort(),
                    _ => {}
                }
                return Err(e);
            }
        }
    }
}

/// Writes the request and reads the response head.
async fn exchange(
    io: &mut TcpStream,
    rbuf: &mut BytesMut,
    names: &mut head::HeaderNames,
    wire: &[u8],
    framing: &ReqFraming,
    body: &mut Body,
    is_head: bool,
) -> Result<head::Parsed, OriginError> {
    match framing {
        ReqFraming::None => io.write_all(wire).await?,
        ReqFraming::Length | ReqFraming::Chunked => {
            io.write_all(wire).await?;
            let chunked = matches!(framing, ReqFraming::Chunked);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(OriginError::RequestBody)?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    let size = format!("{:x}\r\n", data.len());
                    io.write_all(size.as_bytes()).await?;
                    io.write_all(&data).await?;
                    io.write_all(b"\r\n").await?;
                } else {
                    io.write_all(&data).await?;
                }
            }
            if chunked {
                io.write_all(b"0\r\n\r\n").await?;
            }
        }
    }
    rbuf.clear();
    loop {
        if !rbuf.is_empty()
            && let Some(parsed) = head::parse_response(rbuf, names, is_head)?
        {
            return Ok(parsed);
        }
        if rbuf.len() >= MAX_HEAD {
            return Err(OriginError::Malformed("response head too large"));
        }
        rbuf.reserve(READ_CHUNK);
        if io.read_buf(rbuf).await? == 0 {
            return Err(OriginError::Closed);
        }
    }
}

/// The response with its body: whole when it is already in the buffer (the connection
/// goes straight back to the pool), streaming otherwise.
fn build(target: &Target<'_>, mut c: Conn, parsed: head::Parsed) -> Response<Body> {
    let head::Parsed {
        mut parts,
        framing,
        keep_alive,
        rest,
    } = parsed;
    parts.version = http::Version::HTTP_11;
    let body = match framing {
        head::Framing::Empty => {
            // Bytes past an empty body mean the origin and we disagree on framing.
            pool::put_if(keep_alive && rest.is_empty(), target.authority, c);
            gbody::empty()
        }
        head::Framing::Length(n) if (rest.len() as u64) >= n => {
            let whole = rest.len() as u64 == n;
            pool::put_if(keep_alive && whole, target.authority, c);
            // `n` fits in the buffer, so it fits in usize.
            gbody::full(rest.slice(..n as usize))
        }
        framing => {
            c.rbuf.extend_from_slice(&rest);
            OriginBody::new(c, target.authority.clone(), framing, keep_alive).boxed_unsync()
        }
    };
    Response::from_parts(parts, body)
}

async fn connect(target: &Target<'_>) -> Result<Conn, OriginError> {
    let attempt = async {
        let mut last = None;
        for addr in tokio::net::lookup_host(&**target.authority)
            .await
            .map_err(OriginError::Connect)?
        {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(OriginError::Connect)?;
            // Idle pooled connections are probed by the kernel, so a vanished origin
            // host does not leave them open forever.
            socket.set_keepalive(true).map_err(OriginError::Connect)?;
            socket.set_nodelay(true).map_err(OriginError::Connect)?;
            match socket.connect(addr).await {
                Ok(io) => {
                    return Ok(Conn {
                        io,
                        rbuf: BytesMut::with_capacity(READ_CHUNK),
                        names: head::HeaderNames::default(),
                        // Armed for real by the first request.
                        deadline: Box::pin(tokio::time::sleep(IDLE_DEADLINE)),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(OriginError::Connect(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the origin's host has no address")
        })))
    };
    tokio::time::timeout(target.connect_timeout, attempt)
        .await
        .map_err(|_| OriginError::ConnectTimeout)?
}

impl Conn {
    /// Closes the connection with a reset (RST, not FIN) in the middle of a request: the
    /// origin sees an error, never an end of input it could take for the request's end.
    fn abort(self) {
        count(&STATS.aborted);
        if let Err(e) = self.io.set_zero_linger() {
            tracing::debug!(error = %e, "cannot arm a reset on the origin connection");
        }
        tracing::debug!("request body failed mid-request: origin connection reset");
    }
}

impl OriginError {
    /// Failures that happened before the origin accepted a connection.
    pub fn is_connect(&self) -> bool {
        matches!(self, OriginError::Connect(_) | OriginError::ConnectTimeout)
    }
}
