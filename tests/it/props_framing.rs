//! Property test of the HTTP/1 framing guard (`proxy::framing_guard`) against RFC 9112:
//! for generated keep-alive streams of request heads and bodies, split into reads at
//! generated points, the guard raises its flag exactly when a request before any tunnel
//! has one of the shapes it refuses, as read by httparse (strict) and the RFC's rules
//! for Content-Length and Transfer-Encoding. Every other request, which an RFC 9112
//! parser frames one way only, passes.
//!
//! The refused ("ambiguous") shapes, each one a hop could frame differently:
//! - Content-Length together with Transfer-Encoding (§6.1: "ought to be handled as an
//!   error"; hyper would silently drop the Content-Length);
//! - more than one Content-Length field line, or a list in one (§6.3 item 5 lets a
//!   recipient accept `5, 5`; another hop may not), or a value that is not 1*DIGIT or
//!   does not fit 64 bits (§6.3 item 5: unrecoverable);
//! - a Transfer-Encoding whose final coding (of the last field line) is not `chunked`
//!   (§6.3 item 4: the length cannot be determined; 400), an empty trailing list
//!   element included (`chunked,`: §5.6.1 says ignore it; hyper does not).
//!
//! After CONNECT or an upgrade (`Connection: upgrade` with `Upgrade`) the connection
//! may become a tunnel, so the guard stops reading it: later requests are not judged.

use portcullis::proxy::framing_guard::FramingGuard;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};

/// Returns the given pieces, one per read.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(mut p) = self.0.pop_front() {
            let n = p.len().min(buf.remaining());
            buf.put_slice(&p[..n]);
            if n < p.len() {
                self.0.push_front(p.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The guard's flag after reading `stream` in pieces cut at `cuts`.
fn flagged(stream: &[u8], cuts: &[prop::sample::Index]) -> bool {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    // A read of zero bytes is the end of the stream: only non-empty pieces.
    at.dedup();
    let pieces = at.windows(2).map(|w| stream[w[0]..w[1]].to_vec()).collect();
    let (mut guard, flag) = FramingGuard::new(Pieces(pieces), 64 * 1024);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut space = vec![0u8; 4096];
    loop {
        let mut rb = ReadBuf::new(&mut space);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break,
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(out, stream, "the guard changed bytes");
    flag.is_set()
}

/// One header line's name and value as sent.
#[derive(Debug, Clone)]
struct Field(String, String);

fn case(name: &'static str) -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        name.to_string(),
        name.to_ascii_lowercase(),
        name.to_ascii_uppercase(),
    ])
}

/// Content-Length values: mostly valid numbers (with leading zeros and whitespace), and
/// lists, signs, hex, overflow, empty.
fn content_length() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0u64..40).prop_map(|n| n.to_string()),
        1 => (0u64..40).prop_map(|n| format!("00{n}")),
        1 => (0u64..40).prop_map(|n| format!(" {n}\t")),
        1 => (0u64..40).prop_map(|n| format!("{n}, {n}")),
        1 => prop::sample::select(vec!["+5", "-1", "0x5", "5a", "", "1 2", "99999999999999999999999"])
            .prop_map(str::to_string),
    ]
}

fn transfer_encoding() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "chunked",
        "CHUNKED",
        " chunked ",
        "gzip, chunked",
        "gzip,chunked",
        "chunked, gzip",
        "chunked,",
        "gzip",
        "identity",
        "chunked;q=1",
        ", chunked",
        "deflate ,  Chunked",
    ])
    .prop_map(str::to_string)
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        3 => Just(Field("Host".into(), "app.example.com".into())),
        4 => (case("Content-Length"), content_length()).prop_map(|(n, v)| Field(n, v)),
        4 => (case("Transfer-Encoding"), transfer_encoding()).prop_map(|(n, v)| Field(n, v)),
        1 => (case("Connection"), prop::sample::select(vec!["keep-alive", "Upgrade", "close, upgrade", "x"]))
            .prop_map(|(n, v)| Field(n, v.into())),
        1 => Just(Field("Upgrade".into(), "websocket".into())),
        2 => ("X-[A-Za-z]{1,8}", "[ -~]{0,12}").prop_map(|(n, v)| Field(n, v)),
        // Names that only look like framing headers.
        1 => prop::sample::select(vec!["Content-Lengths", "X-Content-Length", "Transfer_Encoding"])
            .prop_map(|n| Field(n.into(), "5".into())),
    ]
}

#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    fields: Vec<Field>,
    /// Bare LF line ends instead of CRLF.
    lf: bool,
    /// Empty lines before the request line (RFC 9112 §2.2 lets a server skip them).
    blank_lines: usize,
    /// The body's content (framed as the head says, when it says one thing).
    data: Vec<u8>,
    /// Chunk sizes for a chunked body, an extension and a trailer.
    chunks: Vec<usize>,
    ext: bool,
    trailer: bool,
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "CONNECT"]),
        prop::collection::vec(field(), 0..5),
        prop::bool::weighted(0.1),
        0usize..2,
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(1usize..12, 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(method, fields, lf, blank_lines, data, chunks, ext, trailer)| Request {
                method: if method == "CONNECT" && fields.len() % 3 != 0 {
                    "GET"
                } else {
                    method
                },
                fields,
                lf,
                blank_lines,
                data,
                chunks,
                ext,
                trailer,
            },
        )
}

/// What RFC 9112 makes of a head, as the model reads it.
#[derive(Debug, PartialEq)]
enum Verdict {
    Ambiguous,
    Tunnel,
    Length(u64),
    Chunked,
}

/// The head's fields as a strict HTTP/1.1 parser (httparse, default settings) reads them.
fn parsed_fields(head: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, head.len()),
        other => panic!(
            "generated an invalid head {other:?}: {:?}",
            String::from_utf8_lossy(head)
        ),
    }
    req.headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn model(method: &str, fields: &[(String, Vec<u8>)]) -> Verdict {
    let cls: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_slice())
        .collect();
    let tes: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_slice())
        .collect();
    let length = match cls.as_slice() {
        [] => None,
        [one] => match digits(one) {
            Some(n) => Some(n),
            None => return Verdict::Ambiguous,
        },
        _ => return Verdict::Ambiguous,
    };
    let chunked = tes.last().map(|last| {
        let final_coding = last.rsplit(|b| *b == b',').next().unwrap_or_default();
        final_coding.trim_ascii().eq_ignore_ascii_case(b"chunked")
    });
    match (chunked, length) {
        (Some(_), Some(_)) | (Some(false), None) => return Verdict::Ambiguous,
        _ => {}
    }
    let has = |name: &str, token: &str| {
        fields.iter().any(|(n, v)| {
            n == name
                && v.split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    let upgrade = has("connection", "upgrade") && fields.iter().any(|(n, _)| n == "upgrade");
    if method == "CONNECT" || upgrade {
        return Verdict::Tunnel;
    }
    if chunked == Some(true) {
        Verdict::Chunked
    } else {
        Verdict::Length(length.unwrap_or(0))
    }
}

/// The request's bytes, and what the model says of it.
fn encode(r: &Request) -> (Vec<u8>, Verdict) {
    let eol: &[u8] = if r.lf { b"\n" } else { b"\r\n" };
    let mut head = Vec::new();
    let target = if r.method == "CONNECT" {
        "app.example.com:443"
    } else {
        "/path?q=1"
    };
    head.extend_from_slice(format!("{} {target} HTTP/1.1", r.method).as_bytes());
    head.extend_from_slice(eol);
    for Field(n, v) in &r.fields {
        head.extend_from_slice(format!("{n}: {v}").as_bytes());
        head.extend_from_slice(eol);
    }
    head.extend_from_slice(eol);
    let verdict = model(r.method, &parsed_fields(&head));
    let mut out = eol.repeat(r.blank_lines);
    out.extend_from_slice(&head);
    match verdict {
        Verdict::Length(n) => {
            let mut body = r.data.clone();
            body.resize(n as usize, b'x');
            out.extend_from_slice(&body);
        }
        Verdict::Chunked => {
            let mut rest = r.data.as_slice();
            for size in &r.chunks {
                let take = (*size).min(rest.len());
                if take == 0 {
                    break;
                }
                out.extend_from_slice(format!("{take:X}").as_bytes());
                if r.ext {
                    out.extend_from_slice(b";a=\"b\"");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&rest[..take]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[take..];
            }
            out.extend_from_slice(b"0\r\n");
            if r.trailer {
                out.extend_from_slice(b"X-Trailer: 1\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        // What follows an ambiguous head or a tunnel is never read as requests.
        Verdict::Ambiguous | Verdict::Tunnel => out.extend_from_slice(&r.data),
    }
    (out, verdict)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_guard_flags_exactly_the_ambiguous_framings(
        reqs in prop::collection::vec(request(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = Vec::new();
        let mut expected = false;
        let mut judged = true;
        for r in &reqs {
            let (bytes, verdict) = encode(r);
            stream.extend_from_slice(&bytes);
            if judged {
                match verdict {
                    Verdict::Ambiguous => {
                        expected = true;
                        judged = false;
                    }
                    Verdict::Tunnel => judged = false,
                    _ => {}
                }
            }
        }
        prop_assert_eq!(flagged(&stream, &cuts), expected, "{:?}", String::from_utf8_lossy(&stream));
    }
}
