//! Connection deadlines that hyper does not give: a client gets `request_head_timeout`
//! from accept to finish its TLS handshake and its first request head (hyper's own
//! HTTP/1 head timer only starts once a protocol was chosen, and the protocol sniff of
//! a plaintext connection, the HTTP/2 preface and an idle HTTP/2 connection have none),
//! a connection with no request in flight is closed after `idle_timeout`, and on
//! HTTP/1 a later request head must be complete `request_head_timeout` after its
//! first byte.
//!
//! [`Activity`] is the connection's clock: the service marks each request in flight
//! ([`Activity::begin`]) until hyper drops its response body ([`Tracked`]), the IO
//! wrapper ([`Watched`]) reports reads, and [`drive`] runs the connection until it
//! ends, the server shuts down, or a deadline passes.

use super::admission::Permit;
use crate::metrics::{self, Metrics};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A request head (the first one counting from accept) did not arrive in time.
    Head,
    /// Nothing was in flight for `idle_timeout`.
    Idle,
}

/// After a deadline, the connection is asked to close gracefully (HTTP/2 GOAWAY); one
/// that still holds on without a request in flight is dropped this much later.
const CLOSING_GRACE: Duration = Duration::from_secs(1);

struct State {
    in_flight: usize,
    deadline: Instant,
    expiry: Expiry,
    head: Duration,
    idle: Duration,
}

/// One connection's requests in flight and its next deadline.
pub struct Activity {
    state: Mutex<State>,
    wake: Notify,
    /// Set when the connection falls idle, cleared by the next read: the first byte of
    /// the next request head starts its deadline (HTTP/1 only; HTTP/2 clients send
    /// pings and window updates while idle).
    armed: AtomicBool,
    watch_heads: bool,
}

impl Activity {
    /// A connection accepted when `first_head` minus `head` was: its first request
    /// must arrive by `first_head`.
    pub fn new(
        first_head: Instant,
        head: Duration,
        idle: Duration,
        watch_heads: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                deadline: first_head,
                expiry: Expiry::Head,
                head,
                idle,
            }),
            wake: Notify::new(),
            armed: AtomicBool::new(false),
            watch_heads,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request started; it is in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.state().in_flight += 1;
        self.armed.store(false, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn end(&self) {
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight > 0 {
            return;
        }
        s.deadline = Instant::now() + s.idle;
        s.expiry = Expiry::Idle;
        drop(s);
        self.armed.store(self.watch_heads, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Bytes arrived. On an idle HTTP/1 connection they start a request head, which
    /// must then be complete within `request_head_timeout`.
    pub fn on_read(&self) {
        if !self.armed.load(Ordering::Relaxed) || !self.armed.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut s = self.state();
        let by = Instant::now() + s.head;
        if s.in_flight == 0 && by < s.deadline {
            s.deadline = by;
            s.expiry = Expiry::Head;
            drop(s);
            self.wake.notify_one();
        }
    }

    /// The connection was asked to close: give it `grace` more with nothing in flight.
    fn closing(&self, grace: Duration) {
        let mut s = self.state();
        s.head = grace;
        s.idle = grace;
        if s.in_flight == 0 {
            s.deadline = s.deadline.min(Instant::now() + grace);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// `Some(deadline, expiry)` when nothing is in flight.
    fn idle_until(&self) -> Option<(Instant, Expiry)> {
        let s = self.state();
        (s.in_flight == 0).then_some((s.deadline, s.expiry))
    }

    /// Resolves when a deadline passes with nothing in flight.
    pub async fn expired(&self) -> Expiry {
        loop {
            let Some((deadline, _)) = self.idle_until() else {
                self.wake.notified().await;
                continue;
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    if let Some((d, expiry)) = self.idle_until()
                        && d <= Instant::now()
                    {
                        return expiry;
                    }
                }
                () = self.wake.notified() => {}
            }
        }
    }
}

/// A request in flight; dropping it (with the response body) ends it.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project! {
    /// A response body that keeps its request in flight until hyper drops it, which
    /// is after the last byte was handed to the connection.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        guard: InFlight,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, guard: InFlight) -> Self {
        Self { inner, guard }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The connection's IO: holds its admission permit (so a protocol upgrade keeps
    /// the slot until the tunnel closes) and reports reads to the connection's clock.
    pub struct Watched<T> {
        #[pin]
        inner: T,
        activity: Option<Arc<Activity>>,
        permit: Permit,
    }
}

impl<T> Watched<T> {
    /// `activity`: the clock to report reads to (HTTP/1), or none.
    pub fn new(inner: T, activity: Option<Arc<Activity>>, permit: Permit) -> Self {
        Self {
            inner,
            activity,
            permit,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(a)) = (&res, this.activity.as_ref())
            && buf.filled().len() > before
        {
            a.on_read();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Runs a served connection until it ends (`Some` with its result). A passed
/// deadline (counted) or the server's shutdown asks it to close gracefully
/// (`graceful`); if it then still holds on with nothing in flight, it is dropped
/// (`None`).
pub async fn drive<C, R>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    mut shutdown: watch::Receiver<bool>,
    metrics: &Metrics,
) -> Option<R>
where
    C: Future<Output = R>,
{
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            res = &mut conn => return Some(res),
            expiry = activity.expired() => {
                if closing {
                    return None;
                }
                metrics::inc(match expiry {
                    Expiry::Head => &metrics.limits.head_timeouts,
                    Expiry::Idle => &metrics.limits.idle_timeouts,
                });
                tracing::debug!(?expiry, "closing a connection: deadline passed");
                graceful(conn.as_mut());
                activity.closing(CLOSING_GRACE);
                closing = true;
            }
            _ = shutdown.changed(), if !closing => {
                graceful(conn.as_mut());
                activity.closing(CLOSING_GRACE);
                closing = true;
            }
        }
    }
}
