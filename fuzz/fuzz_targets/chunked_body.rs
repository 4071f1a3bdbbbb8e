//! The origin client's body decoder (`origin/body.rs`): chunked and Content-Length
//! bodies, through `portcullis::fuzzing::decode_body`, which feeds reads as `poll_frame`
//! does.
//!
//! Input: a control byte (framing, read size), then the bytes after the response head.
//! Checked: the result does not depend on the read sizes; whatever a strict RFC 9112
//! §7.1 decoder (written here, within the decoder's documented limits: 15 hex digits,
//! 4 KiB size lines, 16 KiB of trailers) reads completely, the decoder reads to the same
//! data, end and length; a body chunk-encoded here from the input decodes back to it;
//! a Content-Length body is exactly its first `n` bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::{BodyEnd, BodyFraming, decode_body};

/// The strict reference's verdict.
#[derive(Debug, PartialEq)]
enum Strict {
    /// A complete body: its data and length on the wire.
    Complete(Vec<u8>, usize),
    /// A valid prefix: the data so far.
    Partial(Vec<u8>),
    Invalid,
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`
fn valid_ext(mut s: &[u8]) -> bool {
    let bws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', rest @ ..] = *s {
            *s = rest;
        }
    };
    let token = |s: &mut &[u8]| {
        let n = s.iter().take_while(|b| tchar(**b)).count();
        *s = &s[n..];
        n > 0
    };
    loop {
        bws(&mut s);
        if s.is_empty() {
            return true;
        }
        let [b';', rest @ ..] = s else { return false };
        s = rest;
        bws(&mut s);
        if !token(&mut s) {
            return false;
        }
        let save = s;
        bws(&mut s);
        if let [b'=', rest @ ..] = s {
            s = rest;
            bws(&mut s);
            if let [b'"', rest @ ..] = s {
                s = rest;
                loop {
                    match s {
                        [b'"', rest @ ..] => {
                            s = rest;
                            break;
                        }
                        [b'\\', c, rest @ ..] if *c == b'\t' || *c >= 0x20 && *c != 0x7f => {
                            s = rest
                        }
                        [c, rest @ ..]
                            if *c == b'\t' || (*c >= 0x20 && *c != 0x7f && *c != b'\\') =>
                        {
                            s = rest
                        }
                        _ => return false,
                    }
                }
            } else if !token(&mut s) {
                return false;
            }
        } else {
            s = save;
        }
    }
}

/// `field-name ":" OWS field-value OWS`, field-value of VCHAR, obs-text, SP and HTAB.
fn valid_trailer(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|b| tchar(*b))
        && line[colon + 1..]
            .iter()
            .all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f))
}

fn strict(input: &[u8]) -> Strict {
    let mut data = Vec::new();
    let mut p = 0;
    let line = |p: usize, max: usize| -> Result<Option<usize>, ()> {
        match input[p..].windows(2).position(|w| w == b"\r\n") {
            Some(i) if i <= max => Ok(Some(i)),
            Some(_) => Err(()),
            None if input.len() - p > max => Err(()),
            None => Ok(None),
        }
    };
    loop {
        let Ok(found) = line(p, 4096) else {
            return Strict::Invalid;
        };
        let Some(end) = found else {
            // A prefix of a size line: hex digits, then an extension.
            let l = &input[p..];
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let hex = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            return if hex <= 15 {
                Strict::Partial(data)
            } else {
                Strict::Invalid
            };
        };
        let l = &input[p..p + end];
        let hex = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if hex == 0 || hex > 15 || !valid_ext(&l[hex..]) {
            return Strict::Invalid;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&l[..hex]).unwrap(), 16).unwrap();
        p += end + 2;
        if size == 0 {
            break;
        }
        let size = size as usize;
        if input.len() - p < size {
            data.extend_from_slice(&input[p..]);
            return Strict::Partial(data);
        }
        data.extend_from_slice(&input[p..p + size]);
        p += size;
        match &input[p..] {
            [b'\r', b'\n', ..] => p += 2,
            [] | [b'\r'] => return Strict::Partial(data),
            _ => return Strict::Invalid,
        }
    }
    let mut trailers = 0;
    loop {
        let Ok(found) = line(p, (16 * 1024usize).saturating_sub(trailers)) else {
            return Strict::Invalid;
        };
        let Some(end) = found else {
            return Strict::Partial(data);
        };
        if end == 0 {
            return Strict::Complete(data, p + 2);
        }
        if !valid_trailer(&input[p..p + end]) {
            return Strict::Invalid;
        }
        trailers += end + 2;
        p += end + 2;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let size = 1 + usize::from(ctl >> 2);
    if ctl & 3 == 3 {
        // Content-Length: the first `n` bytes, `n` from the input's length.
        let n = (input.len() as u64 * u64::from(ctl)) / 255;
        let (body, end, used) = decode_body(BodyFraming::Length(n), input.chunks(size));
        let take = (n as usize).min(input.len());
        assert_eq!(body, &input[..take]);
        assert_eq!(used, take);
        assert_eq!(
            end,
            if take as u64 == n {
                BodyEnd::Complete
            } else {
                BodyEnd::NeedMore
            }
        );
        return;
    }

    let whole = decode_body(BodyFraming::Chunked, [input]);
    let split = decode_body(BodyFraming::Chunked, input.chunks(size));
    // (How much was consumed is only defined for a complete body.)
    assert_eq!(
        (&split.0, &split.1),
        (&whole.0, &whole.1),
        "read sizes changed the result"
    );
    if whole.1 == BodyEnd::Complete {
        assert_eq!(split.2, whole.2);
    }
    assert!(!matches!(whole.1, BodyEnd::Other(_)));
    match strict(input) {
        Strict::Complete(body, len) => assert_eq!(whole, (body, BodyEnd::Complete, len)),
        Strict::Partial(body) => {
            assert_eq!(whole.1, BodyEnd::NeedMore);
            assert_eq!(whole.0, body);
        }
        Strict::Invalid => {}
    }

    // The input as data, chunk-encoded in chunks of `size` bytes, with an extension
    // and a trailer when the control byte says so.
    let mut wire = Vec::new();
    for c in input.chunks(size) {
        wire.extend_from_slice(format!("{:x}", c.len()).as_bytes());
        if ctl & 1 == 1 {
            wire.extend_from_slice(b" ; name=\"v\\\"al\"");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(c);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n");
    if ctl & 2 == 2 {
        wire.extend_from_slice(b"X-Checksum: 1\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let len = wire.len();
    wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    let back = decode_body(BodyFraming::Chunked, wire.chunks(1 + usize::from(ctl)));
    assert_eq!(back.0, input);
    assert_eq!(back.1, BodyEnd::Complete);
    assert_eq!(back.2, len);
});
