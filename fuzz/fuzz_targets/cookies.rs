//! The Cookie header(s): `GatewayCookies::parse` and `strip_for_origin`.
//!
//! Input: Cookie header values separated by NUL (HTTP/2 sends one header per cookie).
//! Checked against a plain model of the header (split on `;`, then on the first `=`):
//! the parse finds exactly the gateway cookies the model finds (or refuses for the same
//! reason), and stripping removes the binding and CSRF cookies always and every gateway
//! cookie unless kept, keeps every other cookie in order, and leaves one header.
#![no_main]

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::session::cookies::{CookieError, GatewayCookies, strip_for_origin};

const OURS: [&str; 4] = [
    "portcullis_session",
    "portcullis_app",
    "portcullis_binding",
    "portcullis_csrf",
];

/// Every `(name, value)` of the headers, trimmed, empty pairs skipped.
fn model_pairs(values: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for v in values {
        for p in v.split(|b| *b == b';') {
            let p = p.trim_ascii();
            if p.is_empty() {
                continue;
            }
            let (n, v) = match p.iter().position(|b| *b == b'=') {
                Some(i) => (p[..i].trim_ascii(), p[i + 1..].trim_ascii()),
                None => (p, &p[..0]),
            };
            out.push((n.to_vec(), v.to_vec()));
        }
    }
    out
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// What `parse` must answer: the value of each of our four cookies, or the first refusal.
fn model_parse(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<[Option<Vec<u8>>; 4], CookieError> {
    let mut found: [Option<Vec<u8>>; 4] = Default::default();
    for (n, v) in pairs {
        let Some(i) = OURS.iter().position(|o| o.as_bytes() == n.as_slice()) else {
            continue;
        };
        if found[i].is_some() {
            return Err(CookieError::Duplicate);
        }
        let app = i == 1;
        if (!app && !v.iter().all(|b| token_char(*b))) || std::str::from_utf8(v).is_err() {
            return Err(CookieError::Malformed);
        }
        found[i] = Some(v.clone());
    }
    Ok(found)
}

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(COOKIE, HeaderValue::from_bytes(v).expect("checked"));
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let values: Vec<&[u8]> = data
        .split(|b| *b == 0)
        .filter(|v| HeaderValue::from_bytes(v).is_ok())
        .collect();
    let h = headers(&values);
    let pairs = model_pairs(&values);

    match (GatewayCookies::parse(&h), model_parse(&pairs)) {
        (Ok(c), Ok(want)) => {
            let got =
                [c.session, c.app, c.binding, c.csrf].map(|v| v.map(|s| s.as_bytes().to_vec()));
            assert_eq!(got, want);
            let any = pairs.iter().any(|(n, _)| n.starts_with(b"portcullis_"));
            assert_eq!(c.any, any);
        }
        (Err(e), Err(want)) => assert_eq!(e, want),
        (got, want) => panic!("parse {got:?}, model {want:?}"),
    }

    for keep in [false, true] {
        let mut h = headers(&values);
        strip_for_origin(&mut h, keep);
        let out: Vec<&HeaderValue> = h.get_all(COOKIE).iter().collect();
        assert!(out.len() <= 1, "one Cookie header at most");
        let untouched = values.len() == 1 && !values[0].windows(11).any(|w| w == b"portcullis_");
        if untouched {
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].as_bytes(), values[0]);
            continue;
        }
        let want: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .iter()
            .filter(|(n, _)| {
                let ours = n.starts_with(b"portcullis_");
                !ours || (keep && n != b"portcullis_binding" && n != b"portcullis_csrf")
            })
            .cloned()
            .collect();
        let got = out
            .first()
            .map(|v| model_pairs(&[v.as_bytes()]))
            .unwrap_or_default();
        // A pair without `=` comes back as `name=`: compare names and values.
        assert_eq!(got, want);
        if !keep {
            let again = GatewayCookies::parse(&h).expect("no gateway cookie is left");
            assert!(!again.any);
        }
    }
});
