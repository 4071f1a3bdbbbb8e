//! Request body deadlines, so a client trickling its body cannot hold a request (and
//! an origin connection) open for as long as it likes. Two rules, counting only time
//! spent waiting on the client (never time the gateway spends not reading, when the
//! origin reads slowly):
//!
//! - no wait for the next bytes may last longer than `timeout`;
//! - in all, the waits may add up to `timeout` plus one second per `min_rate` bytes
//!   received: a body must average `min_rate` bytes a second once it has used its
//!   first `timeout` (a byte a second is cut off after about `timeout`).
//!
//! A body past its deadline ends with [`BodyTimeout`]; the caller answers 408.

use crate::web::body::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error a body ends with when it came too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct BodyTimeout;

/// Whether `e` (as a body error, possibly wrapped by `Limited`) is a [`BodyTimeout`].
pub fn is_timeout(e: &BoxError) -> bool {
    e.is::<BodyTimeout>()
}

pin_project! {
    pub struct BodyDeadline<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        min_rate: u64,
        received: u64,
        // Time spent waiting on the client so far (finished waits).
        waited: Duration,
        // When the current wait began.
        waiting_since: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> BodyDeadline<B> {
    /// `min_rate` 0 keeps only the rule on single waits.
    pub fn new(inner: B, timeout: Duration, min_rate: u64) -> Self {
        Self {
            inner,
            timeout,
            min_rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }
}

/// When the wait that began at `since` must end.
fn deadline(
    since: Instant,
    timeout: Duration,
    min_rate: u64,
    received: u64,
    waited: Duration,
) -> Instant {
    let single = since + timeout;
    if min_rate == 0 {
        return single;
    }
    let earned = Duration::from_secs_f64(received as f64 / min_rate as f64);
    let left = (timeout + earned).saturating_sub(waited);
    single.min(since + left)
}

impl<B> Body for BodyDeadline<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(res) => {
                if let Some(since) = this.waiting_since.take() {
                    *this.waited += since.elapsed();
                }
                if let Some(Ok(frame)) = &res
                    && let Some(data) = frame.data_ref()
                {
                    *this.received += data.len() as u64;
                }
                Poll::Ready(res.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let due = deadline(
                    since,
                    *this.timeout,
                    *this.min_rate,
                    *this.received,
                    *this.waited,
                );
                if now >= due {
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    /// A body that yields `n` one-byte frames, `gap` apart.
    fn trickle(n: usize, gap: Duration) -> impl Body<Data = Bytes, Error = Infallible> {
        let s = futures_util::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((Ok(Frame::data(Bytes::from_static(b"x"))), i + 1))
        });
        StreamBody::new(s)
    }

    async fn read_all(b: impl Body<Data = Bytes, Error = BoxError>) -> Result<usize, BoxError> {
        let mut b = std::pin::pin!(b);
        let mut n = 0;
        while let Some(f) = b.frame().await {
            n += f?.into_data().map_or(0, |d| d.len());
        }
        Ok(n)
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_trickle_is_cut_after_about_the_timeout() {
        // A byte every 20 ms, each earning 1 ms at 1000 bytes/s: cut after ~300 ms.
        let b = BodyDeadline::new(trickle(1000, 20 * MS), 300 * MS, 1000);
        let start = Instant::now();
        let e = read_all(b).await.unwrap_err();
        assert!(is_timeout(&e));
        let took = start.elapsed();
        assert!(took >= 300 * MS && took < 2000 * MS, "{took:?}");
    }

    #[tokio::test]
    async fn a_single_long_wait_is_cut() {
        let b = BodyDeadline::new(trickle(2, 2000 * MS), 100 * MS, 0);
        let start = Instant::now();
        assert!(is_timeout(&read_all(b).await.unwrap_err()));
        assert!(start.elapsed() < 1500 * MS);
    }

    #[tokio::test]
    async fn a_steady_body_passes() {
        // 20 frames 10 ms apart: 200 ms of waiting, within 150 ms + 20 bytes at 100/s.
        let b = BodyDeadline::new(trickle(20, 10 * MS), 150 * MS, 100);
        assert_eq!(read_all(b).await.unwrap(), 20);
    }

    #[test]
    fn earned_time_extends_the_deadline() {
        let t = Instant::now();
        let d = deadline(
            t,
            Duration::from_secs(10),
            100,
            1000,
            Duration::from_secs(15),
        );
        // 10 s + 1000/100 s earned - 15 s waited = 5 s left, below the 10 s single wait.
        assert_eq!(d, t + Duration::from_secs(5));
        let d = deadline(t, Duration::from_secs(10), 0, 0, Duration::from_secs(99));
        assert_eq!(d, t + Duration::from_secs(10));
    }
}
