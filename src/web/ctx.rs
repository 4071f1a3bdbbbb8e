//! What a handler knows about the request beyond its head: the scheme and port the
//! client used, the peer, and whether that peer is a trusted proxy.

use std::net::SocketAddr;

/// Per-request facts the steps share.
#[derive(Debug, Clone)]
pub struct ReqCtx {
    /// The scheme the client used (a trusted TLS terminator may say https).
    pub scheme: &'static str,
    pub host: String,
    pub port: Option<u16>,
    pub public_port: Option<u16>,
    pub peer: SocketAddr,
    pub peer_ip: http::HeaderValue,
    pub trusted: bool,
}

impl ReqCtx {
    /// `scheme://host[:port]` as the client reaches `host`: redirects keep the client's
    /// scheme and port unless `public_port` says otherwise.
    pub fn origin_for(&self, host: &str) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match self.public_port.or(self.port) {
            Some(p) if p != default => format!("{}://{host}:{p}", self.scheme),
            _ => format!("{}://{host}", self.scheme),
        }
    }

    /// The full URL of this request as the client sees it.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.origin_for(&self.host), path_and_query)
    }

    /// The auth domain's authorize URL that sends the browser back to `return_to`.
    pub fn login_url(&self, auth_domain: &str, return_to: &str) -> String {
        let q = super::query::encode(&[("return_to", return_to)]);
        format!("{}/authorize?{q}", self.origin_for(auth_domain))
    }
}
