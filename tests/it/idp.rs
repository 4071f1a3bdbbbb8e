//! The OpenID Connect protocol layer (`portcullis::idp`) against a real, certified
//! OpenID Provider: panva's `oidc-provider` run by node from `tests/oidc/provider.mjs`.
//! Users sign in through the OP's own pages with an HTTP client (cookies on, redirects
//! followed by hand), the code comes back in the redirect to the RP's callback URI, and
//! back-channel logout tokens arrive at a real listener.
//!
//! The harness at the top (`TestOp`, `sign_in`, `BackChannel`, `op_logout`) is meant to
//! be reused by the gateway's end-to-end IdP tests.

#![allow(dead_code)]

use crate::common::{extract, free_port, join, location};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::clock::{Clock, Micros, SystemClock};
use portcullis::idp::{
    BACKCHANNEL_LOGOUT_EVENT, Callback, IdpConfig, IdpError, IdpIdentity, IdpSlot, IdpStatus,
    PendingAuth, Provider,
};
use reqwest::Client;
use serde_json::{Value, json};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use url::Url;

// ---- the test OpenID Provider -------------------------------------------------------

pub const RP_SECRET: &str = "rp-secret-0123456789";
pub const ALICE: &str = "Alice@Example.com";
pub const ALICE_PW: &str = "alice-pw";
pub const ALICE_OTP: &str = "424242";
pub const MFA_ACR: &str = "urn:portcullis:mfa";
pub const PWD_ACR: &str = "urn:portcullis:pwd";

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Runs `.ci/install-oidc.sh` once per test process when node_modules is missing.
fn ensure_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if oidc_dir()
            .join("node_modules/oidc-provider/package.json")
            .exists()
        {
            return;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-oidc.sh");
        let ok = std::process::Command::new("bash")
            .arg(script)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            ".ci/install-oidc.sh failed: the test OP cannot be installed"
        );
    });
}

/// A private signing key of the OP (`expose_signing_keys`), to forge tokens with.
#[derive(Debug, Clone)]
pub struct OpKey {
    pub kid: String,
    pub alg: String,
    pub pem: String,
}

/// A running `provider.mjs`. Killed on drop (and it exits by itself when the test
/// process goes away, since its stdin closes).
pub struct TestOp {
    child: tokio::process::Child,
    pub port: u16,
    pub issuer: String,
    pub keys: Vec<OpKey>,
}

impl TestOp {
    /// Starts the OP with `config` (see the header of provider.mjs); `exit_on_stdin_eof`
    /// is forced on. Waits for its ready line.
    pub async fn start(mut config: Value) -> TestOp {
        ensure_installed();
        config["exit_on_stdin_eof"] = json!(true);
        let mut child = tokio::process::Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .env("OP_CONFIG_JSON", config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node tests/oidc/provider.mjs");
        // The OP's log goes to the test's (captured) output, without its start-up notes
        // about the Node version and the in-memory store.
        let stderr = child.stderr.take().expect("stderr");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.starts_with("oidc-provider WARNING") {
                    eprintln!("[test OP] {line}");
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read OP stdout") {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["ready"] == json!(true)
                {
                    return v;
                }
            }
            panic!("the test OP exited before it was ready");
        })
        .await
        .expect("the test OP did not start within 30 s");
        // Keep draining stdout so the OP never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let keys = ready["signing_keys"]
            .as_array()
            .map(|ks| {
                ks.iter()
                    .map(|k| OpKey {
                        kid: k["kid"].as_str().unwrap_or_default().into(),
                        alg: k["alg"].as_str().unwrap_or_default().into(),
                        pem: k["pem"].as_str().unwrap_or_default().into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        TestOp {
            child,
            port: ready["port"].as_u64().expect("port") as u16,
            issuer: ready["issuer"].as_str().expect("issuer").to_string(),
            keys,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn key(&self, alg: &str) -> &OpKey {
        self.keys
            .iter()
            .find(|k| k.alg == alg)
            .expect("an exposed key of that alg")
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A client of the OP with its own cookie jar (one "browser").
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// What a sign-in through the OP's pages ended with.
#[derive(Debug)]
pub struct SignIn {
    /// The redirect to the RP's callback URI (carrying `code`/`state`, or `error`).
    pub callback: Url,
    /// Whether the OP asked for the password (false: its session signed in silently).
    pub login_page_shown: bool,
    /// The `acr_values` the login page said were asked for.
    pub acr_asked: Option<String>,
}

impl SignIn {
    pub fn query(&self) -> &str {
        self.callback.query().unwrap_or("")
    }
}

/// Credentials typed into the OP's login page.
#[derive(Debug, Clone, Copy)]
pub struct Creds<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub otp: Option<&'a str>,
    /// Press "Cancel" instead (the OP answers `error=access_denied`).
    pub cancel: bool,
}

pub fn creds<'a>(email: &'a str, password: &'a str) -> Creds<'a> {
    Creds {
        email,
        password,
        otp: None,
        cancel: false,
    }
}

/// Follows the authorization URL through the OP's pages like a browser, filling in the
/// login form when the OP shows it, until the OP redirects to `redirect_uri`.
pub async fn sign_in(c: &Client, auth_url: &Url, redirect_uri: &Url, who: Creds<'_>) -> SignIn {
    let mut url = auth_url.to_string();
    let mut login_page_shown = false;
    let mut acr_asked = None;
    let mut form: Option<Vec<(&str, &str)>> = None;
    for _ in 0..16 {
        let req = match form.take() {
            Some(fields) => c.post(&url).form(&fields),
            None => c.get(&url),
        };
        let r = req.send().await.expect("OP request");
        if r.status().is_redirection() {
            let next = join(&url, &location(&r).expect("Location"));
            if next.starts_with(redirect_uri.as_str()) {
                let callback = Url::parse(&next).expect("callback URL");
                return SignIn {
                    callback,
                    login_page_shown,
                    acr_asked,
                };
            }
            url = next;
            continue;
        }
        let status = r.status();
        let body = r.text().await.expect("body");
        assert_eq!(status, 200, "unexpected OP page at {url}: {body}");
        let action = form_action(&body, if who.cancel { "abort" } else { "login" })
            .unwrap_or_else(|| panic!("no login form at {url}: {body}"));
        login_page_shown = true;
        acr_asked = between(&body, "acr_values: ", "</p>").map(str::to_string);
        url = join(&url, &action);
        form = Some(if who.cancel {
            vec![]
        } else {
            vec![
                ("email", who.email),
                ("password", who.password),
                ("otp", who.otp.unwrap_or("")),
            ]
        });
    }
    panic!("no redirect to {redirect_uri} after 16 steps from {auth_url}");
}

pub fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

pub fn form_action(html: &str, id: &str) -> Option<String> {
    let form = &html[html.find(&format!("<form id=\"{id}\""))?..];
    between(form, "action=\"", "\"").map(|a| a.replace("&amp;", "&"))
}

/// RP-initiated logout at the OP from this browser: opens `end_session_url`, confirms
/// ("Yes, sign me out"). The OP POSTs its logout tokens to the clients'
/// `backchannel_logout_uri`s before it answers the confirmation. Returns where the OP
/// sent the browser afterwards.
pub async fn op_logout(c: &Client, end_session_url: &Url) -> String {
    let r = c
        .get(end_session_url.as_str())
        .send()
        .await
        .expect("end_session");
    assert_eq!(r.status(), 200, "end_session page");
    let page = r.text().await.expect("body");
    let xsrf = extract(&page, "xsrf").expect("xsrf in the logout form");
    let action = between(&page, "action=\"", "\"").expect("logout form action");
    let confirm = join(end_session_url.as_str(), action);
    let r = c
        .post(&confirm)
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .expect("end_session confirm");
    assert!(
        r.status().is_redirection(),
        "confirm answered {}",
        r.status()
    );
    join(&confirm, &location(&r).expect("Location"))
}

/// A listener standing in for the RP's `backchannel_logout_uri`: answers 200 and hands
/// every `logout_token` it receives (with the request's Host) to the test.
pub struct BackChannel {
    pub url: String,
    /// For the OP's `backchannel.resolve`: `"<host>:<port>"` → `"127.0.0.1:<port>"`.
    pub resolve: (String, String),
    /// The self-signed certificate (PEM file) of a TLS listener, for `backchannel.ca_file`.
    pub ca_file: Option<tempfile::NamedTempFile>,
    tokens: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BackChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Received = mpsc::UnboundedSender<(String, String)>;

async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    tx: Received,
) -> hyper::Response<http_body_util::Empty<bytes::Bytes>> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    for (k, v) in form_urlencoded::parse(&body) {
        if k == "logout_token" {
            let _ = tx.send((host.clone(), v.into_owned()));
        }
    }
    hyper::Response::new(http_body_util::Empty::new())
}

async fn serve<S>(s: S, tx: Received)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let tx = tx.clone();
        async move { Ok::<_, std::convert::Infallible>(receive(req, tx).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
        .await;
}

impl BackChannel {
    /// Plain HTTP on 127.0.0.1.
    pub async fn start() -> BackChannel {
        Self::start_as(None).await
    }

    /// HTTPS under `host` (e.g. `auth.localhost`) with a fresh self-signed certificate;
    /// the OP reaches it through `resolve` and trusts it through `ca_file`.
    pub async fn start_tls(host: &str) -> BackChannel {
        Self::start_as(Some(host)).await
    }

    async fn start_as(tls_host: Option<&str>) -> BackChannel {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let (acceptor, ca_file, host) = match tls_host {
            None => (None, None, addr.ip().to_string()),
            Some(host) => {
                let key = rcgen::KeyPair::generate().expect("key");
                let params = rcgen::CertificateParams::new(vec![host.to_string()]).expect("params");
                let cert = params.self_signed(&key).expect("cert");
                let ca = tempfile::NamedTempFile::new().expect("temp file");
                std::fs::write(ca.path(), cert.pem()).expect("write cert");
                let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
                    .expect("key der");
                let cfg = rustls::ServerConfig::builder_with_provider(portcullis::tls::provider())
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_no_client_auth()
                    .with_single_cert(vec![cert.der().clone()], der)
                    .expect("server config");
                let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
                (Some(acceptor), Some(ca), host.to_string())
            }
        };
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let authority = format!("{host}:{}", addr.port());
        let url = format!("{scheme}://{authority}/backchannel-logout");
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let tx = tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(s, tx).await,
                        Some(a) => {
                            if let Ok(tls) = a.accept(s).await {
                                serve(tls, tx).await
                            }
                        }
                    }
                });
            }
        });
        BackChannel {
            url,
            resolve: (authority, addr.to_string()),
            ca_file,
            tokens: tokio::sync::Mutex::new(rx),
            task,
        }
    }

    /// The OP's `backchannel` settings that reach this listener.
    pub fn op_settings(&self) -> Value {
        let mut v = json!({"resolve": {self.resolve.0.clone(): self.resolve.1.clone()}});
        if let Some(ca) = &self.ca_file {
            v["ca_file"] = json!(ca.path());
        }
        v
    }

    /// The next logout token received, with the Host it was sent to (waits up to 5 s).
    pub async fn next_with_host(&self) -> (String, String) {
        let mut rx = self.tokens.lock().await;
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no logout token within 5 s")
            .expect("channel open")
    }

    /// The next logout token received (waits up to 5 s).
    pub async fn next(&self) -> String {
        self.next_with_host().await.1
    }

    /// Whether a token arrived (without waiting).
    pub async fn try_next(&self) -> Option<String> {
        self.tokens.lock().await.try_recv().ok().map(|(_, t)| t)
    }
}

// ---- fixtures ------------------------------------------------------------------------

fn now() -> Micros {
    SystemClock.now_us()
}

fn redirect_uri(idp: &str) -> Url {
    Url::parse(&format!("https://auth.localhost:8443/oidc/{idp}/callback")).expect("url")
}

fn post_logout_uri() -> Url {
    Url::parse("https://auth.localhost:8443/signed-out").expect("url")
}

fn op_client(client_id: &str, idp: &str, backchannel: Option<&str>) -> Value {
    let mut c = json!({
        "client_id": client_id,
        "client_secret": RP_SECRET,
        "redirect_uris": [redirect_uri(idp).as_str()],
        "post_logout_redirect_uris": [post_logout_uri().as_str()],
    });
    if let Some(uri) = backchannel {
        c["backchannel_logout_uri"] = json!(uri);
    }
    c
}

fn op_config(clients: Vec<Value>) -> Value {
    json!({
        "clients": clients,
        "users": [
            {"email": ALICE, "password": ALICE_PW, "groups": ["staff", "eng"], "otp": ALICE_OTP},
            {"email": "nogroups@example.com", "password": "pw"},
            {"email": "unverified@example.com", "password": "pw", "email_verified": false},
        ],
        "acr_values": [PWD_ACR, MFA_ACR],
        "expose_signing_keys": true,
    })
}

fn idp_config(name: &str, issuer: &str, client_id: &str) -> IdpConfig {
    IdpConfig {
        name: name.into(),
        display_name: format!("{name} SSO"),
        issuer: issuer.into(),
        client_id: client_id.into(),
        client_secret: RP_SECRET.into(),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        groups_claim: "groups".into(),
        end_session: true,
        mfa_acr_values: vec![MFA_ACR.into()],
        reauth: Default::default(),
    }
}

async fn discover(name: &str, op: &TestOp, client_id: &str) -> Provider {
    let http = portcullis::idp::http_client().expect("http client");
    Provider::discover(idp_config(name, &op.issuer, client_id), &http)
        .await
        .expect("discovery")
}

/// Starts a sign-in and goes through the OP's pages: returns the callback and pending.
async fn signed_in(
    p: &Provider,
    c: &Client,
    force: bool,
    who: Creds<'_>,
) -> (SignIn, Callback, PendingAuth) {
    let redirect = redirect_uri(&p.config().name);
    let (url, pending) = p.authorization_url(&redirect, force, now());
    let s = sign_in(c, &url, &redirect, who).await;
    let cb = Callback::from_query(s.query()).expect("a code in the callback");
    (s, cb, pending)
}

async fn sign_in_alice(p: &Provider, c: &Client) -> (SignIn, IdpIdentity) {
    let (s, cb, pending) = signed_in(p, c, false, creds(ALICE, ALICE_PW)).await;
    let id = p
        .exchange(&cb, &pending, &redirect_uri(&p.config().name), None, now())
        .await
        .expect("exchange");
    (s, id)
}

fn query_of(url: &Url) -> std::collections::HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

// ---- sign-in --------------------------------------------------------------------------

#[tokio::test]
async fn sign_in_through_the_op_yields_the_verified_identity() {
    // oidc-provider puts `sid` in ID tokens for clients registered for back-channel logout.
    let bc = BackChannel::start().await;
    let op = TestOp::start(op_config(vec![op_client("rp", "corp", Some(&bc.url))])).await;
    let p = discover("corp", &op, "rp").await;
    let redirect = redirect_uri("corp");
    let t0 = now();
    let (url, pending) = p.authorization_url(&redirect, false, t0);
    let q = query_of(&url);
    assert!(url.as_str().starts_with(&op.url("/auth")), "{url}");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "rp");
    assert_eq!(q["redirect_uri"], redirect.as_str());
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"], pending.state);
    assert_eq!(q["nonce"], pending.nonce);
    assert_eq!(
        q["scope"].split(' ').collect::<Vec<_>>(),
        ["openid", "email", "profile"]
    );
    assert!(
        !q.contains_key("prompt") && !q.contains_key("max_age") && !q.contains_key("acr_values")
    );
    // The challenge is S256 of the verifier the pending sign-in keeps.
    let digest = sha2::Sha256::digest(pending.pkce_verifier.as_bytes());
    assert_eq!(q["code_challenge"], URL_SAFE_NO_PAD.encode(digest));
    assert_eq!(
        (pending.idp.as_str(), pending.created, pending.force_reauth),
        ("corp", t0, false)
    );

    let c = browser();
    let s = sign_in(&c, &url, &redirect, creds(ALICE, ALICE_PW)).await;
    assert!(s.login_page_shown);
    let cb = Callback::from_query(s.query()).expect("code");
    assert_eq!(
        cb.iss.as_deref(),
        Some(op.issuer.as_str()),
        "the OP sends RFC 9207 iss"
    );
    let id = p
        .exchange(&cb, &pending, &redirect, None, now())
        .await
        .expect("exchange");
    assert_eq!(id.idp, "corp");
    assert_eq!(id.email, "alice@example.com", "lowercased");
    assert_eq!(id.groups, ["staff", "eng"]);
    assert_eq!(id.sub, "user-1");
    assert!(
        id.sid.as_deref().is_some_and(|s| !s.is_empty()),
        "sid claim: {id:?}"
    );
    let auth_time = id.auth_time.expect("auth_time");
    assert!(
        auth_time >= t0 / 1_000_000 * 1_000_000 - 1_000_000 && auth_time <= now(),
        "{auth_time} vs {t0}"
    );
    assert_eq!(id.id_token.split('.').count(), 3);

    // The same callback again: the OP refuses a code it already redeemed.
    let replay = p.exchange(&cb, &pending, &redirect, None, now()).await;
    assert!(
        matches!(&replay, Err(IdpError::CodeRejected { error, .. }) if error == "invalid_grant"),
        "{replay:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn groups_absent_and_unverified_email() {
    let op = TestOp::start(op_config(vec![op_client("rp", "corp", None)])).await;
    let p = discover("corp", &op, "rp").await;
    let (_, id) = {
        let c = browser();
        let (s, cb, pending) = signed_in(&p, &c, false, creds("nogroups@example.com", "pw")).await;
        (
            s,
            p.exchange(&cb, &pending, &redirect_uri("corp"), None, now())
                .await
                .expect("exchange"),
        )
    };
    assert_eq!(
        (id.email.as_str(), id.groups.len()),
        ("nogroups@example.com", 0)
    );

    let c = browser();
    let (_, cb, pending) = signed_in(&p, &c, false, creds("unverified@example.com", "pw")).await;
    let r = p
        .exchange(&cb, &pending, &redirect_uri("corp"), None, now())
        .await;
    assert!(
        matches!(&r, Err(IdpError::IdentityRefused(m)) if m.contains("not verified")),
        "{r:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn callbacks_that_do_not_match_the_sign_in_are_refused_before_the_code_is_spent() {
    let op = TestOp::start(op_config(vec![op_client("rp", "corp", None)])).await;
    let p = discover("corp", &op, "rp").await;
    let redirect = redirect_uri("corp");
    let c = browser();
    let (_, cb, pending) = signed_in(&p, &c, false, creds(ALICE, ALICE_PW)).await;

    let wrong_state = Callback {
        state: format!("{}x", cb.state),
        ..cb.clone()
    };
    let r = p
        .exchange(&wrong_state, &pending, &redirect, None, now())
        .await;
    assert_eq!(r.err(), Some(IdpError::BadState));
    let other_iss = Callback {
        iss: Some("https://evil.example".into()),
        ..cb.clone()
    };
    let r = p
        .exchange(&other_iss, &pending, &redirect, None, now())
        .await;
    assert_eq!(r.err(), Some(IdpError::BadState), "IdP mix-up (RFC 9207)");
    let other_idp = PendingAuth {
        idp: "other".into(),
        ..pending.clone()
    };
    let r = p.exchange(&cb, &other_idp, &redirect, None, now()).await;
    assert_eq!(r.err(), Some(IdpError::BadState));
    let late = now() + 11 * 60 * 1_000_000;
    let r = p.exchange(&cb, &pending, &redirect, None, late).await;
    assert_eq!(r.err(), Some(IdpError::PendingExpired));

    // None of these reached the OP: the code still works with the right callback.
    let id = p
        .exchange(&cb, &pending, &redirect, None, now())
        .await
        .expect("exchange");
    assert_eq!(id.email, "alice@example.com");

    // A code exchanged with another sign-in's PKCE verifier is refused by the OP.
    let (_, cb2, pending2) = signed_in(&p, &c, false, creds(ALICE, ALICE_PW)).await;
    let crossed = PendingAuth {
        pkce_verifier: pending.pkce_verifier.clone(),
        ..pending2
    };
    let r = p.exchange(&cb2, &crossed, &redirect, None, now()).await;
    assert!(matches!(r, Err(IdpError::CodeRejected { .. })), "{r:?}");
    op.stop().await;
}

#[tokio::test]
async fn the_op_can_refuse_the_sign_in() {
    let op = TestOp::start(op_config(vec![op_client("rp", "corp", None)])).await;
    let p = discover("corp", &op, "rp").await;
    let redirect = redirect_uri("corp");
    let (url, _pending) = p.authorization_url(&redirect, false, now());
    let cancel = Creds {
        cancel: true,
        ..creds(ALICE, ALICE_PW)
    };
    let s = sign_in(&browser(), &url, &redirect, cancel).await;
    let r = Callback::from_query(s.query());
    assert!(
        matches!(&r, Err(IdpError::Denied { error, .. }) if error == "access_denied"),
        "{r:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn id_tokens_for_another_client_expired_or_altered_are_refused() {
    let op = TestOp::start(op_config(vec![
        op_client("rp", "corp", None),
        op_client("rp-other", "other", None),
    ]))
    .await;
    let a = discover("corp", &op, "rp").await;
    let b = discover("other", &op, "rp-other").await;
    let c = browser();
    let (_, cb_a, pending_a) = signed_in(&a, &c, false, creds(ALICE, ALICE_PW)).await;
    let id_a = a
        .exchange(&cb_a, &pending_a, &redirect_uri("corp"), None, now())
        .await
        .expect("a");
    let (_, cb_b, pending_b) = signed_in(&b, &c, false, creds(ALICE, ALICE_PW)).await;
    let id_b = b
        .exchange(&cb_b, &pending_b, &redirect_uri("other"), None, now())
        .await
        .expect("b");

    // Baseline: A's token passes A's checks again with its own nonce at the same time.
    a.verify_id_token(&id_a.id_token, &pending_a, None, now())
        .await
        .expect("baseline");

    let refused = |r: Result<IdpIdentity, IdpError>, what: &str| match r {
        Err(IdpError::TokenRefused(m)) => m,
        other => panic!("{what}: expected TokenRefused, got {other:?}"),
    };
    let m = refused(
        a.verify_id_token(&id_b.id_token, &pending_b, None, now())
            .await,
        "aud",
    );
    assert!(m.contains("audience"), "{m}");
    let m = refused(
        a.verify_id_token(&id_a.id_token, &pending_b, None, now())
            .await,
        "nonce",
    );
    assert!(m.contains("nonce"), "{m}");
    let two_hours = 2 * 3600 * 1_000_000;
    let m = refused(
        a.verify_id_token(&id_a.id_token, &pending_a, None, now() + two_hours)
            .await,
        "exp",
    );
    assert!(m.to_lowercase().contains("expired"), "{m}");
    let m = refused(
        a.verify_id_token(&id_a.id_token, &pending_a, None, now() - 5 * 60 * 1_000_000)
            .await,
        "iat",
    );
    assert!(m.contains("future"), "{m}");

    // Altered payload (another email), original signature.
    let parts: Vec<&str> = id_a.id_token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["email"] = json!("mallory@example.com");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    refused(
        a.verify_id_token(&forged, &pending_a, None, now()).await,
        "altered",
    );
    // alg none, same claims.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    refused(
        a.verify_id_token(&unsigned, &pending_a, None, now()).await,
        "alg none",
    );

    // Tokens signed with the OP's own key, claims copied from the real one: the copy
    // passes; several audiences without `azp`, or an `azp` that is not us, do not.
    let rs = op.key("RS256");
    let copy = forge(rs, None, &claims_of(&id_a.id_token));
    a.verify_id_token(&copy, &pending_a, None, now())
        .await
        .expect("a faithful copy passes");
    let mut multi = claims_of(&id_a.id_token);
    multi["aud"] = json!(["rp", "rp-other"]);
    let m = refused(
        a.verify_id_token(&forge(rs, None, &multi), &pending_a, None, now())
            .await,
        "multi aud",
    );
    assert!(m.contains("audience"), "{m}");
    let mut azp = claims_of(&id_a.id_token);
    azp["azp"] = json!("rp-other");
    let m = refused(
        a.verify_id_token(&forge(rs, None, &azp), &pending_a, None, now())
            .await,
        "azp",
    );
    assert!(m.contains("azp"), "{m}");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(rs.kid.clone());
    let hmac = jsonwebtoken::encode(
        &hs,
        &claims_of(&id_a.id_token),
        &EncodingKey::from_secret(RP_SECRET.as_bytes()),
    );
    refused(
        a.verify_id_token(&hmac.expect("hs"), &pending_a, None, now())
            .await,
        "HS256",
    );
    op.stop().await;
}

// ---- re-authentication -----------------------------------------------------------------

#[tokio::test]
async fn force_reauth_makes_the_op_ask_again_and_auth_time_is_checked() {
    let op = TestOp::start(op_config(vec![op_client("rp", "corp", None)])).await;
    let p = discover("corp", &op, "rp").await;
    let redirect = redirect_uri("corp");
    let c = browser();
    let (_, first) = sign_in_alice(&p, &c).await;
    let t1 = first.auth_time.expect("auth_time");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revoked_at = now(); // e.g. the user's sessions were revoked now

    // Without force the OP's session signs the user in silently, with the old auth_time,
    // which is refused once a re-authentication is required.
    let (s, cb, pending) = signed_in(&p, &c, false, creds(ALICE, ALICE_PW)).await;
    assert!(!s.login_page_shown, "the OP's session signs in silently");
    let r = p
        .exchange(&cb, &pending, &redirect, Some(revoked_at), now())
        .await;
    match r {
        Err(e @ IdpError::ReauthRequired { .. }) => {
            assert!(e.needs_reauth());
            assert_eq!(
                e,
                IdpError::ReauthRequired {
                    auth_time: Some(t1),
                    required: revoked_at
                }
            );
        }
        other => panic!("expected ReauthRequired, got {other:?}"),
    }
    // The same check after the fact, once the gateway knows who signed in.
    let (_, cb, pending) = signed_in(&p, &c, false, creds(ALICE, ALICE_PW)).await;
    let id = p
        .exchange(&cb, &pending, &redirect, None, now())
        .await
        .expect("exchange");
    assert_eq!(id.auth_time, Some(t1));
    assert!(
        id.check_fresh(&pending, Some(revoked_at))
            .is_err_and(|e| e.needs_reauth())
    );
    assert_eq!(id.check_fresh(&pending, Some(t1)), Ok(()));

    // Forced: prompt=login, max_age=0 and the MFA acr are sent; the OP shows its login page.
    let (url, pending) = p.authorization_url(&redirect, true, now());
    let q = query_of(&url);
    assert_eq!(
        (q["prompt"].as_str(), q["max_age"].as_str()),
        ("login", "0")
    );
    assert_eq!(q["acr_values"], MFA_ACR);
    assert_eq!(pending.acr_values, [MFA_ACR]);
    // A password alone does not satisfy the acr asked for.
    let s = sign_in(&c, &url, &redirect, creds(ALICE, ALICE_PW)).await;
    assert!(s.login_page_shown, "prompt=login makes the OP ask again");
    assert_eq!(s.acr_asked.as_deref(), Some(MFA_ACR));
    let cb = Callback::from_query(s.query()).expect("code");
    let r = p
        .exchange(&cb, &pending, &redirect, Some(revoked_at), now())
        .await;
    assert!(
        matches!(&r, Err(IdpError::AcrNotSatisfied { acr: Some(a), .. }) if a == PWD_ACR),
        "{r:?}"
    );
    // With the second factor: accepted, with a fresh auth_time.
    let (url, pending) = p.authorization_url(&redirect, true, now());
    let mfa = Creds {
        otp: Some(ALICE_OTP),
        ..creds(ALICE, ALICE_PW)
    };
    let s = sign_in(&c, &url, &redirect, mfa).await;
    assert!(s.login_page_shown);
    let cb = Callback::from_query(s.query()).expect("code");
    let id = p
        .exchange(&cb, &pending, &redirect, Some(revoked_at), now())
        .await
        .expect("fresh");
    assert_eq!(id.acr.as_deref(), Some(MFA_ACR));
    let t2 = id.auth_time.expect("auth_time");
    assert!(
        t2 > t1 && t2 >= revoked_at / 1_000_000 * 1_000_000,
        "auth_time moved: {t1} -> {t2}"
    );
    op.stop().await;
}

// ---- keys ---------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_signing_keys_trigger_one_bounded_jwks_refetch() {
    let port = free_port();
    let mut config = op_config(vec![op_client("rp", "corp", None)]);
    config["port"] = json!(port);
    let op = TestOp::start(config.clone()).await;
    let p = discover("corp", &op, "rp").await;
    op.stop().await;
    // The OP restarts with new keys (a key rotation); the provider still has the old JWKS.
    let op = TestOp::start(config.clone()).await;
    assert_eq!(op.port, port);
    let (_, id) = sign_in_alice(&p, &browser()).await;
    assert_eq!(
        id.email, "alice@example.com",
        "refetched the JWKS on the unknown kid"
    );
    op.stop().await;

    // Rotated again right away: no second refetch within the interval.
    let op = TestOp::start(config).await;
    let c = browser();
    let (_, cb, pending) = signed_in(&p, &c, false, creds(ALICE, ALICE_PW)).await;
    let r = p
        .exchange(&cb, &pending, &redirect_uri("corp"), None, now())
        .await;
    assert!(
        matches!(&r, Err(IdpError::TokenRefused(m)) if m.contains("does not publish")),
        "{r:?}"
    );
    // Once the interval has passed, the next unknown kid refetches again.
    let later = now() + 61 * 1_000_000;
    let (_, cb, pending) = signed_in(&p, &c, false, creds(ALICE, ALICE_PW)).await;
    let pending = PendingAuth {
        created: later,
        ..pending
    };
    let id = p
        .exchange(&cb, &pending, &redirect_uri("corp"), None, later)
        .await
        .expect("refetched");
    assert_eq!(id.email, "alice@example.com");
    op.stop().await;
}

// ---- availability ----------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_idp_is_unavailable_until_a_retry_finds_it() {
    let port = free_port();
    let http = portcullis::idp::http_client().expect("http");
    let cfg = idp_config("corp", &format!("http://127.0.0.1:{port}"), "rp");
    let t0 = now();
    let slot = IdpSlot::new(cfg, t0);
    assert!(slot.discover(&http, t0).await.is_err());
    match slot.provider() {
        Err(IdpError::Unavailable { idp, reason }) => {
            assert_eq!(idp, "corp");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let mut config = op_config(vec![op_client("rp", "corp", None)]);
    config["port"] = json!(port);
    let op = TestOp::start(config).await;
    assert!(
        !slot
            .retry_if_due(&http, t0 + 1_000_000, Duration::from_secs(30))
            .await,
        "not due yet"
    );
    assert!(slot.provider().is_err());
    assert!(
        slot.retry_if_due(&http, t0 + 31_000_000, Duration::from_secs(30))
            .await
    );
    assert!(matches!(*slot.status(), IdpStatus::Ready(_)));
    let p = slot.provider().expect("ready");
    let (_, id) = sign_in_alice(&p, &browser()).await;
    assert_eq!(id.email, "alice@example.com");

    // Once discovered, a failed rediscovery (the IdP is down during a reload) keeps it.
    op.stop().await;
    assert!(slot.discover(&http, now()).await.is_err());
    assert!(slot.provider().is_ok());
}

// ---- logout -------------------------------------------------------------------------------

pub fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

pub fn forge(key: &OpKey, header_typ: Option<&str>, claims: &Value) -> String {
    let alg = match key.alg.as_str() {
        "RS256" => Algorithm::RS256,
        _ => Algorithm::ES256,
    };
    let enc = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(key.pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(key.pem.as_bytes()),
    }
    .expect("encoding key");
    let mut h = Header::new(alg);
    h.kid = Some(key.kid.clone());
    h.typ = header_typ.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &enc).expect("sign")
}

#[tokio::test]
async fn back_channel_logout_tokens_from_the_op_verify_and_forgeries_do_not() {
    let bc = BackChannel::start().await;
    let op = TestOp::start(op_config(vec![op_client("rp", "corp", Some(&bc.url))])).await;
    let p = discover("corp", &op, "rp").await;
    let c = browser();
    let (_, id) = sign_in_alice(&p, &c).await;

    // RP-initiated logout at the OP; the OP POSTs a logout token to our listener.
    let end = p
        .end_session_url(Some(&id.id_token), &post_logout_uri())
        .expect("end_session_endpoint");
    let q = query_of(&end);
    assert_eq!(q["id_token_hint"], id.id_token);
    assert_eq!(q["post_logout_redirect_uri"], post_logout_uri().as_str());
    let back_to = op_logout(&c, &end).await;
    assert!(back_to.starts_with(post_logout_uri().as_str()), "{back_to}");
    let token = bc.next().await;
    let t = now();
    let lt = p
        .verify_logout_token(&token, t)
        .await
        .expect("the OP's logout token verifies");
    assert_eq!(lt.sid, id.sid, "the IdP session signed in above");
    assert_eq!(lt.sub.as_deref(), Some(id.sub.as_str()));
    assert!(!lt.jti.is_empty());
    assert!(lt.iat <= t && lt.remember_until > t);
    // Verifying is stateless: replay detection is the caller's, keyed by this jti.
    assert_eq!(
        p.verify_logout_token(&token, t).await.expect("again").jti,
        lt.jti
    );
    // The OP session is gone: the next sign-in asks for the password again.
    let (s, _) = sign_in_alice(&p, &c).await;
    assert!(s.login_page_shown);

    // The same token far too late.
    let r = p.verify_logout_token(&token, t + 10 * 60 * 1_000_000).await;
    assert!(
        matches!(&r, Err(IdpError::LogoutTokenRefused(m)) if m.contains("old")),
        "{r:?}"
    );

    // Forgeries, signed with the OP's own keys unless said otherwise.
    let secs = t / 1_000_000;
    let good = json!({
        "iss": op.issuer, "aud": "rp", "iat": secs, "exp": secs + 120, "jti": "forged-1",
        "sid": id.sid, "sub": id.sub, "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    });
    let rs = op.key("RS256");
    let es = op.key("ES256");
    // Baseline: a well-formed token signed by the OP's keys passes (so the refusals
    // below are for the one thing each changes).
    p.verify_logout_token(&forge(rs, Some("logout+jwt"), &good), t)
        .await
        .expect("RS256 baseline");
    p.verify_logout_token(&forge(es, None, &good), t)
        .await
        .expect("ES256 baseline");

    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v;
        }
        c
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            forge(rs, Some("logout+jwt"), &with("aud", json!("rp-other"))),
        ),
        (
            "wrong iss",
            forge(
                rs,
                Some("logout+jwt"),
                &with("iss", json!("https://evil.example")),
            ),
        ),
        (
            "nonce",
            forge(rs, Some("logout+jwt"), &with("nonce", json!("n"))),
        ),
        (
            "no events",
            forge(rs, Some("logout+jwt"), &with("events", Value::Null)),
        ),
        (
            "other event",
            forge(
                rs,
                Some("logout+jwt"),
                &with("events", json!({"urn:other": {}})),
            ),
        ),
        (
            "too old",
            forge(rs, Some("logout+jwt"), &with("iat", json!(secs - 600))),
        ),
        (
            "expired",
            forge(rs, Some("logout+jwt"), &with("exp", json!(secs - 120))),
        ),
        (
            "no jti",
            forge(rs, Some("logout+jwt"), &with("jti", Value::Null)),
        ),
        ("neither sid nor sub", {
            let mut c = with("sid", Value::Null);
            c.as_object_mut().expect("object").remove("sub");
            forge(rs, Some("logout+jwt"), &c)
        }),
        ("typ at+jwt", forge(rs, Some("at+jwt"), &good)),
        ("other key, OP's kid", {
            let other = rcgen::KeyPair::generate().expect("key").serialize_pem();
            forge(
                &OpKey {
                    pem: other,
                    ..es.clone()
                },
                Some("logout+jwt"),
                &good,
            )
        }),
        (
            "unknown kid",
            forge(
                &OpKey {
                    kid: "nope".into(),
                    ..rs.clone()
                },
                None,
                &good,
            ),
        ),
        ("alg none", {
            let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"logout+jwt"}"#);
            format!("{h}.{}.", URL_SAFE_NO_PAD.encode(good.to_string()))
        }),
        ("HS256 with the client secret", {
            let mut h = Header::new(Algorithm::HS256);
            h.typ = Some("logout+jwt".into());
            jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(RP_SECRET.as_bytes()))
                .expect("hs")
        }),
        ("not a JWT", "logout".into()),
    ];
    for (what, token) in cases {
        let r = p.verify_logout_token(&token, t).await;
        assert!(
            matches!(r, Err(IdpError::LogoutTokenRefused(_))),
            "{what}: {r:?}"
        );
    }
    op.stop().await;
}

#[tokio::test]
async fn end_session_url_is_off_when_configured_off() {
    let op = TestOp::start(op_config(vec![op_client("rp", "corp", None)])).await;
    let http = portcullis::idp::http_client().expect("http");
    let cfg = IdpConfig {
        end_session: false,
        ..idp_config("corp", &op.issuer, "rp")
    };
    let p = Provider::discover(cfg, &http).await.expect("discovery");
    assert!(
        p.end_session_url(Some("x.y.z"), &post_logout_uri())
            .is_none()
    );
    let on = discover("corp", &op, "rp").await;
    let url = on
        .end_session_url(Some("x.y.z"), &post_logout_uri())
        .expect("on");
    assert!(url.as_str().starts_with(&op.url("/session/end")), "{url}");
    op.stop().await;
}

#[tokio::test]
async fn back_channel_logout_reaches_an_https_rp_by_its_name() {
    let bc = BackChannel::start_tls("auth.localhost").await;
    assert!(bc.url.starts_with("https://auth.localhost:"), "{}", bc.url);
    let mut config = op_config(vec![op_client("rp", "corp", Some(&bc.url))]);
    config["backchannel"] = bc.op_settings();
    let op = TestOp::start(config).await;
    let p = discover("corp", &op, "rp").await;
    let c = browser();
    let (_, id) = sign_in_alice(&p, &c).await;
    let end = p
        .end_session_url(Some(&id.id_token), &post_logout_uri())
        .expect("end_session");
    op_logout(&c, &end).await;
    let (host, token) = bc.next_with_host().await;
    assert_eq!(
        host, bc.resolve.0,
        "sent to the RP's name, over TLS it trusted"
    );
    let lt = p
        .verify_logout_token(&token, now())
        .await
        .expect("verifies");
    assert_eq!(lt.sid, id.sid);
    op.stop().await;
}
