//! Peers over TLS: control ports that speak HTTPS and ask for client certificates from
//! a cluster CA (made here with rcgen: a CA, node certificates for 127.0.0.1, and a
//! second, unrelated CA with its own certificate).
//!
//! Design under test (`[control] client_ca` with the default `client_auth = "peers"`):
//! the peer API answers only connections whose client certificate chains to the CA, and
//! the peer token stays a second factor; admin calls may come without a certificate and
//! are authorised by their bearer token; a certificate from another CA is refused in the
//! handshake whatever the route. `client_auth = "all"` refuses every connection without
//! a certificate from the CA, admin and health included.

use crate::common::*;
use reqwest::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PEER_TOKEN: &str = "tls-test-peer-token-2b7d41c0";

/// A certificate authority and the certificates it signed, written as PEM files.
struct Pki {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A node certificate for 127.0.0.1, good for serving and for calling peers.
fn leaf(ca: &rcgen::Issuer<'_, rcgen::KeyPair>, name: &str) -> (String, String) {
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// `ca.crt` with `node1..node3` and `tester` signed by it; `rogue-ca.crt` with
    /// `rogue` signed by that one.
    fn new() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let write = |name: &str, (cert, key): (String, String)| {
            std::fs::write(dir.join(format!("{name}.crt")), cert).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key).unwrap();
        };
        let cluster = ca("Portcullis test cluster CA");
        std::fs::write(dir.join("ca.crt"), cluster.pem()).unwrap();
        for n in ["node1", "node2", "node3", "tester"] {
            write(n, leaf(&cluster, n));
        }
        let rogue = ca("Someone else's CA");
        std::fs::write(dir.join("rogue-ca.crt"), rogue.pem()).unwrap();
        write("rogue", leaf(&rogue, "rogue"));
        Pki { dir, _tmp: tmp }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap()
    }

    /// A client trusting the cluster CA only, presenting `identity` (a name above).
    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.read("ca.crt")).unwrap();
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10));
        if let Some(name) = identity {
            let mut pem = self.read(&format!("{name}.crt"));
            pem.extend(self.read(&format!("{name}.key")));
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    /// The `[control]` lines for a TLS control port on `port` presenting `node`.
    fn control(&self, port: u16, node: &str, extra: &str) -> String {
        format!(
            "[control]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}\n",
            self.path(&format!("{node}.crt")),
            self.path(&format!("{node}.key")),
        )
    }

    /// The `[sync]` TLS lines: trust the cluster CA, present `node`'s certificate.
    fn sync(&self, node: &str) -> String {
        format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            self.path("ca.crt"),
            self.path(&format!("{node}.crt")),
            self.path(&format!("{node}.key")),
        )
    }
}

/// `config_text(extra)` with its `[control]` table replaced by `control`.
fn with_control(extra: &str, control: &str) -> String {
    let text = config_text(extra);
    let plain = "[control]\nlisten = \"127.0.0.1:0\"\n";
    assert!(text.contains(plain));
    text.replace(plain, control)
}

fn https(port: u16, path: &str) -> String {
    format!("https://127.0.0.1:{port}{path}")
}

async fn call(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let mut rb = c.request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await?;
    let s = r.status();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three nodes whose control ports speak HTTPS, require cluster certificates on the
/// peer API, and call each other at `https://127.0.0.1:<port>`.
struct TlsCluster {
    pki: Pki,
    ports: Vec<u16>,
    nodes: Vec<Gw>,
    _tmp: tempfile::TempDir,
}

impl TlsCluster {
    async fn start(sync_extra: &str) -> TlsCluster {
        let pki = Pki::new();
        let tmp = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clock = portcullis::clock::ManualClock::starting_now();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let dir = tmp.path().join(format!("node{}", i + 1));
            std::fs::create_dir_all(dir.join("state")).unwrap();
            crate::common::write_secret(&dir.join("peer.token"), PEER_TOKEN);
            if i > 0 {
                copy_keys(
                    &tmp.path().join("node1/state/keys"),
                    &dir.join("state/keys"),
                );
            }
            let peers: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("\"{}\"", https(ports[j], "")))
                .collect();
            let node = format!("node{}", i + 1);
            let extra = format!(
                "[sync]\npeers = [{}]\npeer_token_file = \"peer.token\"\nanti_entropy_interval = \"200ms\"\n{}{sync_extra}\n",
                peers.join(", "),
                pki.sync(&node),
            );
            let control = pki.control(
                ports[i],
                &node,
                &format!("client_ca = \"{}\"", pki.path("ca.crt")),
            );
            let toml = with_control(&extra, &control)
                .replace("node_id = \"test-1\"", &format!("node_id = \"{node}\""));
            nodes.push(Gw::start_in(&dir, &toml, clock.clone()).await);
        }
        let c = TlsCluster {
            pki,
            ports,
            nodes,
            _tmp: tmp,
        };
        let anon = c.pki.client(None);
        for &p in &c.ports {
            eventually(Duration::from_secs(10), "node ready", || {
                let (anon, url) = (anon.clone(), https(p, "/readyz"));
                async move { matches!(call(&anon, Method::GET, &url, None, None).await, Ok((s, _)) if s == 200) }
            })
            .await;
        }
        c
    }

    async fn admin(&self, i: usize, method: Method, path: &str, body: Option<Value>) -> Value {
        let token = self.nodes[i].admin_token();
        let c = self.pki.client(None);
        let url = https(self.ports[i], path);
        let (s, v) = call(&c, method, &url, Some(&token), body).await.unwrap();
        assert_eq!(s, StatusCode::OK, "{path} at node {}: {v}", i + 1);
        v
    }

    async fn digest(&self, i: usize) -> String {
        let c = self.pki.client(Some("tester"));
        let url = https(self.ports[i], "/v1/peer/digest");
        let (s, v) = call(&c, Method::GET, &url, Some(PEER_TOKEN), None)
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{v}");
        v["digest"].as_str().unwrap().to_string()
    }
}

fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_https_with_client_certificates_propagate_and_converge() {
    let c = TlsCluster::start("ack = \"all\"\nack_timeout = \"2s\"").await;
    // Every node caught up with its peers over TLS at startup.
    let v = c.admin(2, Method::GET, "/readyz", None).await;
    assert_eq!(v["sync"]["startup"]["peers_answered"], 2, "{v}");

    // A token minted on node 1 works on node 3.
    let (browser, _jar) = client_with_jar(c.nodes[0].h().https_addr);
    let r = c.nodes[0]
        .login(&browser, "echo.localhost", "/", DEMO, DEMO_PW)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    for n in &c.nodes {
        assert_eq!(
            xhr(&browser, &n.url("echo.localhost", "/")).await.status(),
            200
        );
    }

    // Revoked at node 2 (an admin call without a client certificate): both peers
    // acknowledge the push over TLS before the answer, and refuse the token.
    c.nodes[0].advance(Duration::from_millis(1));
    let v = c
        .admin(
            1,
            Method::POST,
            "/v1/revocations",
            Some(json!({"scope": "user", "target": DEMO, "reason": "offboarding"})),
        )
        .await;
    assert_eq!(v["peers_acked"], 2, "{v}");
    for n in &c.nodes {
        let s = xhr(&browser, &n.url("echo.localhost", "/")).await.status();
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // The CLI of node 1 reaches its own HTTPS control port.
    let out = cli(&c.nodes[0].config_path, &["revoke", "--group", "tls-cli"]).await;
    assert!(out.contains("2 of 2 peers confirmed"), "{out}");

    // A record only node 3 holds (delivered by a caller with a cluster certificate)
    // reaches nodes 1 and 2 by anti-entropy: digests, buckets and pulls over TLS.
    let now = portcullis::clock::Clock::now_us(&*c.nodes[0].clock);
    let push = json!({"from": "tester", "records": [{
        "id": "tls-ae-1", "scope": "session", "target": "tls-ae-session",
        "not_before_us": now, "reason": "test", "actor": "tester", "node": "elsewhere"}]});
    let tester = c.pki.client(Some("tester"));
    let url = https(c.ports[2], "/v1/peer/revocations");
    let (s, v) = call(&tester, Method::POST, &url, Some(PEER_TOKEN), Some(push))
        .await
        .unwrap();
    assert_eq!((s, v["applied"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    assert_ne!(c.digest(0).await, c.digest(2).await);
    let t0 = Instant::now();
    let cr = &c;
    eventually(Duration::from_secs(5), "digests equal", || async move {
        let d = [cr.digest(0).await, cr.digest(1).await, cr.digest(2).await];
        d[0] == d[1] && d[1] == d[2]
    })
    .await;
    eprintln!("converged by anti-entropy over TLS in {:?}", t0.elapsed());
    for i in 0..2 {
        let v = c.admin(i, Method::GET, "/v1/revocations", None).await;
        let ids: Vec<&str> = v["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert!(ids.contains(&"tls-ae-1"), "node {}: {ids:?}", i + 1);
    }
}

/// One node (in a folder of its own) with a TLS control port and `client_ca`.
async fn single(pki: &Pki, port: u16, control_extra: &str) -> (Gw, tempfile::TempDir) {
    let ca = format!("client_ca = \"{}\"\n{control_extra}", pki.path("ca.crt"));
    let sync = format!(
        "[sync]\npeer_token_file = \"peer.token\"\n{}",
        pki.sync("node1")
    );
    let toml = with_control(&sync, &pki.control(port, "node1", &ca));
    let tmp = tempfile::tempdir().unwrap();
    crate::common::write_secret(&tmp.path().join("peer.token"), PEER_TOKEN);
    let g = Gw::start_in(
        tmp.path(),
        &toml,
        portcullis::clock::ManualClock::starting_now(),
    )
    .await;
    (g, tmp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_api_needs_a_cluster_certificate_and_admin_calls_a_token() {
    let pki = Pki::new();
    let port = free_port();
    let (g, _dir) = single(&pki, port, "").await;
    let admin = g.admin_token();
    let digest = https(port, "/v1/peer/digest");
    let (anon, cluster, rogue) = (
        pki.client(None),
        pki.client(Some("tester")),
        pki.client(Some("rogue")),
    );

    // No client certificate: the peer API says 403 with a valid peer token or without.
    for token in [Some(PEER_TOKEN), None, Some("wrong")] {
        let (s, v) = call(&anon, Method::GET, &digest, token, None)
            .await
            .unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN, "{token:?}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("client certificate"),
            "{v}"
        );
    }
    let push = json!({"from": "evil", "records": [{"id": "e1", "scope": "all", "target": "*",
        "not_before_us": i64::MAX / 2, "reason": "x", "actor": "x", "node": "x"}]});
    let url = https(port, "/v1/peer/revocations");
    let (s, _) = call(
        &anon,
        Method::POST,
        &url,
        Some(PEER_TOKEN),
        Some(push.clone()),
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(g.gw().revocations.len(), 0, "nothing was applied");

    // A certificate from another CA: refused in the TLS handshake, whatever the route.
    for (path, token) in [
        ("/v1/peer/digest", PEER_TOKEN),
        ("/v1/revocations", admin.as_str()),
    ] {
        let r = call(&rogue, Method::GET, &https(port, path), Some(token), None).await;
        assert!(
            r.is_err(),
            "{path}: a foreign certificate got an answer: {r:?}"
        );
    }

    // A cluster certificate: the peer token is still required (second factor).
    let (s, _) = call(&cluster, Method::GET, &digest, None, None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&cluster, Method::GET, &digest, Some("wrong"), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(&cluster, Method::GET, &digest, Some(PEER_TOKEN), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");

    // Admin calls: the bearer token, with or without a cluster certificate.
    let revs = https(port, "/v1/revocations");
    for c in [&anon, &cluster] {
        let (s, v) = call(c, Method::GET, &revs, Some(&admin), None)
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, _) = call(c, Method::GET, &revs, Some(PEER_TOKEN), None)
            .await
            .unwrap();
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "the peer token is no admin token"
        );
    }
    let (s, _) = call(&anon, Method::GET, &https(port, "/healthz"), None, None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    // Plain HTTP to the TLS port gets no answer.
    let plain = format!("http://127.0.0.1:{port}/healthz");
    assert!(reqwest::get(&plain).await.is_err());

    // client_auth = "all" (applied by a reload, to the next connection): without a
    // cluster certificate nothing gets through the handshake, not even /healthz.
    let text = std::fs::read_to_string(&g.config_path).unwrap();
    let all = text.replace("client_ca = ", "client_auth = \"all\"\nclient_ca = ");
    std::fs::write(&g.config_path, all).unwrap();
    g.gw().reload().expect("reload");
    let anon = pki.client(None);
    for (path, token) in [
        ("/healthz", None),
        ("/v1/revocations", Some(admin.as_str())),
    ] {
        let r = call(&anon, Method::GET, &https(port, path), token, None).await;
        assert!(r.is_err(), "{path} answered without a certificate: {r:?}");
    }
    let cluster = pki.client(Some("tester"));
    let (s, _) = call(&cluster, Method::GET, &revs, Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&cluster, Method::GET, &revs, None, None)
        .await
        .unwrap();
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a certificate is no admin token"
    );
    let (s, _) = call(&cluster, Method::GET, &digest, Some(PEER_TOKEN), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    // The CLI reads the same config: it calls over HTTPS and presents [sync] client_cert.
    let out = cli(
        &g.config_path,
        &["revoke", "--app", "ghost", "--reason", "cli"],
    )
    .await;
    assert!(out.contains("revoked app ghost"), "{out}");
}

/// Runs the `portcullis` CLI against `config`; its stdout (panics on failure).
async fn cli(config: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {text}{err}");
    text
}

/// The certificate the control port presents to a new connection (trusting `ca`).
async fn served_certificate(port: u16, pki: &Pki, ca: &str) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        rustls::pki_types::pem::PemObject::pem_file_iter(pki.dir.join(ca))
            .unwrap()
            .map(Result::unwrap),
    );
    let cfg = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn der(pki: &Pki, file: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pki.dir.join(file)).unwrap()
}

/// Runs `portcullis check` on `toml` (in `dir`): exit code and stderr.
async fn check(dir: &Path, toml: &str) -> (i32, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_are_refused_and_a_running_node_keeps_its_own() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    crate::common::write_secret(&tmp.path().join("peer.token"), PEER_TOKEN);
    std::fs::write(tmp.path().join("garbage.pem"), "not a certificate\n").unwrap();
    let garbage = tmp.path().join("garbage.pem").display().to_string();
    let (ca, n1c, n2k) = (
        pki.path("ca.crt"),
        pki.path("node1.crt"),
        pki.path("node2.key"),
    );
    let good_sync = format!(
        "[sync]\npeers = [\"https://127.0.0.1:9\"]\npeer_token_file = \"peer.token\"\n{}",
        pki.sync("node1")
    );
    let ctl = |extra: &str| pki.control(9, "node1", extra);
    let client_ca = format!("client_ca = \"{ca}\"");
    // (sync table, control table, field, reason)
    let cases: Vec<(String, String, &str, &str)> = vec![
        (
            good_sync.clone(),
            ctl(&client_ca).replace(&n1c, &garbage),
            "control.tls_cert",
            "no CERTIFICATE block",
        ),
        (
            good_sync.clone(),
            ctl(&client_ca).replace(&pki.path("node1.key"), &n2k),
            "control.tls_key",
            "is not the key of the certificate",
        ),
        (
            good_sync.clone(),
            ctl(&client_ca).replace(&pki.path("node1.key"), &garbage),
            "control.tls_key",
            "no PRIVATE KEY block",
        ),
        (
            good_sync.clone(),
            ctl(&format!(
                "client_ca = \"{}/missing.crt\"",
                pki.dir.display()
            )),
            "control.client_ca",
            "cannot read",
        ),
        (
            good_sync.clone(),
            format!("[control]\nlisten = \"127.0.0.1:9\"\ntls_cert = \"{n1c}\"\n"),
            "control.tls_key",
            "set it together with control.tls_cert",
        ),
        (
            good_sync.clone(),
            format!("[control]\nlisten = \"127.0.0.1:9\"\n{client_ca}\n"),
            "control.client_ca",
            "client certificates need TLS",
        ),
        (
            good_sync.replace(&ca, &garbage),
            ctl(&client_ca),
            "sync.ca_file",
            "no CERTIFICATE block",
        ),
        (
            good_sync.replace(&pki.path("node1.key"), &n2k),
            ctl(&client_ca),
            "sync.client_key",
            "is not the key of the certificate",
        ),
        (
            "[sync]\npeers = [\"https://127.0.0.1:9\"]\npeer_token_file = \"peer.token\"\n"
                .to_string(),
            ctl(&client_ca),
            "sync.client_cert",
            "set sync.client_cert and sync.client_key",
        ),
    ];
    let file = tmp.path().join("gateway.toml").display().to_string();
    for (sync, control, field, reason) in &cases {
        let (code, err) = check(tmp.path(), &with_control(sync, control)).await;
        assert_eq!(code, 1, "{field}: {err}");
        let want = format!("{file}: {field}: ");
        assert!(
            err.contains(&want) && err.contains(reason),
            "want {want}…{reason}, got: {err}"
        );
    }
    let (code, err) = check(tmp.path(), &with_control(&good_sync, &ctl(&client_ca))).await;
    assert_eq!(code, 0, "a good TLS config passes: {err}");

    // A running node: a reload with a bad key is refused and the old certificate keeps
    // serving; a good one (a new certificate, another client CA) applies to the next
    // connection.
    let port = free_port();
    let (g, _dir) = single(&pki, port, "").await;
    let generation = g.gw().generation();
    assert_eq!(
        served_certificate(port, &pki, "ca.crt").await,
        der(&pki, "node1.crt")
    );
    let text = std::fs::read_to_string(&g.config_path).unwrap();
    let bad = text.replace(&pki.path("node1.key"), &n2k);
    std::fs::write(&g.config_path, &bad).unwrap();
    let e = g.gw().reload().expect_err("a mismatched key is refused");
    assert!(e.to_string().contains("control.tls_key"), "{e}");
    assert_eq!(g.gw().generation(), generation);
    assert_eq!(
        served_certificate(port, &pki, "ca.crt").await,
        der(&pki, "node1.crt")
    );
    let digest = https(port, "/v1/peer/digest");
    let cluster = pki.client(Some("tester"));
    let (s, _) = call(&cluster, Method::GET, &digest, Some(PEER_TOKEN), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "the old config still serves");

    let good = text
        .replace(&pki.path("node1.key"), &n2k)
        .replace(&n1c, &pki.path("node2.crt"))
        .replace(
            &format!("client_ca = \"{ca}\""),
            &format!("client_ca = \"{}\"", pki.path("rogue-ca.crt")),
        );
    std::fs::write(&g.config_path, &good).unwrap();
    g.gw().reload().expect("a good config reloads");
    assert!(g.gw().generation() > generation);
    assert_eq!(
        served_certificate(port, &pki, "ca.crt").await,
        der(&pki, "node2.crt")
    );
    // The client CA changed with it: cluster certificates are now the foreign ones.
    let r = call(
        &pki.client(Some("tester")),
        Method::GET,
        &digest,
        Some(PEER_TOKEN),
        None,
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    let (s, _) = call(
        &pki.client(Some("rogue")),
        Method::GET,
        &digest,
        Some(PEER_TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::OK);
}
