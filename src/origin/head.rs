//! HTTP/1.1 message heads on the origin side: the request head written to the origin
//! and the response head read back, with the response body's framing decided strictly
//! (RFC 9112 §6.3), so an origin cannot make the gateway misread where a response ends.

use super::OriginError;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::response::Parts;
use http::{Response, StatusCode};
use std::mem::MaybeUninit;

/// Most response headers accepted from an origin.
const MAX_HEADERS: usize = 128;
/// Interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 8;

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

pub struct Parsed {
    pub parts: Parts,
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
    /// What was read past the head: the start of the body.
    pub rest: Bytes,
}

/// Appends `METHOD target HTTP/1.1`, the headers and the blank line to `out`.
pub fn encode_request(parts: &http::request::Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The header names of the last response read on a connection, in order. An origin
/// sends the same names in the same order response after response: comparing the bytes
/// with the last response's is cheaper than parsing and classifying each name again.
#[derive(Default)]
pub struct HeaderNames(Vec<(Box<[u8]>, HeaderName)>);

/// Names remembered per connection.
const REMEMBERED_NAMES: usize = 32;

impl HeaderNames {
    /// The name of the response's `i`th header, spelled `raw` on the wire.
    fn get(&mut self, i: usize, raw: &[u8]) -> Result<HeaderName, OriginError> {
        if let Some((seen, name)) = self.0.get(i)
            && **seen == *raw
        {
            return Ok(name.clone());
        }
        let name =
            HeaderName::from_bytes(raw).map_err(|_| OriginError::Malformed("bad header name"))?;
        if let Some(slot) = self.0.get_mut(i) {
            *slot = (raw.into(), name.clone());
        } else if i == self.0.len() && i < REMEMBERED_NAMES {
            self.0.push((raw.into(), name.clone()));
        }
        Ok(name)
    }
}

/// Parses a complete response head at the front of `buf`, taking everything buffered;
/// `None` (and `buf` untouched) when more bytes are needed. Interim 1xx responses are
/// dropped. Header values share the buffer instead of being copied; `names` carries the
/// connection's header names from one response to the next.
pub fn parse_response(
    buf: &mut BytesMut,
    names: &mut HeaderNames,
    is_head: bool,
) -> Result<Option<Parsed>, OriginError> {
    if !has_blank_line(buf) {
        return Ok(None);
    }
    let mut data: Bytes = buf.split().freeze();
    for _ in 0..MAX_INTERIM {
        let mut raw = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, &data, &mut raw)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                *buf = BytesMut::from(&data[..]);
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(OriginError::Malformed("too many headers"));
            }
            Err(_) => return Err(OriginError::Malformed("unparsable response head")),
        };
        let code = resp.code.unwrap_or(0);
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(OriginError::Malformed("a protocol switch nobody asked for"));
            }
            data = data.slice(len..);
            if !has_blank_line(&data) {
                *buf = BytesMut::from(&data[..]);
                return Ok(None);
            }
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| OriginError::Malformed("status code out of range"))?;
        let mut headers = HeaderMap::with_capacity(resp.headers.len());
        let mut seen = FramingHeaders::default();
        for (i, h) in resp.headers.iter().enumerate() {
            let name = names.get(i, h.name.as_bytes())?;
            if !seen.note(&name, h.value) {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(data.slice_ref(h.value))
                .map_err(|_| OriginError::Malformed("bad header value"))?;
            headers.append(name, value);
        }
        let minor_version = resp.version.unwrap_or(1);
        let (framing, keep_alive) = framing(status, minor_version, &seen, &mut headers, is_head)?;
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        parts.headers = headers;
        return Ok(Some(Parsed {
            parts,
            framing,
            keep_alive,
            rest: data.slice(len..),
        }));
    }
    Err(OriginError::Malformed("too many interim responses"))
}

/// Whether a head could be complete: httparse accepts CRLF and bare LF line ends. The
/// usual CRLF head is found with one prebuilt searcher; a bare-LF one walks the lines.
fn has_blank_line(b: &[u8]) -> bool {
    static CRLF_BLANK_LINE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    if CRLF_BLANK_LINE.find(b).is_some() {
        return true;
    }
    memchr::memchr_iter(b'\n', b).any(|i| match b.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => b.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// What the framing decision needs from the response headers, noted while they are
/// read so no header is looked up again afterwards.
#[derive(Default)]
struct FramingHeaders<'a> {
    close: bool,
    keep_alive: bool,
    /// The last `Transfer-Encoding` value.
    transfer_encoding: Option<&'a [u8]>,
    /// The first `Content-Length` value, and whether another one differs from it.
    content_length: Option<&'a [u8]>,
    conflicting_lengths: bool,
}

impl<'a> FramingHeaders<'a> {
    /// Notes one header; `false` when it need not be kept: a `Connection` header that
    /// only says `close` or `keep-alive` (hop-by-hop, and read here). One that names
    /// other headers is kept, so forwarding can drop those too.
    fn note(&mut self, name: &HeaderName, value: &'a [u8]) -> bool {
        if name == header::CONNECTION {
            let mut only_ours = true;
            for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if !t.is_empty() {
                    only_ours = false;
                }
            }
            return !only_ours;
        }
        if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = Some(value);
        } else if name == header::CONTENT_LENGTH {
            match self.content_length {
                None => self.content_length = Some(value),
                Some(first) => self.conflicting_lengths |= first != value,
            }
        }
        true
    }
}

/// The body's framing and whether the connection can be reused.
fn framing(
    status: StatusCode,
    minor_version: u8,
    seen: &FramingHeaders<'_>,
    h: &mut HeaderMap,
    is_head: bool,
) -> Result<(Framing, bool), OriginError> {
    let mut keep_alive = if minor_version == 0 {
        seen.keep_alive
    } else {
        !seen.close
    };
    if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, keep_alive));
    }
    if let Some(te) = seen.transfer_encoding {
        let chunked = te
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if seen.content_length.is_some() {
            // Both: Transfer-Encoding wins (RFC 9112 §6.3), and a connection that
            // spoke so ambiguously is not used again.
            h.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        return Ok(if chunked {
            (Framing::Chunked, keep_alive)
        } else {
            (Framing::UntilClose, false)
        });
    }
    match seen.content_length {
        None => Ok((Framing::UntilClose, false)),
        Some(first) => {
            let n = parse_length(first)?;
            if seen.conflicting_lengths {
                return Err(OriginError::Malformed("conflicting Content-Length"));
            }
            Ok((Framing::Length(n), keep_alive))
        }
    }
}

fn parse_length(b: &[u8]) -> Result<u64, OriginError> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return Err(OriginError::Malformed("bad Content-Length"));
    }
    Ok(b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<Parsed>, OriginError> {
        parse_response(&mut BytesMut::from(raw), &mut HeaderNames::default(), false)
    }

    #[test]
    fn content_length_and_keep_alive() {
        let p = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(p.framing, Framing::Length(5));
        assert!(p.keep_alive);
        assert_eq!(p.parts.headers["x-a"], "b");
        let p = parse("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!p.keep_alive);
        let p = parse("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!p.keep_alive);
    }

    #[test]
    fn connection_header_is_read_and_kept_only_when_it_names_headers() {
        let p = parse("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(p.keep_alive);
        assert!(!p.parts.headers.contains_key("connection"));
        let p = parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(p.keep_alive);
        let p = parse(
            "HTTP/1.1 200 OK\r\nConnection: x-trace, close\r\nX-Trace: 1\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(!p.keep_alive);
        assert_eq!(p.parts.headers["connection"], "x-trace, close");
        let p = parse("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!p.keep_alive, "close anywhere wins");
    }

    #[test]
    fn header_names_are_remembered_by_position_and_bytes() {
        let mut names = HeaderNames::default();
        let mut read = |raw: &str| {
            parse_response(&mut BytesMut::from(raw), &mut names, false)
                .unwrap()
                .unwrap()
                .parts
                .headers
        };
        let first =
            "HTTP/1.1 200 OK\r\nContent-Type: a\r\nX-Custom: b\r\nContent-Length: 0\r\n\r\n";
        for _ in 0..2 {
            let h = read(first);
            assert_eq!(h["content-type"], "a");
            assert_eq!(h["x-custom"], "b");
        }
        // Other names, or the same in another case, at the same places.
        let h =
            read("HTTP/1.1 200 OK\r\nX-Custom: c\r\ncontent-type: d\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h["x-custom"], "c");
        assert_eq!(h["content-type"], "d");
        assert_eq!(h.len(), 3);
        assert!(
            parse_response(
                &mut BytesMut::from("HTTP/1.1 200 OK\r\nX-Custom: c\r\nBad Name: e\r\n\r\n"),
                &mut names,
                false
            )
            .is_err()
        );
        assert_eq!(names.0[0].1, "x-custom");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Len").unwrap().is_none());
        assert!(parse("HTTP/1.1 200 OK\r\nA: b\r\n\r").unwrap().is_none());
        assert!(parse("HTTP/1.1 200 OK\r\nA: b\r\n").unwrap().is_none());
    }

    #[test]
    fn blank_line_ends_a_head_with_either_line_end() {
        assert!(has_blank_line(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(has_blank_line(b"HTTP/1.1 200 OK\n\n"));
        assert!(has_blank_line(b"HTTP/1.1 200 OK\nA: b\n\r\nbody\n\n"));
        assert!(!has_blank_line(b"HTTP/1.1 200 OK\r\nA: b\r\n\r"));
        assert!(!has_blank_line(b"HTTP/1.1 200 OK\r\nA: b\r\n"));
        assert!(!has_blank_line(b"\r\n"));
        let p = parse("HTTP/1.1 204 No Content\nA: b\n\n").unwrap().unwrap();
        assert_eq!(p.parts.headers["a"], "b");
    }

    #[test]
    fn chunked_wins_over_length_and_closes() {
        let p = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(p.framing, Framing::Chunked);
        assert!(!p.keep_alive);
        assert!(!p.parts.headers.contains_key("content-length"));
        let p = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(p.framing, Framing::UntilClose);
    }

    #[test]
    fn bad_lengths_are_refused() {
        for cl in ["-1", "5, 6", "", "0x10", "99999999999999999999"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert!(parse(&raw).is_err(), "{cl:?}");
        }
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err()
        );
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").is_ok());
    }

    #[test]
    fn interim_responses_are_skipped_and_head_has_no_body() {
        let mut b = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        );
        let p = parse_response(&mut b, &mut HeaderNames::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(p.parts.status, 204);
        assert_eq!(p.framing, Framing::Empty);
        assert!(b.is_empty());
        let mut b = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(
            parse_response(&mut b, &mut HeaderNames::default(), true)
                .unwrap()
                .unwrap()
                .framing,
            Framing::Empty
        );
        assert!(parse("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(parse("SMTP ready\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n").is_err());
    }

    #[test]
    fn encodes_origin_form() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = "http://o:1/a?b=c".parse().unwrap();
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("o:1"));
        let mut out = Vec::new();
        encode_request(&parts, &mut out);
        assert_eq!(out, b"GET /a?b=c HTTP/1.1\r\nhost: o:1\r\n\r\n");
    }
}
