//! Detects ambiguous HTTP/1.x request framing on the raw byte stream.
//!
//! hyper's HTTP/1 server quietly resolves some ambiguous framings (it drops
//! `Content-Length` when `Transfer-Encoding` is present and merges identical
//! duplicate `Content-Length` headers), so the service cannot tell from the
//! parsed request that the client sent something a different hop may frame
//! differently. [`FramingGuard`] wraps the connection IO, watches every byte
//! hyper reads, tracks request boundaries and raises a [`FramingFlag`] when a
//! request head is ambiguous. The service checks the flag and answers 400.
//!
//! The guard never alters, delays or withholds bytes; it only observes them.
//! Whenever the tracker loses certainty about where a request starts (a head
//! or chunk framing hyper will reject, an oversized head, an upgrade/CONNECT
//! tunnel, an HTTP/2 preface) it stops tracking for the rest of the
//! connection rather than risk reading body bytes as a head.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared flag the service checks: set when a request head on this connection
/// had ambiguous framing.
#[derive(Clone, Default, Debug)]
pub struct FramingFlag(Arc<AtomicBool>);

impl FramingFlag {
    /// Whether an ambiguous request head was seen on this connection.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the connection as having sent an ambiguous request head.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

pin_project! {
    /// IO wrapper that forwards everything to `T` and feeds every byte read
    /// into an HTTP/1.x request-framing tracker.
    #[derive(Debug)]
    pub struct FramingGuard<T> {
        #[pin]
        inner: T,
        tracker: Tracker,
    }
}

impl<T> FramingGuard<T> {
    /// Wraps `inner`. `max_head` bounds the buffered request head; pass the
    /// same limit hyper enforces so a head hyper accepts is always tracked.
    pub fn new(inner: T, max_head: usize) -> (Self, FramingFlag) {
        let flag = FramingFlag::default();
        let guard = Self {
            inner,
            tracker: Tracker::new(max_head, flag.clone()),
        };
        (guard, flag)
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped IO, mutably. Reads done through it bypass the tracker.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the IO.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead> AsyncRead for FramingGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.tracker.observe(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for FramingGuard<T> {
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

    // hyper writes responses vectored when it can; keep that path intact.
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

/// What the first bytes of an HTTP/2 prior-knowledge connection look like.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Head buffers larger than this are released after each head so idle
/// keep-alive connections don't each pin a `max_head`-sized allocation.
const RETAINED_HEAD_CAPACITY: usize = 4096;

/// Position in the chunked body grammar; mirrors hyper's own chunked decoder
/// so both agree on where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    /// Inside the hex size.
    Size,
    /// Whitespace after the size.
    SizeLws,
    /// Inside a `;ext`, up to CR.
    Ext,
    /// CR seen after the size line, expecting LF.
    SizeLf,
    /// Chunk data, this many bytes left.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// After the last chunk or a trailer line: CR ends, anything else starts a trailer.
    EndCr,
    /// Final LF of the chunked body.
    EndLf,
    /// Inside a trailer line, up to CR.
    Trailer,
    /// CR seen in a trailer line, expecting LF.
    TrailerLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Accumulating a request head.
    Head,
    /// Skipping a `Content-Length` body; this many bytes left.
    Fixed(u64),
    /// Walking a chunked body.
    Chunked(Chunk),
    /// Stopped tracking for the rest of the connection.
    Off,
}

/// Result of inspecting one complete request head.
enum Verdict {
    /// Framing is ambiguous: raise the flag.
    Ambiguous,
    /// The connection may turn into a tunnel after this head.
    Tunnel,
    /// Next bytes are a body of this kind (or the next head).
    Body(State),
}

/// Incremental request-framing tracker fed with the raw bytes hyper reads.
#[derive(Debug)]
struct Tracker {
    state: State,
    flag: FramingFlag,
    max_head: usize,
    /// Bytes of the current head (leading blank lines skipped).
    head: Vec<u8>,
    /// Whether the current head is the connection's first (for the h2 preface).
    first_head: bool,
    /// Size or remaining data of the current chunk.
    chunk_size: u64,
    /// Trailer bytes seen in the current chunked body (bounded by `max_head`).
    trailer_len: usize,
}

impl Tracker {
    fn new(max_head: usize, flag: FramingFlag) -> Self {
        Self {
            state: State::Head,
            flag,
            max_head,
            head: Vec::new(),
            first_head: true,
            chunk_size: 0,
            trailer_len: 0,
        }
    }

    /// Feeds bytes in the order they were read.
    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = match self.state {
                State::Off => return,
                State::Head => self.feed_head(data),
                State::Fixed(left) => {
                    let take = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
                    // `take` <= `left`, so this cannot underflow.
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Fixed(left)
                    };
                    take
                }
                State::Chunked(Chunk::Data) => {
                    let take =
                        usize::try_from(self.chunk_size).map_or(data.len(), |l| l.min(data.len()));
                    self.chunk_size -= take as u64;
                    if self.chunk_size == 0 {
                        self.state = State::Chunked(Chunk::DataCr);
                    }
                    take
                }
                State::Chunked(c) => {
                    self.state = self.chunk_byte(c, data[0]);
                    1
                }
            };
            data = &data[used..];
        }
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.head = Vec::new();
    }

    /// Consumes head bytes up to and including the blank line that ends the
    /// head, if present. Returns how many bytes of `data` were used.
    fn feed_head(&mut self, data: &[u8]) -> usize {
        // The usual case: a whole head arrives in one read. Parse it where it lies,
        // without copying it; anything unusual takes the byte-wise path below.
        if self.head.is_empty()
            && let Some((len, verdict)) = inspect_in_place(data, self.max_head)
        {
            self.first_head = false;
            self.apply(verdict);
            return len;
        }
        let mut used = 0;
        if self.head.is_empty() {
            // httparse skips blank lines before a request line; keeping them
            // out of the buffer keeps "\n\n" below meaning "end of head".
            used = data
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
                .unwrap_or(data.len());
        }
        while used < data.len() {
            let rest = &data[used..];
            let (line, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            if self.head.len() + line.len() > self.max_head {
                // hyper refuses oversized heads on its own.
                self.stop();
                return data.len();
            }
            self.head.extend_from_slice(line);
            used += line.len();
            if complete && (self.head.ends_with(b"\n\n") || self.head.ends_with(b"\n\r\n")) {
                self.finish_head();
                return used;
            }
        }
        used
    }

    /// Inspects a buffered head that ends with a blank line.
    fn finish_head(&mut self) {
        if self.first_head && self.head.starts_with(H2_PREFACE) {
            // Prior-knowledge HTTP/2: the rest is binary frames.
            self.stop();
            return;
        }
        self.first_head = false;
        let verdict = inspect_head(&self.head);
        self.head.clear();
        if self.head.capacity() > RETAINED_HEAD_CAPACITY {
            self.head.shrink_to(RETAINED_HEAD_CAPACITY);
        }
        self.apply(verdict);
    }

    /// Acts on a head's verdict (`None`: httparse rejected the head).
    fn apply(&mut self, verdict: Option<Verdict>) {
        match verdict {
            Some(Verdict::Ambiguous) => {
                self.flag.set();
                self.stop();
            }
            Some(Verdict::Tunnel) | None => self.stop(),
            Some(Verdict::Body(next)) => {
                self.chunk_size = 0;
                self.trailer_len = 0;
                self.state = next;
            }
        }
    }

    /// Advances the chunked grammar by one byte; any deviation hyper would
    /// reject stops tracking.
    fn chunk_byte(&mut self, c: Chunk, b: u8) -> State {
        let next = match (c, b) {
            (Chunk::Start | Chunk::Size, _) if hex_value(b).is_some() => {
                let digit = hex_value(b).map_or(0, u64::from);
                match self
                    .chunk_size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                {
                    Some(size) => {
                        self.chunk_size = size;
                        Chunk::Size
                    }
                    None => return State::Off,
                }
            }
            (Chunk::Size | Chunk::SizeLws, b' ' | b'\t') => Chunk::SizeLws,
            (Chunk::Size | Chunk::SizeLws, b';') => Chunk::Ext,
            (Chunk::Size | Chunk::SizeLws | Chunk::Ext, b'\r') => Chunk::SizeLf,
            (Chunk::Ext, b'\n') => return State::Off,
            (Chunk::Ext, _) => Chunk::Ext,
            (Chunk::SizeLf, b'\n') if self.chunk_size == 0 => Chunk::EndCr,
            (Chunk::SizeLf, b'\n') => Chunk::Data,
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::EndLf, b'\n') => return State::Head,
            (Chunk::EndCr | Chunk::Trailer, _) => {
                self.trailer_len += 1;
                if self.trailer_len > self.max_head {
                    // hyper caps trailers too; don't count forever.
                    return State::Off;
                }
                if b == b'\r' {
                    Chunk::TrailerLf
                } else {
                    Chunk::Trailer
                }
            }
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            _ => return State::Off,
        };
        State::Chunked(next)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Be at least as lenient as any hyper configuration: a head hyper rejects gets a 400
/// anyway, but one we fail to parse would go unchecked.
fn parser() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .ignore_invalid_headers_in_requests(true);
    config
}

/// Headers parsed in place before falling back to the buffered path.
const IN_PLACE_HEADERS: usize = 64;

/// A head that arrived whole at the front of `data`: its length and verdict. `None`
/// when it is incomplete, too large, has many headers or does not parse; the buffered
/// path then decides exactly as before.
fn inspect_in_place(data: &[u8], max_head: usize) -> Option<(usize, Option<Verdict>)> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; IN_PLACE_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match parser().parse_request_with_uninit_headers(&mut req, data, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let head = &data[..len];
    // The buffered path ends a head at its first blank line; agree with it.
    if len > max_head || !(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n")) {
        return None;
    }
    Some((len, Some(verdict(&req))))
}

/// Parses a complete head. `None` means httparse rejected it (hyper will too).
fn inspect_head(head: &[u8]) -> Option<Verdict> {
    // Every header occupies at least one line, so this many slots always fit.
    let lines = head.iter().filter(|b| **b == b'\n').count();
    let mut headers = vec![httparse::EMPTY_HEADER; lines];
    let mut req = httparse::Request::new(&mut headers);
    match parser().parse_request(&mut req, head) {
        Ok(httparse::Status::Complete(_)) => Some(verdict(&req)),
        // Partial cannot happen after a blank line; treat it as unknown.
        Ok(httparse::Status::Partial) | Err(_) => None,
    }
}

/// What a parsed head means for the bytes that follow it.
fn verdict(req: &httparse::Request<'_, '_>) -> Verdict {
    let mut content_length: Option<u64> = None;
    let mut cl_lines = 0usize;
    let mut te_chunked: Option<bool> = None;
    let mut connection_upgrade = false;
    let mut has_upgrade = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            cl_lines += 1;
            match parse_digits(h.value) {
                Some(n) => content_length = Some(n),
                None => return Verdict::Ambiguous,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // As in hyper, only the last line's final coding decides.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            te_chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            has_upgrade = true;
        }
    }

    if cl_lines > 1 {
        return Verdict::Ambiguous;
    }
    match (te_chunked, content_length) {
        (Some(_), Some(_)) | (Some(false), None) => return Verdict::Ambiguous,
        _ => {}
    }
    let is_connect = req
        .method
        .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(b"CONNECT"));
    if is_connect || (connection_upgrade && has_upgrade) {
        return Verdict::Tunnel;
    }
    Verdict::Body(match (te_chunked, content_length) {
        (Some(_), _) => State::Chunked(Chunk::Start),
        (None, Some(n)) if n > 0 => State::Fixed(n),
        _ => State::Head,
    })
}

/// Content-Length as hyper reads it: one or more ASCII digits, nothing else.
/// Overflow counts as invalid (hyper refuses it as well).
fn parse_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reader that returns the given chunks one per `poll_read`, so tests
    /// control exactly how the stream is split.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut c) = self.0.pop_front() {
                let n = c.len().min(buf.remaining());
                buf.put_slice(&c[..n]);
                if n < c.len() {
                    self.0.push_front(c.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Reads `chunks` through a guard; returns (flag set, bytes read, still tracking).
    async fn run(chunks: Vec<Vec<u8>>) -> (bool, Vec<u8>, bool) {
        let (mut guard, flag) = FramingGuard::new(Chunks(chunks.into()), 64 * 1024);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        let tracking = guard.tracker.state != State::Off;
        (flag.is_set(), out, tracking)
    }

    async fn all_at_once(data: &[u8]) -> (bool, bool) {
        let (set, out, tracking) = run(vec![data.to_vec()]).await;
        assert_eq!(out, data);
        (set, tracking)
    }

    async fn byte_by_byte(data: &[u8]) -> (bool, bool) {
        let (set, out, tracking) = run(data.iter().map(|b| vec![*b]).collect()).await;
        assert_eq!(out, data);
        (set, tracking)
    }

    /// Checks the flag outcome for the whole stream, bytewise, and at every
    /// two-way split point.
    async fn expect_flag(data: &[u8], expected: bool) {
        assert_eq!(all_at_once(data).await.0, expected, "all at once");
        assert_eq!(byte_by_byte(data).await.0, expected, "byte by byte");
        for i in 1..data.len() {
            let (set, out, _) = run(vec![data[..i].to_vec(), data[i..].to_vec()]).await;
            assert_eq!(out, data);
            assert_eq!(set, expected, "split at {i}");
        }
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const POST_CL: &[u8] = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 49\r\n\r\n\
Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    const POST_CHUNKED: &[u8] =
        b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=val\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n";

    fn clean_sequence() -> Vec<u8> {
        [GET, POST_CL, POST_CHUNKED].concat()
    }

    #[test]
    fn cl_body_length_matches() {
        let body = b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert!(POST_CL.ends_with(body));
        assert!(
            std::str::from_utf8(POST_CL)
                .unwrap()
                .contains(&format!("Content-Length: {}\r\n", body.len()))
        );
    }

    #[tokio::test]
    async fn clean_keep_alive_sequence_is_not_flagged() {
        let data = clean_sequence();
        expect_flag(&data, false).await;
        // Still tracking after all three: every boundary was found.
        assert_eq!(all_at_once(&data).await, (false, true));
        assert_eq!(byte_by_byte(&data).await, (false, true));
    }

    #[tokio::test]
    async fn cl_and_te_is_flagged_in_both_orders() {
        expect_flag(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            true,
        )
        .await;
        expect_flag(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn duplicate_content_length_is_flagged() {
        expect_flag(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn content_length_list_is_flagged() {
        expect_flag(
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn non_numeric_content_length_is_flagged() {
        for v in ["+5", "abc", "0x5", "-1", "99999999999999999999999"] {
            let req = format!("POST / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n");
            assert!(all_at_once(req.as_bytes()).await.0, "{v}");
        }
    }

    #[tokio::test]
    async fn te_not_ending_in_chunked_is_flagged() {
        expect_flag(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            true,
        )
        .await;
        for te in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked,\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        ] {
            let req = format!("POST / HTTP/1.1\r\n{te}\r\n0\r\n\r\n");
            assert!(all_at_once(req.as_bytes()).await.0, "{te}");
        }
    }

    #[tokio::test]
    async fn te_over_several_lines_ending_in_chunked_is_fine() {
        let req = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\ntransfer-encoding:  CHUNKED \r\n\r\n\
3\r\nabc\r\n0\r\n\r\n"
                .as_slice(),
            GET,
        ]
        .concat();
        expect_flag(&req, false).await;
        assert_eq!(all_at_once(&req).await, (false, true));
    }

    #[tokio::test]
    async fn violation_in_third_pipelined_request_is_detected() {
        let bad =
            b"POST /c HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let data = [GET, POST_CL, bad.as_slice()].concat();
        expect_flag(&data, true).await;
        let data = [POST_CHUNKED, GET, bad.as_slice()].concat();
        expect_flag(&data, true).await;
    }

    #[tokio::test]
    async fn upgrade_stops_tracking() {
        let data = [
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
                .as_slice(),
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        ]
        .concat();
        expect_flag(&data, false).await;
        assert_eq!(all_at_once(&data).await, (false, false));
    }

    #[tokio::test]
    async fn upgrade_header_without_connection_token_keeps_tracking() {
        let data = [
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".as_slice(),
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        ]
        .concat();
        expect_flag(&data, true).await;
    }

    #[tokio::test]
    async fn connect_stops_tracking() {
        let data = [
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".as_slice(),
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]
        .concat();
        expect_flag(&data, false).await;
        assert_eq!(all_at_once(&data).await, (false, false));
    }

    #[tokio::test]
    async fn h2_preface_stops_tracking() {
        let data = [
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        ]
        .concat();
        expect_flag(&data, false).await;
        assert_eq!(byte_by_byte(&data).await, (false, false));
    }

    #[tokio::test]
    async fn bad_chunk_framing_stops_tracking() {
        let data = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".as_slice(),
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        ]
        .concat();
        expect_flag(&data, false).await;
        assert_eq!(all_at_once(&data).await, (false, false));
    }

    #[tokio::test]
    async fn invalid_head_stops_tracking() {
        let data = b"GET / HTTP/1.1\r\nBad Header\x01: x\r\n\r\nPOST / HTTP/1.1\r\n\
Content-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        // Lenient parsing ignores the invalid line, so the head is accepted.
        assert_eq!(all_at_once(data).await, (true, false));
        let data = b"GET / HTTP/9\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(all_at_once(data).await, (false, false));
    }

    #[tokio::test]
    async fn oversized_head_stops_tracking() {
        let mut data = b"GET / HTTP/1.1\r\nX: ".to_vec();
        data.extend(std::iter::repeat_n(b'a', 100));
        data.extend_from_slice(b"\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        let (mut guard, flag) = FramingGuard::new(Chunks(vec![data.clone()].into()), 64);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        assert!(!flag.is_set());
        assert_eq!(guard.tracker.state, State::Off);
        assert!(guard.tracker.head.capacity() == 0);
    }

    #[tokio::test]
    async fn leading_blank_lines_and_bare_lf_heads_are_tracked() {
        let data = b"\r\n\r\nGET / HTTP/1.1\nHost: a\n\nPOST / HTTP/1.1\r\n\
Content-Length: 2\r\n\r\nab\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        expect_flag(data, true).await;
    }

    #[tokio::test]
    async fn duplex_passes_bytes_through_unchanged() {
        let (mut client, server) = tokio::io::duplex(7);
        let (mut guard, flag) = FramingGuard::new(server, 1024);
        let data = clean_sequence();
        let to_send = data.clone();
        let writer = async move {
            for piece in to_send.chunks(5) {
                client.write_all(piece).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        };
        let reader = async {
            let mut out = Vec::new();
            guard.read_to_end(&mut out).await.unwrap();
            out
        };
        let (mut client, out) = tokio::join!(writer, reader);
        assert_eq!(out, data);
        assert!(!flag.is_set());

        // Writes go through untouched as well (read concurrently: the pipe is small).
        let resp = b"HTTP/1.1 200 OK\r\n\r\n";
        let write = async {
            guard.write_all(resp).await.unwrap();
            guard.flush().await.unwrap();
        };
        let mut got = [0u8; 19];
        let read = client.read_exact(&mut got);
        let ((), n) = tokio::join!(write, read);
        assert_eq!(n.unwrap(), resp.len());
        assert_eq!(&got, resp);
    }

    #[test]
    fn flag_is_shared_between_clones() {
        let flag = FramingFlag::default();
        let other = flag.clone();
        assert!(!other.is_set());
        flag.set();
        assert!(other.is_set());
    }
}
