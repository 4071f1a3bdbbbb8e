//! Revocation propagation across a 3-node cluster on loopback, and catch-up of a fresh
//! node on a large revocation set.
//!
//! `cargo bench --bench propagation` (plain `main`, no criterion: what is measured is a
//! latency distribution across processes' worth of machinery, not a hot loop).
//!
//! 1. Propagation: three nodes run in this process on 127.0.0.1 (real TLS data plane,
//!    real control port, real peer sync over HTTP). For each of N revocations a fresh
//!    app token is minted with node 1's signing key and shown to be accepted by nodes 2
//!    and 3; then the session is revoked at node 1 (`POST /v1/revocations`) while two
//!    pollers send the token to nodes 2 and 3 through their HTTPS data plane until they
//!    answer 401. Propagation = time from sending the revocation to the first 401.
//! 2. Catch-up: the three nodes start with the same 1,000,000 live entries (seeded in
//!    their sync journals; phase 1 runs on that set too); a fresh node that names node
//!    1 as its peer starts, and the time from start until it
//!    reports ready (its startup anti-entropy pull is done, the entries are durable in
//!    its sync journal and enforced) is measured. Then one entry is added at node 1
//!    behind sync's back (no push) and the time until the fresh node holds it shows
//!    what one anti-entropy round costs on a set that size.
//!
//! 3. The same two measurements on the Redis backend: a real `redis-server` (Debian's,
//!    started by the bench on a free loopback port, append-only file fsynced on every
//!    write) holds the 1,000,000 entries (published through the backend's own client);
//!    the three nodes catch up from its snapshot at start and then tail its stream.
//!
//! Environment: `BENCH_REVOCATIONS` (default 200), `BENCH_ENTRIES` (default 1000000),
//! `BENCH_BACKENDS` (default `peers,redis`).

use portcullis::clock::{Clock, SystemClock};
use portcullis::config::{Config, Secrets};
use portcullis::revocation::Scope;
use portcullis::server::{self, Handle};
use portcullis::session::token::Claims;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PEER_TOKEN: &str = "bench-peer-token-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `[sync]` table of a peer node.
fn peers_sync(peers: &[u16], extra: &str) -> String {
    let peers: Vec<String> = peers
        .iter()
        .map(|p| format!("\"http://127.0.0.1:{p}\""))
        .collect();
    format!(
        "peers = [{}]\npeer_token_file = \"peer.token\"\nanti_entropy_interval = \"200ms\"\n{extra}",
        peers.join(", ")
    )
}

fn node_toml(node: &str, control: u16, sync: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
auth_domain = "auth.localhost"
state_dir = "state"
node_id = "{node}"

[control]
listen = "127.0.0.1:{control}"
[[control.admin]]
name = "bench"
token_file = "state/admin.token"

[sync]
{sync}

[[app]]
name = "echo"
hosts = ["echo.localhost"]
origin = "builtin:echo"
binding_cookie = false
allow_emails = ["*@example.com"]
"#
    )
}

async fn start(dir: &Path, toml: &str) -> Handle {
    std::fs::create_dir_all(dir.join("state")).unwrap();
    // Secrets must be readable by their owner only.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("peer.token"))
            .unwrap();
        std::io::Write::write_all(&mut f, PEER_TOKEN.as_bytes()).unwrap();
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path, Secrets::Create).expect("config");
    server::start(config, Arc::new(SystemClock) as Arc<dyn Clock>)
        .await
        .expect("node starts")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn mint(h: &Handle) -> (String, String) {
    let gw = &h.gateway;
    let rt = gw.live.load();
    let iat_us = gw.auth.tick();
    let iat = iat_us.div_euclid(1_000_000);
    let sid = portcullis::secrets::random_b64(16);
    let claims = Claims {
        iss: rt.config.issuer.clone(),
        aud: "echo".into(),
        sub: "bench@example.com".into(),
        email: "bench@example.com".into(),
        groups: vec![],
        sid: sid.clone(),
        jti: portcullis::secrets::random_b64(12),
        iat,
        exp: iat + 3600,
        nbf: None,
        iat_us,
        bnd: None,
    };
    (gw.auth.sign(&claims).expect("sign"), sid)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("echo.localhost", "127.0.0.1:0".parse().unwrap())
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn status(c: &reqwest::Client, port: u16, tok: &str) -> u16 {
    c.get(format!("https://echo.localhost:{port}/"))
        .header("cookie", format!("portcullis_app={tok}"))
        .header("accept", "application/json")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls until the node refuses the token; the time since `t0`.
async fn until_refused(c: reqwest::Client, port: u16, tok: String, t0: Instant) -> Duration {
    loop {
        if status(&c, port, &tok).await == 401 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "node on {port} never refused"
        );
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, v: &mut [Duration]) {
    if v.is_empty() {
        return;
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<28} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        v.len(),
        ms(pct(v, 0.50)),
        ms(pct(v, 0.99)),
        ms(*v.last().unwrap())
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n_rev = env_usize("BENCH_REVOCATIONS", 200);
    let n_entries = env_usize("BENCH_ENTRIES", 1_000_000);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "peers,redis".into());
    if backends.contains("peers") {
        println!("== backend: peers");
        run_peers(n_rev, n_entries).await;
    }
    if backends.contains("redis") {
        println!("== backend: redis");
        run_redis(n_rev, n_entries).await;
    }
}

/// Node 1's admin token.
fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("state/admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Revokes a fresh session at node 1 `n_rev` times (plus 5 for warm-up) and reports
/// how long until nodes 2 and 3 refuse its token.
async fn propagation(nodes: &[Handle], dir0: &Path, n_rev: usize) {
    let admin = admin_token(dir0);
    let control = reqwest::Client::new();
    let revoke_url = format!("http://{}/v1/revocations", nodes[0].control_addr);
    let (c2, c3) = (client(), client());
    let (p2, p3) = (nodes[1].https_addr.port(), nodes[2].https_addr.port());
    println!(
        "propagation: {n_rev} session revocations at node 1, polled through the HTTPS data plane of nodes 2 and 3"
    );
    let (mut d2, mut d3, mut both, mut api) = (vec![], vec![], vec![], vec![]);
    for i in 0..n_rev + 5 {
        let (tok, sid) = mint(&nodes[0]);
        assert_eq!(status(&c2, p2, &tok).await, 200, "node 2 accepts the token");
        assert_eq!(status(&c3, p3, &tok).await, 200, "node 3 accepts the token");
        let t0 = Instant::now();
        let w2 = tokio::spawn(until_refused(c2.clone(), p2, tok.clone(), t0));
        let w3 = tokio::spawn(until_refused(c3.clone(), p3, tok.clone(), t0));
        let r = control
            .post(&revoke_url)
            .bearer_auth(&admin)
            .json(&serde_json::json!({"scope": "session", "target": sid, "reason": "bench"}))
            .send()
            .await
            .unwrap();
        let took = t0.elapsed();
        assert!(r.status().is_success());
        let (a, b) = (w2.await.unwrap(), w3.await.unwrap());
        if i >= 5 {
            // The first few warm connections and caches.
            api.push(took);
            d2.push(a);
            d3.push(b);
            both.push(a.max(b));
        }
    }
    report("revocation API (node 1)", &mut api);
    report("refused at node 2", &mut d2);
    report("refused at node 3", &mut d3);
    report("refused at both", &mut both);
}

/// A real redis-server on a free loopback port, append-only file fsynced on every write.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start(dir: &Path) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let child = std::process::Command::new("/usr/bin/redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run_redis(n_rev: usize, n_entries: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let sync = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nstartup_sync_timeout = \"120s\"",
        redis.url()
    );
    // The entries, published through the backend's own client.
    let store = portcullis::cluster::redis::RedisStore::new(
        portcullis::cluster::redis::RedisConfig::new(redis.url()),
        Arc::new(SystemClock),
    )
    .expect("redis store");
    let now = SystemClock.now_us();
    let t = Instant::now();
    let batch: usize = 5_000;
    for start in (0..n_entries).step_by(batch) {
        let recs: Vec<_> = (start..(start + batch).min(n_entries))
            .map(|i| portcullis::revocation::RevocationRecord {
                id: format!("seed{i}"),
                scope: Scope::Session,
                target: portcullis::secrets::random_b64(16),
                not_before_us: now - i as i64,
                reason: "seed".into(),
                actor: "bench".into(),
                node: "seed".into(),
                external_id: None,
            })
            .collect();
        store.publish(&recs).await.expect("publish the seed");
    }
    println!(
        "seeded {n_entries} revocations into redis in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let dirs: Vec<_> = (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        std::fs::create_dir_all(d.join("state")).unwrap();
        if i > 0 {
            copy_dir(&dirs[0].join("state/keys"), &d.join("state/keys"));
        }
        let t = Instant::now();
        let h = start(
            d,
            &node_toml(&format!("bench-{}", i + 1), free_port(), &sync),
        )
        .await;
        while h.gateway.redis.as_ref().is_some_and(|r| !r.is_ready()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!(
            "catch-up: node {} ready after {:.3} s with {} entries from the redis snapshot",
            i + 1,
            t.elapsed().as_secs_f64(),
            h.gateway.revocations.len()
        );
        nodes.push(h);
    }
    propagation(&nodes, &dirs[0], n_rev).await;
    for n in nodes {
        n.shutdown().await;
    }
}

async fn run_peers(n_rev: usize, n_entries: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let dirs: Vec<_> = (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    // The cluster starts in sync with `n_entries` live revocations: each node's sync
    // journal holds them and is replayed at start.
    let now = SystemClock.now_us();
    let mut seed = Vec::with_capacity(n_entries * 34);
    for i in 0..n_entries {
        let sid = portcullis::secrets::random_b64(16);
        portcullis::sync::wire::put_entry(&mut seed, Scope::Session, &sid, now - i as i64, None);
    }
    for d in &dirs {
        let ticker = portcullis::clock::Ticker::new(Arc::new(SystemClock));
        let set = portcullis::revocation::set::RevocationSet::new();
        let meta = portcullis::revocation::meta::MetaIndex::default();
        let into = portcullis::sync::journal::Target {
            set: &set,
            meta: &meta,
            ticker: &ticker,
            horizon: 0,
        };
        let (j, _) = portcullis::sync::journal::Journal::open(&d.join("state"), &into).unwrap();
        j.append_then(&seed, || ()).unwrap();
    }
    drop(seed);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let peers: Vec<u16> = (0..3).filter(|&j| j != i).map(|j| ports[j]).collect();
        if i > 0 {
            copy_dir(&dirs[0].join("state/keys"), &dirs[i].join("state/keys"));
        }
        let toml = node_toml(
            &format!("bench-{}", i + 1),
            ports[i],
            &peers_sync(&peers, ""),
        );
        let t = Instant::now();
        nodes.push(start(&dirs[i], &toml).await);
        println!(
            "node {} started in {:.3} s (replayed {} entries from its sync journal)",
            i + 1,
            t.elapsed().as_secs_f64(),
            nodes[i].gateway.revocations.len()
        );
    }
    for n in &nodes {
        while !n.gateway.sync.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    propagation(&nodes, &dirs[0], n_rev).await;

    // Catch-up of a fresh node on a large set.
    let set = &nodes[0].gateway.revocations;
    println!(
        "catch-up: the cluster holds {} entries; a fresh node starts with node 1 as its peer",
        set.len()
    );
    for run in 1..=2 {
        let dir = tmp.path().join(format!("fresh{run}"));
        let toml = node_toml(
            &format!("fresh-{run}"),
            free_port(),
            &peers_sync(&[ports[0]], "startup_sync_timeout = \"120s\""),
        );
        let t0 = Instant::now();
        let fresh = start(&dir, &toml).await;
        while !fresh.gateway.sync.is_ready() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = t0.elapsed();
        let got = fresh.gateway.revocations.len();
        let same = fresh.gateway.revocations.digest() == set.digest();
        let on_disk = fresh.gateway.engine.log().len_bytes().unwrap_or(0)
            + std::fs::metadata(portcullis::sync::journal::path_in(&fresh.gateway.state_dir))
                .map_or(0, |m| m.len());
        println!(
            "  run {run}: fresh node ready after {:.3} s with {got} entries (digest {}; {:.1} MB made durable)",
            took.as_secs_f64(),
            if same { "equal" } else { "DIFFERENT" },
            on_disk as f64 / 1e6
        );
        // One more entry at node 1 without a push: anti-entropy must find it.
        let sid = portcullis::secrets::random_b64(16);
        set.apply(Scope::Session, &sid, SystemClock.now_us());
        let t1 = Instant::now();
        while fresh
            .gateway
            .revocations
            .get(Scope::Session, &sid)
            .is_none()
        {
            if t1.elapsed() > Duration::from_secs(60) {
                println!("  run {run}: the extra entry did not arrive within 60 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!(
            "  run {run}: one entry added at node 1 without a push reached the fresh node by anti-entropy in {:.3} s (interval 200 ms)",
            t1.elapsed().as_secs_f64()
        );
        fresh.shutdown().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
}
