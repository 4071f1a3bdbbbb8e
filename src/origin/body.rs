//! A response body read straight off the origin connection: Content-Length, chunked or
//! until-close framing. Read to its end, it puts the connection back in the pool;
//! dropped early, it closes it.

use super::head::Framing;
use super::{Conn, OriginError, READ_CHUNK, pool};
use crate::web::body::BoxError;
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Bytes left of a Content-Length body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk's data.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines (discarded) up to an empty line.
    Trailers(usize),
    UntilClose,
    Done,
}

pub struct OriginBody {
    conn: Option<Conn>,
    key: Arc<str>,
    state: State,
    keep_alive: bool,
}

impl OriginBody {
    pub(super) fn new(conn: Conn, key: Arc<str>, framing: Framing, keep_alive: bool) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = OriginBody {
            conn: Some(conn),
            key,
            state,
            keep_alive,
        };
        if state == State::Done {
            body.finish();
        }
        body
    }

    /// The body has been read to its end: the connection can serve the next request,
    /// unless the origin said otherwise or sent bytes past the end.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(c) = self.conn.take() {
            pool::put_if(self.keep_alive && c.rbuf.is_empty(), &self.key, c);
        }
    }

    /// The body cannot be completed: the connection is closed, not reused.
    fn fail(&mut self, e: OriginError) -> BoxError {
        self.conn = None;
        self.state = State::Done;
        e.into()
    }

    /// Reads more from the origin; `Ok(0)` is the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, OriginError>> {
        let Some(c) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        loop {
            ready!(c.io.poll_read_ready(cx))?;
            c.rbuf.reserve(READ_CHUNK);
            match c.io.try_read_buf(&mut c.rbuf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

/// What one decoding step found in the buffer.
pub(crate) enum Step {
    Data(Bytes),
    End,
    NeedMore,
}

/// Decodes what is buffered: a data frame, the end, or a request for more bytes.
pub(crate) fn decode(state: &mut State, buf: &mut BytesMut) -> Result<Step, OriginError> {
    loop {
        match *state {
            State::Done => return Ok(Step::End),
            State::Length(_) | State::ChunkData(_) | State::UntilClose if buf.is_empty() => {
                return Ok(Step::NeedMore);
            }
            State::Length(n) => {
                let take = (buf.len() as u64).min(n);
                *state = if take == n {
                    State::Done
                } else {
                    State::Length(n - take)
                };
                return Ok(Step::Data(buf.split_to(take as usize).freeze()));
            }
            State::ChunkData(n) => {
                let take = (buf.len() as u64).min(n);
                *state = if take == n {
                    State::ChunkEnd
                } else {
                    State::ChunkData(n - take)
                };
                return Ok(Step::Data(buf.split_to(take as usize).freeze()));
            }
            State::UntilClose => return Ok(Step::Data(buf.split().freeze())),
            State::ChunkEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(OriginError::Malformed("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = State::ChunkSize;
            }
            State::ChunkSize => {
                let Some(line_end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                    return Ok(Step::NeedMore);
                };
                let size = chunk_size(&buf[..line_end])?;
                buf.advance(line_end + 2);
                *state = if size == 0 {
                    State::Trailers(0)
                } else {
                    State::ChunkData(size)
                };
            }
            State::Trailers(seen) => {
                let Some(line_end) = find_crlf(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                    return Ok(Step::NeedMore);
                };
                buf.advance(line_end + 2);
                *state = if line_end == 0 {
                    State::Done
                } else {
                    State::Trailers(seen + line_end + 2)
                };
            }
        }
    }
}

/// Position of the first CRLF, refusing lines longer than `max`.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, OriginError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= max => Ok(Some(i)),
        Some(_) => Err(OriginError::Malformed("chunk line too long")),
        None if buf.len() > max => Err(OriginError::Malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// The hex size at the start of a chunk-size line (extensions after `;` are ignored).
fn chunk_size(line: &[u8]) -> Result<u64, OriginError> {
    let hex = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or(line)
        .trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(OriginError::Malformed("bad chunk size"));
    }
    hex.iter().try_fold(0u64, |n, d| {
        let v = (*d as char)
            .to_digit(16)
            .ok_or(OriginError::Malformed("bad chunk size"))?;
        Ok(n * 16 + u64::from(v))
    })
}

impl http_body::Body for OriginBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let step = match this.conn.as_mut() {
                Some(c) => decode(&mut this.state, &mut c.rbuf),
                None => Ok(Step::End),
            };
            match step {
                Ok(Step::Data(data)) => {
                    if this.state == State::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
            match ready!(this.poll_fill(cx)) {
                Ok(0) if this.state == State::UntilClose => {
                    // The end of the connection is the end of this body.
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(this.fail(OriginError::Closed)))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0;ext=1").unwrap(), 0);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"fffffffffffffffff").is_err());
        assert!(chunk_size(b"+5").is_err());
    }

    #[test]
    fn crlf_limits() {
        assert_eq!(find_crlf(b"ab\r\n", 10).unwrap(), Some(2));
        assert_eq!(find_crlf(b"ab", 10).unwrap(), None);
        assert!(find_crlf(b"abcdef", 3).is_err());
    }
}
