//! Header work for forwarding: framing checks, hop-by-hop removal, X-Forwarded-*,
//! gateway headers that clients must not be able to forge.

use crate::error::GatewayError;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const ASSERTION: HeaderName = HeaderName::from_static("portcullis-jwt-assertion");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Refuses requests whose length is ambiguous, the raw material of request smuggling:
/// Content-Length together with Transfer-Encoding, more than one Content-Length, or a
/// Content-Length that is not a plain number.
pub fn check_framing(h: &HeaderMap) -> Result<(), GatewayError> {
    let mut cl = h.get_all(header::CONTENT_LENGTH).iter();
    let first = cl.next();
    if cl.next().is_some() {
        return Err(GatewayError::BadFraming("more than one Content-Length"));
    }
    if let Some(v) = first {
        let b = v.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return Err(GatewayError::BadFraming("Content-Length is not a number"));
        }
        if h.contains_key(header::TRANSFER_ENCODING) {
            return Err(GatewayError::BadFraming(
                "Content-Length together with Transfer-Encoding",
            ));
        }
    }
    Ok(())
}

pub use crate::web::body::content_length;

/// True for an HTTP/1.1 `Connection: upgrade` request naming a protocol.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && connection_has(h, "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop headers, including every header the Connection header names.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (for tunnels).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none, or only `Connection: keep-alive`: one pass of cheap
    // name comparisons finds which are there, and only those are removed.
    let mut present = 0u8;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let upgrade = keep_upgrade
        .then(|| h.get(header::UPGRADE).cloned())
        .flatten();
    // Tokens that are hop-by-hop names themselves, or connection options rather than
    // header names, need no lookup of their own.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|n| t.eq_ignore_ascii_case(n.as_str().as_bytes()))
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for (i, n) in HOP_BY_HOP.into_iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if let Some(u) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u);
    }
}

/// Response side: the same removal (Proxy-Authenticate is hop-by-hop there too).
pub fn strip_response(h: &mut HeaderMap, keep_upgrade: bool) {
    strip_hop_by_hop(h, keep_upgrade);
    h.remove(header::PROXY_AUTHENTICATE);
}

/// Sets X-Forwarded-For/-Proto/-Host. Values from a trusted proxy are kept and the
/// chain is appended to; from anyone else they are replaced, never believed.
pub fn set_forwarded(
    h: &mut HeaderMap,
    peer: &HeaderValue,
    trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let chain = trusted
        .then(|| h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()))
        .flatten()
        .filter(|prev| !prev.trim().is_empty())
        .and_then(|prev| {
            let peer = peer.to_str().ok()?;
            HeaderValue::from_str(&format!("{prev}, {peer}")).ok()
        });
    // Untrusted (the common case): the connection's own address, rendered once per
    // connection, replaces whatever the client sent.
    h.insert(X_FORWARDED_FOR, chain.unwrap_or_else(|| peer.clone()));
    if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && h.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(v) => {
                h.insert(X_FORWARDED_HOST, v.clone());
            }
            None => {
                h.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !trusted {
        h.remove(header::FORWARDED);
    }
}

/// Removes every `Portcullis-*` request header: only the gateway sets those.
pub fn strip_gateway_headers(h: &mut HeaderMap) {
    let ours: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("portcullis-"))
        .cloned()
        .collect();
    for k in ours {
        h.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn framing() {
        assert!(check_framing(&hm(&[("content-length", "5")])).is_ok());
        assert!(
            check_framing(&hm(&[
                ("content-length", "5"),
                ("transfer-encoding", "chunked")
            ]))
            .is_err()
        );
        assert!(check_framing(&hm(&[("content-length", "5"), ("content-length", "5")])).is_err());
        assert!(check_framing(&hm(&[("content-length", "5, 5")])).is_err());
        assert!(check_framing(&hm(&[("content-length", "-1")])).is_err());
    }

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = hm(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        // Names listed in Connection go even when no other hop-by-hop header is left,
        // in any case and spacing; an upgrade survives when asked to.
        let mut h = hm(&[
            ("connection", " X-A ,close,,Upgrade"),
            ("x-a", "1"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert!(!h.contains_key("x-a"));
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        let mut h = hm(&[("x-kept", "1"), ("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn forwarded_trust() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let mut h = hm(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "gopher"),
        ]);
        set_forwarded(&mut h, &ip, false, "https", None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = hm(&[("x-forwarded-for", "1.2.3.4")]);
        set_forwarded(&mut h, &ip, true, "https", None);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
    }
}
