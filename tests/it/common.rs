//! Test harness: the real gateway in-process on 127.0.0.1:0 with a settable clock, real
//! origin servers, and reqwest clients that resolve the test host names to loopback.

#![allow(dead_code)]

use portcullis::clock::{Clock, ManualClock};
use portcullis::config::{Config, Secrets};
use portcullis::server::{self, Handle};
use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub const DEMO: &str = "demo@example.com";
pub const DEMO_PW: &str = "portcullis-demo";
pub const BOB: &str = "bob@example.com";
pub const BOB_PW: &str = "bob-password";
pub const EVE: &str = "eve@other.org";
pub const EVE_PW: &str = "eve-password";

fn hash(pw: &str) -> String {
    portcullis::login::users::hash_password(pw).expect("hash")
}

/// Password hashes made once per test process (argon2 is slow by design).
pub fn hashes() -> &'static [String; 3] {
    static H: OnceLock<[String; 3]> = OnceLock::new();
    H.get_or_init(|| [hash(DEMO_PW), hash(BOB_PW), hash(EVE_PW)])
}

/// Users: demo (staff), bob (contractors), eve (other domain, no groups).
pub fn users_toml() -> String {
    let [d, b, e] = hashes();
    format!(
        r#"
[[user]]
email = "{DEMO}"
password_hash = "{d}"
groups = ["staff"]

[[user]]
email = "{BOB}"
password_hash = "{b}"
groups = ["contractors"]

[[user]]
email = "{EVE}"
password_hash = "{e}"
"#
    )
}

/// The default apps: echo (builtin, lax) and whatever the test adds.
pub fn config_text(extra: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
auth_domain = "auth.localhost"
state_dir = "state"
node_id = "test-1"
origin_timeout = "2s"

[session]
global_duration = "24h"
relogin_lockout = "60s"

[control]
listen = "127.0.0.1:0"
[[control.admin]]
name = "ops"
token_file = "state/admin.token"

[[app]]
name = "echo"
hosts = ["echo.localhost"]
origin = "builtin:echo"
allow_emails = ["*@example.com"]
{extra}
{users}
"#,
        users = users_toml()
    )
}

pub struct Gw {
    pub handle: Option<Handle>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub clock: Arc<ManualClock>,
    pub config_path: PathBuf,
}

impl Gw {
    /// Starts a gateway with `config_text(extra)` in a fresh folder.
    pub async fn start(extra: &str) -> Gw {
        Self::start_raw(&config_text(extra)).await
    }

    pub async fn start_raw(toml: &str) -> Gw {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut g = Self::start_in(&dir, toml, ManualClock::starting_now()).await;
        g._tmp = Some(tmp);
        g
    }

    /// Starts in an existing folder (for restarts and shared key folders).
    pub async fn start_in(dir: &Path, toml: &str, clock: Arc<ManualClock>) -> Gw {
        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let config = Config::load(&config_path, Secrets::Create).expect("valid config");
        let handle = server::start(config, clock.clone() as Arc<dyn Clock>)
            .await
            .expect("gateway starts");
        Gw {
            handle: Some(handle),
            dir: dir.to_path_buf(),
            _tmp: None,
            clock,
            config_path,
        }
    }

    pub fn h(&self) -> &Handle {
        self.handle.as_ref().expect("running")
    }
    pub fn gw(&self) -> &Arc<portcullis::server::Node> {
        &self.h().gateway
    }
    pub fn port(&self) -> u16 {
        self.h().https_addr.port()
    }
    pub fn control(&self) -> SocketAddr {
        self.h().control_addr
    }
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port())
    }
    pub fn control_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.control())
    }

    /// A browser-like client: cookie jar, no automatic redirects, every test host on loopback.
    pub fn client(&self) -> Client {
        client_for(self.h().https_addr, true)
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/admin.token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// An authenticated control call.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let c = Client::new();
        let mut rb = c
            .request(method, self.control_url(path))
            .bearer_auth(self.admin_token());
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("control call");
        let s = r.status();
        let v = r.json().await.unwrap_or(Value::Null);
        (s, v)
    }

    pub async fn revoke(&self, scope: &str, target: &str) -> Value {
        let (s, v) = self
            .admin(
                reqwest::Method::POST,
                "/v1/revocations",
                Some(serde_json::json!({"scope": scope, "target": target, "reason": "test"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Logs in through the real flow and lands on `path` of `host`.
    pub async fn login(
        &self,
        c: &Client,
        host: &str,
        path: &str,
        email: &str,
        pw: &str,
    ) -> Response {
        login_at(c, &self.url(host, path), email, pw).await
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

/// Every host name tests use, all sent to the gateway on loopback.
const TEST_HOSTS: [&str; 8] = [
    "echo.localhost",
    "auth.localhost",
    "app2.localhost",
    "strict.localhost",
    "up.localhost",
    "staff.localhost",
    "other.localhost",
    "open.localhost",
];

/// A builder that trusts the dev certificate, follows no redirects and resolves every
/// test host to `addr`.
pub fn builder_for(addr: SocketAddr) -> reqwest::ClientBuilder {
    let mut b = Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(20));
    for h in TEST_HOSTS {
        b = b.resolve(h, addr);
    }
    b
}

pub fn client_for(addr: SocketAddr, cookies: bool) -> Client {
    builder_for(addr)
        .cookie_store(cookies)
        .build()
        .expect("client")
}

pub fn location(r: &Response) -> Option<String> {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Resolves a Location against the URL it came from.
pub fn join(base: &str, loc: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(loc))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| loc.to_string())
}

/// Navigates like a browser: follows redirects (and the hop page of strict apps).
pub async fn navigate(c: &Client, url: &str) -> (Response, String) {
    let mut url = url.to_string();
    for _ in 0..12 {
        let r = c
            .get(&url)
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .expect("request");
        if let Some(loc) = location(&r).filter(|_| r.status().is_redirection()) {
            url = join(&url, &loc);
            continue;
        }
        return (r, url);
    }
    panic!("redirect loop at {url}");
}

pub fn extract(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html.find(&needle)? + needle.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}

/// Follows `url` to the login form, submits it, and follows on to the final page.
pub async fn login_at(c: &Client, url: &str, email: &str, pw: &str) -> Response {
    let (r, form_url) = navigate(c, url).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "expected the login form at {form_url}"
    );
    let html = r.text().await.expect("form");
    let csrf = extract(&html, "csrf").expect("csrf field");
    let return_to = extract(&html, "return_to").unwrap_or_default();
    let post = join(&form_url, "/login");
    let r = c
        .post(&post)
        .header("accept", "text/html")
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", pw),
            ("return_to", return_to.as_str()),
        ])
        .send()
        .await
        .expect("post login");
    match location(&r).filter(|_| r.status().is_redirection()) {
        Some(loc) => {
            let next = join(&post, &loc);
            navigate(c, &next).await.0
        }
        None => r,
    }
}

/// An XHR-style request.
pub async fn xhr(c: &Client, url: &str) -> Response {
    c.get(url)
        .header("x-requested-with", "XMLHttpRequest")
        .header("accept", "application/json")
        .send()
        .await
        .expect("xhr")
}

/// The gateway's app cookie value in a client's jar for `url`.
pub fn cookie(c_jar: &reqwest::cookie::Jar, url: &str, name: &str) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let u = url::Url::parse(url).ok()?;
    let h = c_jar.cookies(&u)?;
    h.to_str()
        .ok()?
        .split("; ")
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// A client with an explicit jar, for tests that read or plant cookies.
pub fn client_with_jar(addr: SocketAddr) -> (Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let c = builder_for(addr)
        .cookie_provider(jar.clone())
        .build()
        .expect("client");
    (c, jar)
}

/// A browser behind a load balancer: a cookie jar, and a new connection for every
/// request (no keep-alive pool), so consecutive requests reach different nodes.
pub fn fresh_connections_client(addr: SocketAddr) -> (Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let c = builder_for(addr)
        .cookie_provider(jar.clone())
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    (c, jar)
}

/// Accepts any server certificate: tests talk to the gateway's self-signed dev cert.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        portcullis::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A raw TLS connection with the given SNI and ALPN http/1.1, for hand-written requests.
pub async fn raw_tls(addr: SocketAddr, sni: &str) -> TlsStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tls_over(tcp, sni, b"http/1.1")
        .await
        .expect("tls handshake")
}

/// A TLS client handshake over `tcp` with the given SNI and ALPN protocol.
pub async fn tls_over(
    tcp: tokio::net::TcpStream,
    sni: &str,
    alpn: &[u8],
) -> std::io::Result<TlsStream> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("sni");
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// Sends raw bytes and reads until the server closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, sni: &str, request: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = raw_tls(addr, sni).await;
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The Cookie header value a client would send to `url`.
pub fn cookie_header(jar: &reqwest::cookie::Jar, url: &str) -> String {
    use reqwest::cookie::CookieStore;
    url::Url::parse(url)
        .ok()
        .and_then(|u| jar.cookies(&u))
        .and_then(|h| h.to_str().ok().map(str::to_string))
        .unwrap_or_default()
}

/// Writes a secret file (a peer token) readable by its owner only, as the gateway
/// demands of its secrets.
pub fn write_secret(path: &Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("create secret file");
    f.write_all(contents.as_bytes()).expect("write secret file");
}

/// A port for a server started later by number (a child process, chromedriver). Binding
/// port 0 and closing would hand out a port from the kernel's ephemeral range, which
/// any other test's listener or outgoing connection (to an origin, a peer) may take
/// before the server binds it. Ports below that range (32768 and up) are only ever
/// taken by number, so this picks one there that is free now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}
