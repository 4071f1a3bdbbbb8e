//! Clients for the revocation-signal endpoints, as the senders use them: a SCIM client
//! replaying the Okta and Entra requests of `tests/fixtures/scim` (each file names the
//! documentation it comes from), a Shared Signals transmitter (its own ES256 and RS256
//! keys, its JWKS served by a real HTTP server, SETs signed with jsonwebtoken), and a
//! webhook sender signing with an independent HMAC-SHA256 implementation.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const OKTA_USER: &str = "23a35c27-23d3-4c03-b4c5-6443c09e7173";
pub const OKTA_USER2: &str = "89bb1940-b905-4575-9e7f-6f887cfb368e";
pub const OKTA_GROUP: &str = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b";
pub const OKTA_EMAIL: &str = "test.user@okta.local";
pub const ENTRA_USER: &str = "5171a35d82074e068ce2";
pub const ENTRA_GROUP: &str = "a99962b9f99d4c4fac67";
/// The primary work email of `entra_create_user.json`, as the gateway keys it.
pub const ENTRA_EMAIL: &str = "test_user_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com";

/// One request an IdP sends, from `tests/fixtures/scim/<name>.json`.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub method: reqwest::Method,
    pub path: String,
    pub query: Option<String>,
    pub body: Option<String>,
}

pub fn fixture(name: &str) -> Fixture {
    let p = format!(
        "{}/tests/fixtures/scim/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).expect("fixture JSON");
    assert!(
        v["source"].as_str().is_some_and(|s| s.len() > 20),
        "{p} names its source"
    );
    Fixture {
        method: v["method"].as_str().unwrap().parse().unwrap(),
        path: v["path"].as_str().unwrap().into(),
        query: v["query"].as_str().map(str::to_string),
        body: v
            .get("body")
            .filter(|b| !b.is_null())
            .map(|b| b.to_string()),
    }
}

/// A SCIM answer.
#[derive(Debug)]
pub struct ScimResp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

/// Sends SCIM requests to one gateway's auth domain with a bearer token, replacing the
/// documentation's ids with the ones the server assigned.
pub struct ScimClient {
    pub base: String,
    pub token: String,
    http: Client,
    ids: Vec<(String, String)>,
}

impl ScimClient {
    pub fn new(addr: SocketAddr, port: u16, token: &str) -> ScimClient {
        ScimClient {
            base: format!("https://auth.localhost:{port}/scim/v2"),
            token: token.to_string(),
            http: crate::common::client_for(addr, false),
            ids: Vec::new(),
        }
    }

    /// A client of a balancer at `addr` (port `port`): a new connection per request,
    /// so consecutive requests land on different nodes.
    pub fn through_balancer(addr: SocketAddr, port: u16, token: &str) -> ScimClient {
        ScimClient {
            http: crate::common::fresh_connections_client(addr).0,
            ..ScimClient::new(addr, port, token)
        }
    }

    /// From now on `doc` (an id or address in the fixtures) means `ours`.
    pub fn map(&mut self, doc: &str, ours: &str) {
        self.ids.retain(|(d, _)| d != doc);
        self.ids.push((doc.to_string(), ours.to_string()));
    }

    fn mapped(&self, s: &str) -> String {
        self.ids
            .iter()
            .fold(s.to_string(), |acc, (d, o)| acc.replace(d, o))
    }

    pub async fn send(&self, f: &Fixture) -> ScimResp {
        let path = self.mapped(&f.path);
        let body = f.body.as_deref().map(|b| self.mapped(b));
        self.request(
            f.method.clone(),
            &path,
            f.query.as_deref(),
            body,
            Some(&self.token),
        )
        .await
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: Option<&str>,
        body: Option<String>,
        token: Option<&str>,
    ) -> ScimResp {
        let url = match query {
            Some(q) => format!("{}{path}?{q}", self.base),
            None => format!("{}{path}", self.base),
        };
        let mut rb = self
            .http
            .request(method, &url)
            .header("accept", "application/scim+json");
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/scim+json").body(b);
        }
        let r = rb.send().await.expect("SCIM request");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        ScimResp {
            status,
            headers,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> ScimResp {
        self.request(reqwest::Method::GET, path, None, None, Some(&self.token))
            .await
    }
}

/// A signing key of the test transmitter.
pub struct TxKey {
    enc: EncodingKey,
    pub jwk: Jwk,
    pub alg: Algorithm,
    pub kid: String,
}

pub fn tx_key(alg: Algorithm, kid: &str) -> TxKey {
    let kp = match alg {
        Algorithm::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        _ => rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap(),
    };
    let pem = kp.serialize_pem();
    let enc = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    TxKey {
        enc,
        jwk,
        alg,
        kid: kid.into(),
    }
}

impl TxKey {
    /// A Security Event Token with these claims, `typ` `secevent+jwt`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.typ = Some("secevent+jwt".into());
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }
}

/// A real HTTP server on 127.0.0.1 answering every request with the JWKS document.
pub struct JwksServer {
    pub url: String,
    pub doc: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve_jwks(keys: &[&TxKey]) -> JwksServer {
    let doc = json!({"keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>()}).to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let doc = Arc::new(Mutex::new(doc));
    let d = doc.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let d = d.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = d.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    JwksServer { url, doc, task }
}

/// `Portcullis-Signature: t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, computed with
/// the hmac-sha256 crate (not the gateway's code).
pub fn hook_signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let mac = hmac_sha256::HMAC::mac(&msg, secret);
    format!("t={t},v1={}", hex_of(&mac))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of one sample on a Prometheus text page (0 when absent).
pub fn metric(page: &str, sample: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}
