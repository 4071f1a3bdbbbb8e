//! The origin's response head: `origin::head::parse_response`, as the origin client
//! calls it (again after every read until a head is complete).
//!
//! Input: a control byte (HEAD request or not, read sizes), then what the origin sends.
//! Checked: the answer does not depend on how the bytes arrive (all at once or in the
//! chosen reads), nor on the header names remembered from an earlier response; a parsed
//! head's framing agrees with its headers (RFC 9112 §6.3: Transfer-Encoding wins and
//! Content-Length is dropped, a length is the one Content-Length, no body for HEAD,
//! 204 and 304); `rest` is exactly what follows the head.
#![no_main]

use bytes::BytesMut;
use http::header;
use libfuzzer_sys::fuzz_target;
use portcullis::origin::OriginError;
use portcullis::origin::head::{Framing, HeaderNames, Parsed, parse_response};

/// What a parse came to, comparable.
#[derive(Debug, PartialEq)]
enum Outcome {
    Incomplete,
    Refused(String),
    Head {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        framing: Framing,
        keep_alive: bool,
        rest: Vec<u8>,
    },
}

fn outcome(r: Result<Option<Parsed>, OriginError>) -> Outcome {
    match r {
        Ok(None) => Outcome::Incomplete,
        Err(e) => Outcome::Refused(e.to_string()),
        Ok(Some(p)) => Outcome::Head {
            status: p.parts.status.as_u16(),
            headers: p
                .parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            framing: p.framing,
            keep_alive: p.keep_alive,
            rest: p.rest.to_vec(),
        },
    }
}

/// As the client reads: parse after each read until a head or an error. A head's
/// `rest` is what was read after it, followed here by the reads not yet made, so it
/// compares with a parse of all the bytes at once.
fn incremental(pieces: &[&[u8]], names: &mut HeaderNames, is_head: bool) -> Outcome {
    let mut buf = BytesMut::new();
    for (i, p) in pieces.iter().enumerate() {
        buf.extend_from_slice(p);
        match outcome(parse_response(&mut buf, names, is_head)) {
            Outcome::Incomplete => continue,
            Outcome::Head {
                status,
                headers,
                framing,
                keep_alive,
                mut rest,
            } => {
                rest.extend(pieces[i + 1..].concat());
                return Outcome::Head {
                    status,
                    headers,
                    framing,
                    keep_alive,
                    rest,
                };
            }
            refused => return refused,
        }
    }
    Outcome::Incomplete
}

fn check_framing(o: &Outcome, input: &[u8], is_head: bool) {
    let Outcome::Head {
        status,
        headers,
        framing,
        keep_alive,
        rest,
    } = o
    else {
        return;
    };
    assert!(input.ends_with(rest));
    let get = |n: &header::HeaderName| headers.iter().filter(|(k, _)| k == n.as_str()).count();
    let te = get(&header::TRANSFER_ENCODING);
    let cl = get(&header::CONTENT_LENGTH);
    if is_head || *status == 204 || *status == 304 {
        assert_eq!(*framing, Framing::Empty);
        return;
    }
    match framing {
        Framing::Empty => panic!("no body for status {status}"),
        Framing::Length(n) => {
            assert_eq!(te, 0);
            assert!(cl >= 1);
            for (k, v) in headers {
                if k == "content-length" {
                    let digits = std::str::from_utf8(v)
                        .ok()
                        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()));
                    assert_eq!(
                        digits.and_then(|t| t.parse::<u64>().ok()),
                        Some(*n),
                        "length {n} from {v:?}"
                    );
                }
            }
        }
        Framing::Chunked => {
            assert!(te >= 1);
            assert_eq!(cl, 0, "Content-Length kept beside Transfer-Encoding");
        }
        Framing::UntilClose => {
            assert!(!keep_alive, "a body until close on a reused connection");
            assert_eq!(cl, 0);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let is_head = ctl & 1 == 1;
    let whole = outcome(parse_response(
        &mut BytesMut::from(input),
        &mut HeaderNames::default(),
        is_head,
    ));
    check_framing(&whole, input, is_head);

    // The same bytes in reads of 1 + (ctl >> 1) bytes, with fresh names and with names
    // remembered from the whole parse of the same response.
    let size = 1 + usize::from(ctl >> 1);
    let pieces: Vec<&[u8]> = input.chunks(size).collect();
    // Interim responses are bounded per call; arriving one read at a time they are
    // bounded only by the response timeout. Both refuse nothing a valid origin sends.
    let interim_bound =
        whole == Outcome::Refused("malformed response: too many interim responses".into());
    if !interim_bound {
        assert_eq!(
            incremental(&pieces, &mut HeaderNames::default(), is_head),
            whole,
            "split reads"
        );
    }
    let mut names = HeaderNames::default();
    let first = outcome(parse_response(
        &mut BytesMut::from(input),
        &mut names,
        is_head,
    ));
    let again = outcome(parse_response(
        &mut BytesMut::from(input),
        &mut names,
        is_head,
    ));
    assert_eq!(first, whole);
    assert_eq!(again, whole, "remembered header names changed the answer");
});
