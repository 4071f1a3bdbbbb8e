//! Peer sync: three nodes on loopback sharing one revocation set.
//!
//! Nodes run in-process (and, for the crash test, as real `portcullis` processes). They
//! share signing keys (node 1's `state/keys` is copied to the others before they start)
//! and the peer token. Every node reaches each peer through its own TCP link, a tiny
//! proxy the test can cut (a partition) and re-point (a node that restarted on another
//! port), so peers know each other's URLs before anything starts.

use crate::common::*;
use portcullis::clock::ManualClock;
use portcullis::revocation::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

const PEER_TOKEN: &str = "cluster-test-peer-token-5f1c9a7e";

/// A TCP link to one node's control port that the test can cut and re-point.
struct Link {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn new() -> Link {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (t, c, cs) = (target.clone(), cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                let to = *t.lock().unwrap();
                let Some(to) = to.filter(|_| !c.load(Ordering::SeqCst)) else {
                    continue; // dropped: the caller sees the connection closed
                };
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                let mut cs = cs.lock().unwrap();
                cs.retain(|h| !h.is_finished());
                cs.push(h.abort_handle());
            }
        });
        Link {
            addr,
            target,
            cut,
            conns,
            accept,
        }
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn point_at(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = Some(to);
    }
    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

pub(crate) struct Cluster {
    nodes: Vec<Option<Gw>>,
    /// links[i][j]: how node i reaches node j.
    links: Vec<Vec<Option<Link>>>,
    pub(crate) clock: Arc<ManualClock>,
    sync_extra: String,
    tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` in-process nodes, all started and ready.
    pub(crate) async fn start(n: usize, sync_extra: &str) -> Cluster {
        let mut c = Cluster::prepare(n, sync_extra).await;
        for i in 0..n {
            c.start_node(i).await;
        }
        for i in 0..n {
            c.wait_ready(i).await;
        }
        c
    }

    async fn prepare(n: usize, sync_extra: &str) -> Cluster {
        let mut links = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for j in 0..n {
                row.push(if i == j {
                    None
                } else {
                    Some(Link::new().await)
                });
            }
            links.push(row);
        }
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..n {
            let d = tmp.path().join(format!("node{}", i + 1));
            std::fs::create_dir_all(d.join("state")).unwrap();
            write_secret(&d.join("peer.token"), &format!("{PEER_TOKEN}\n"));
        }
        Cluster {
            nodes: (0..n).map(|_| None).collect(),
            links,
            clock: ManualClock::starting_now(),
            sync_extra: sync_extra.to_string(),
            tmp,
        }
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("node{}", i + 1))
    }

    fn toml(&self, i: usize) -> String {
        let peers: Vec<String> = self.links[i]
            .iter()
            .flatten()
            .map(|l| format!("\"{}\"", l.url()))
            .collect();
        config_text(&format!(
            r#"
[[app]]
name = "app2"
hosts = ["app2.localhost"]
origin = "builtin:echo"
allow_emails = ["*@example.com"]

[sync]
peers = [{}]
peer_token_file = "peer.token"
anti_entropy_interval = "200ms"
{}
"#,
            peers.join(", "),
            self.sync_extra
        ))
        .replace(
            "node_id = \"test-1\"",
            &format!("node_id = \"node-{}\"", i + 1),
        )
    }

    /// Starts node `i` (again) in its folder and points every link to it at it.
    async fn start_node(&mut self, i: usize) {
        let keys = self.dir(0).join("state/keys");
        if i > 0 && !self.dir(i).join("state/keys").exists() {
            copy_dir(&keys, &self.dir(i).join("state/keys"));
        }
        let g = Gw::start_in(&self.dir(i), &self.toml(i), self.clock.clone()).await;
        self.point_links_at(i, g.control());
        self.nodes[i] = Some(g);
    }

    fn point_links_at(&self, i: usize, to: SocketAddr) {
        for row in &self.links {
            if let Some(l) = &row[i] {
                l.point_at(to);
            }
        }
    }

    async fn stop_node(&mut self, i: usize) {
        if let Some(mut g) = self.nodes[i].take() {
            g.stop().await;
        }
    }

    pub(crate) fn n(&self, i: usize) -> &Gw {
        self.nodes[i].as_ref().expect("node running")
    }

    /// Cuts (or heals) every link into and out of node `i`.
    fn partition(&self, i: usize, cut: bool) {
        for (a, row) in self.links.iter().enumerate() {
            for (b, l) in row.iter().enumerate() {
                if let Some(l) = l
                    && (a == i || b == i)
                {
                    l.set_cut(cut);
                }
            }
        }
    }

    async fn wait_ready(&self, i: usize) {
        let url = self.n(i).control_url("/readyz");
        eventually(Duration::from_secs(10), "node ready", || {
            let url = url.clone();
            async move { http_status(&reqwest::Client::new(), &url).await == 200 }
        })
        .await;
    }

    /// A revocation at node `i` (the clock moves on a little first, as real clocks do
    /// between a login and a revocation).
    async fn revoke(&self, i: usize, scope: &str, target: &str) -> Value {
        self.clock.advance(Duration::from_millis(1));
        let v = self.n(i).revoke(scope, target).await;
        self.clock.advance(Duration::from_millis(1));
        v
    }

    async fn digest(&self, i: usize) -> String {
        digest_at(&self.n(i).control_url("")).await
    }

    async fn digests_converge(&self, within: Duration) -> String {
        let nodes: Vec<String> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .map(|i| self.n(i).control_url(""))
            .collect();
        eventually(within, "digests equal on every node", || {
            let nodes = nodes.clone();
            async move {
                let mut ds = Vec::new();
                for n in &nodes {
                    ds.push(digest_at(n).await);
                }
                ds.windows(2).all(|w| w[0] == w[1])
            }
        })
        .await;
        self.digest(0).await
    }
}

async fn peer_call(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let c = reqwest::Client::new();
    let mut rb = c.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("peer call");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn digest_at(base: &str) -> String {
    let (s, v) = peer_call(base, Method::GET, "/v1/peer/digest", Some(PEER_TOKEN), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["digest"].as_str().unwrap().to_string()
}

async fn http_status(c: &reqwest::Client, url: &str) -> u16 {
    c.get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls `f` until it holds, failing the test after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(t0.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status an XHR with the client's cookies gets from the echo app on `port`
/// (retried when a pooled connection to a node that restarted has gone).
async fn echo_status(c: &reqwest::Client, port: u16) -> u16 {
    let url = format!("https://echo.localhost:{port}/");
    let mut tries = 0;
    loop {
        let r = c
            .get(&url)
            .header("x-requested-with", "XMLHttpRequest")
            .header("accept", "application/json")
            .send()
            .await;
        match r {
            Ok(r) => return r.status().as_u16(),
            Err(e) if tries < 3 => {
                tries += 1;
                eprintln!("retrying {url}: {e}");
            }
            Err(e) => panic!("{url}: {e}"),
        }
    }
}

/// The time until the echo app on `port` refuses the client (401), bounded.
pub(crate) async fn refused_within(c: &reqwest::Client, port: u16, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let s = echo_status(c, port).await;
        if s == 401 {
            return t0.elapsed();
        }
        assert_eq!(s, 200, "unexpected status from port {port}");
        assert!(
            t0.elapsed() < within,
            "port {port} still accepts the revoked token after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A browser that logs in at node `i`; returns it with its session id.
pub(crate) async fn logged_in(
    c: &Cluster,
    i: usize,
    email: &str,
    pw: &str,
) -> (reqwest::Client, String) {
    let (client, _jar) = client_with_jar(c.n(i).h().https_addr);
    let r = c
        .n(i)
        .login(&client, "echo.localhost", "/", email, pw)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = client
        .get(c.n(i).url("echo.localhost", "/.portcullis/identity"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = v["sid"].as_str().expect("sid").to_string();
    (client, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_on_one_node_works_on_the_others() {
    let c = Cluster::start(3, "").await;
    // Nodes started one after the other: each caught up with the peers already up,
    // and the first says it serves what it holds.
    // (A node's catch-up may finish after the next node came up, so "at least".)
    for (i, answered) in [(0, 0), (1, 1), (2, 2)] {
        let v: Value = reqwest::get(c.n(i).control_url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let got = v["sync"]["startup"]["peers_answered"]
            .as_u64()
            .unwrap_or(99);
        assert!(got >= answered && got <= 2, "{v}");
        let answered = got;
        if answered == 0 {
            assert!(
                v["sync"]["note"]
                    .as_str()
                    .unwrap()
                    .contains("no peer answered"),
                "{v}"
            );
        }
    }
    let (client, sid) = logged_in(&c, 0, DEMO, DEMO_PW).await;
    for i in 1..3 {
        // The app token and binding cookie minted by node 1, sent to node i's port.
        let r = xhr(&client, &c.n(i).url("echo.localhost", "/x")).await;
        assert_eq!(r.status(), StatusCode::OK, "node {}", i + 1);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["identity"]["email"], DEMO);
        assert_eq!(v["identity"]["sid"], sid.as_str());
        // The global session from node 1 gets a second app without a login form here.
        let (r, url) = navigate(&client, &c.n(i).url("app2.localhost", "/")).await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        assert!(url.starts_with("https://app2.localhost"), "{url}");
        let html = r.text().await.unwrap();
        assert!(!html.contains("name=\"password\""), "asked to log in again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_any_node_is_refused_on_all_the_others() {
    let c = Cluster::start(3, "ack = \"all\"\nack_timeout = \"2s\"").await;
    let ports: Vec<u16> = (0..3).map(|i| c.n(i).port()).collect();
    let (bystander, _) = logged_in(&c, 2, DEMO, DEMO_PW).await;
    for at in 0..3 {
        // Logged in at another node, revoked here.
        let (client, sid) = logged_in(&c, (at + 1) % 3, DEMO, DEMO_PW).await;
        for &p in &ports {
            assert_eq!(echo_status(&client, p).await, 200);
        }
        let v = c.revoke(at, "session", &sid).await;
        assert_eq!(v["peers"], 2, "{v}");
        assert_eq!(v["peers_acked"], 2, "ack = all waits for both peers: {v}");
        assert_eq!(
            echo_status(&client, ports[at]).await,
            401,
            "refused where it was taken"
        );
        for (j, &p) in ports.iter().enumerate() {
            if j != at {
                // Acked means applied there: refused at once, and certainly within 2 s.
                let took = refused_within(&client, p, Duration::from_secs(2)).await;
                assert!(took < Duration::from_millis(500), "{took:?}");
            }
        }
    }
    // Nobody else was caught.
    for &p in &ports {
        assert_eq!(echo_status(&bystander, p).await, 200);
    }
    c.digests_converge(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_and_counted_cluster_wide() {
    let c = Cluster::start(3, "ack = \"all\"").await;
    let (_a, sid_a) = logged_in(&c, 0, DEMO, DEMO_PW).await;
    let (_b, sid_b) = logged_in(&c, 1, DEMO, DEMO_PW).await;
    let (_e, sid_e) = logged_in(&c, 2, BOB, BOB_PW).await;
    for i in 0..3 {
        let (s, v) = c.n(i).admin(Method::GET, "/v1/sessions", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["peers_answered"], 2, "{v}");
        let mut sids: Vec<&str> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sid"].as_str().unwrap())
            .collect();
        sids.sort();
        let mut want = vec![sid_a.as_str(), sid_b.as_str(), sid_e.as_str()];
        want.sort();
        assert_eq!(sids, want, "node {} lists every node's sessions", i + 1);
        let nodes: Vec<&str> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["node"].as_str().unwrap())
            .collect();
        for n in ["node-1", "node-2", "node-3"] {
            assert!(nodes.contains(&n), "{nodes:?}");
        }
    }
    let (_, v) = c
        .n(2)
        .admin(Method::GET, &format!("/v1/sessions?user={DEMO}"), None)
        .await;
    assert_eq!(v["count"], 2, "{v}");
    let (_, v) = c.n(1).admin(Method::GET, "/v1/users", None).await;
    let users: Vec<&str> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert!(users.contains(&DEMO) && users.contains(&BOB), "{v}");

    // Revoked at the node that holds none of them: both sessions on the other nodes count.
    let v = c.revoke(2, "user", DEMO).await;
    assert_eq!(v["peers_acked"], 2, "{v}");
    assert_eq!(v["sessions_revoked"], 2, "{v}");
    let (_, v) = c.n(0).admin(Method::GET, "/v1/sessions", None).await;
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["sessions"][0]["user"], BOB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_converges_once_healed() {
    let c = Cluster::start(3, "ack = \"all\"\nack_timeout = \"300ms\"").await;
    let ports: Vec<u16> = (0..3).map(|i| c.n(i).port()).collect();
    let (x, sid_x) = logged_in(&c, 0, DEMO, DEMO_PW).await;
    let (y, sid_y) = logged_in(&c, 2, DEMO, DEMO_PW).await;
    let (z, _) = logged_in(&c, 1, BOB, BOB_PW).await;

    c.partition(2, true);
    let v = c.revoke(0, "session", &sid_x).await;
    assert_eq!(v["peers_acked"], 1, "node 3 is cut off: {v}");
    refused_within(&x, ports[1], Duration::from_secs(2)).await;
    let v = c.revoke(2, "session", &sid_y).await;
    assert_eq!(v["peers_acked"], 0, "node 3 reaches nobody: {v}");
    // Several anti-entropy intervals later, the partition still holds.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(echo_status(&x, ports[2]).await, 200, "node 3 never heard");
    assert_eq!(
        echo_status(&y, ports[0]).await,
        200,
        "nodes 1, 2 never heard"
    );
    assert_eq!(echo_status(&y, ports[1]).await, 200);
    assert_ne!(c.digest(0).await, c.digest(2).await);

    c.partition(2, false);
    let t0 = Instant::now();
    refused_within(&x, ports[2], Duration::from_secs(5)).await;
    refused_within(&y, ports[0], Duration::from_secs(5)).await;
    refused_within(&y, ports[1], Duration::from_secs(5)).await;
    let d = c.digests_converge(Duration::from_secs(5)).await;
    eprintln!("partition healed: converged in {:?}", t0.elapsed());
    for &p in &ports {
        assert_eq!(echo_status(&z, p).await, 200, "bob was never revoked");
    }

    // A brand-new node that names node 1 as its peer holds the same set once ready.
    let dir = c.tmp.path().join("fresh");
    copy_dir(&c.dir(0).join("state/keys"), &dir.join("state/keys"));
    write_secret(&dir.join("peer.token"), PEER_TOKEN);
    let toml = config_text(&format!(
        "[sync]\npeers = [\"{}\"]\npeer_token_file = \"peer.token\"\n",
        c.n(0).control_url("")
    ))
    .replace("node_id = \"test-1\"", "node_id = \"fresh\"");
    let fresh = Gw::start_in(&dir, &toml, c.clock.clone()).await;
    eventually(Duration::from_secs(5), "fresh node ready", || {
        let url = fresh.control_url("/readyz");
        async move { http_status(&reqwest::Client::new(), &url).await == 200 }
    })
    .await;
    assert_eq!(digest_at(&fresh.control_url("")).await, d);
    assert_eq!(echo_status(&x, fresh.port()).await, 401);
    assert_eq!(echo_status(&y, fresh.port()).await, 401);
    assert_eq!(echo_status(&z, fresh.port()).await, 200);
}

fn record(id: &str, scope: &str, target: &str, nb: i64) -> Value {
    json!({"id": id, "scope": scope, "target": target, "not_before_us": nb,
           "reason": "test", "actor": "test", "node": "elsewhere"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_deliveries_change_nothing() {
    let c = Cluster::start(3, "").await;
    let now = portcullis::clock::Clock::now_us(&*c.clock);
    let recs = vec![
        record("r1", "session", "dup-s1", now - 5_000),
        record("r2", "session", "dup-s1", now - 1_000), // the same key, later
        record("r3", "user", "dup@example.com", now - 3_000),
        record("r4", "group", "dup-group", now - 2_000),
        record("r5", "app", "ghost-app", now - 4_000),
        record("r6", "session", "dup-s1", now - 9_000), // the same key, earlier
    ];
    let push = |i: usize, records: Vec<Value>| {
        let base = c.n(i).control_url("");
        async move {
            let (s, v) = peer_call(
                &base,
                Method::POST,
                "/v1/peer/revocations",
                Some(PEER_TOKEN),
                Some(json!({"from": "test", "records": records})),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["applied"].as_u64().unwrap()
        }
    };
    // Node 1: in order, three times.
    assert!(push(0, recs.clone()).await > 0);
    assert_eq!(push(0, recs.clone()).await, 0, "a repeat applies nothing");
    assert_eq!(push(0, recs.clone()).await, 0);
    // Node 2: reversed, twice.
    let rev: Vec<Value> = recs.iter().rev().cloned().collect();
    push(1, rev.clone()).await;
    push(1, rev).await;
    // Node 3: one at a time, shuffled, each twice.
    for k in [5, 2, 0, 4, 1, 3, 1, 0, 5, 2, 4, 3] {
        push(2, vec![recs[k].clone()]).await;
    }
    let d = c.digests_converge(Duration::from_secs(2)).await;
    for i in 0..3 {
        let set = &c.n(i).gw().revocations;
        assert_eq!(
            set.get(Scope::Session, "dup-s1"),
            Some(now - 1_000),
            "the latest instant wins"
        );
        assert_eq!(set.get(Scope::User, "dup@example.com"), Some(now - 3_000));
    }
    // More duplicates later, to any node, in any order: still the same set.
    for i in 0..3 {
        assert_eq!(push(i, recs.iter().rev().cloned().collect()).await, 0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        assert_eq!(c.digest(i).await, d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_fails_closed_when_cut_off_and_recovers() {
    let mut c = Cluster::start(3, "max_staleness = \"2s\"\non_stale = \"refuse\"").await;
    let port = c.n(0).port();
    let (client, _) = logged_in(&c, 0, DEMO, DEMO_PW).await;
    assert_eq!(echo_status(&client, port).await, 200);
    let ready = c.n(0).control_url("/readyz");
    let rc = reqwest::Client::new();

    // Node 1 has heard from both peers (it started before them, so only its periodic
    // anti-entropy can have reached them).
    let metrics_url = c.n(0).control_url("/metrics");
    eventually(
        Duration::from_secs(3),
        "node 1 heard from its peers",
        || {
            let (rc, url) = (rc.clone(), metrics_url.clone());
            async move {
                let m = rc.get(url).send().await.unwrap().text().await.unwrap();
                m.contains("portcullis_peer_last_heard_seconds") && !m.contains("} -1\n")
            }
        },
    )
    .await;
    c.stop_node(1).await;
    c.stop_node(2).await;
    // Within max_staleness: still serving. Staleness is measured on the monotonic clock,
    // so moving the wall clock (even far) changes nothing.
    c.clock.advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(echo_status(&client, port).await, 200);
    // Past it: fail closed, and say why.
    let url = c.n(0).url("echo.localhost", "/");
    let mut r = xhr(&client, &url).await;
    let t0 = Instant::now();
    while r.status() == StatusCode::OK && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = xhr(&client, &url).await;
    }
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(body.contains("cut off from all 2 peers"), "{body}");
    let r = rc.get(&ready).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["reason"].as_str().unwrap().contains("max_staleness"),
        "{v}"
    );
    let m = rc
        .get(c.n(0).control_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("portcullis_sync_stale 1"), "{m}");
    for l in c.links[0].iter().flatten() {
        let up = format!("portcullis_peer_up{{peer=\"{}\"}} 0", l.url());
        assert!(m.contains(&up), "{up} in\n{m}");
        let heard = format!(
            "portcullis_peer_last_heard_seconds{{peer=\"{}\"}} ",
            l.url()
        );
        let secs: f64 = m
            .lines()
            .find_map(|line| line.strip_prefix(&heard))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{heard} in\n{m}"));
        assert!(
            secs >= 2.0,
            "{heard}{secs}: silent longer than max_staleness"
        );
    }

    // One peer back: the next anti-entropy round hears from it and the node serves again.
    c.start_node(1).await;
    eventually(Duration::from_secs(5), "node 1 ready again", || {
        let (rc, ready) = (rc.clone(), ready.clone());
        async move { http_status(&rc, &ready).await == 200 }
    })
    .await;
    assert_eq!(echo_status(&client, port).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_calls_without_the_peer_credential_are_refused() {
    let c = Cluster::start(2, "").await;
    let (client, sid) = logged_in(&c, 0, DEMO, DEMO_PW).await;
    let base = c.n(0).control_url("");
    let before = c.digest(0).await;
    let set_len = c.n(0).gw().revocations.len();
    let admin = c.n(0).admin_token();
    let push = json!({"from": "evil", "records": [
        record("e1", "user", DEMO, i64::MAX / 2),
        record("e2", "session", &sid, i64::MAX / 2),
        record("e3", "all", "*", i64::MAX / 2),
    ]});
    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::POST, "/v1/peer/revocations", Some(push.clone())),
        (Method::GET, "/v1/peer/digest", None),
        (Method::GET, "/v1/peer/entries", None),
        (Method::GET, "/v1/peer/buckets", None),
        (Method::POST, "/v1/peer/pull", Some(json!({}))),
        (Method::POST, "/v1/peer/check", Some(json!({"token": "x"}))),
        (Method::GET, "/v1/peer/sessions", None),
        (Method::GET, "/v1/peer/users", None),
    ];
    let wrong = format!("{PEER_TOKEN}x");
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(PEER_TOKEN));
    for (m, path, body) in &calls {
        for token in [
            None,
            Some(wrong.as_str()),
            Some(admin.as_str()),
            Some(hash.as_str()),
        ] {
            let (s, v) = peer_call(&base, m.clone(), path, token, body.clone()).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{m} {path} with {token:?}: {v}"
            );
        }
    }
    // The peer token is no admin token either.
    let (s, _) = peer_call(
        &base,
        Method::POST,
        "/v1/revocations",
        Some(PEER_TOKEN),
        Some(json!({"scope": "all"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = peer_call(&base, Method::POST, "/v1/selftest", Some(PEER_TOKEN), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Nothing changed.
    assert_eq!(c.digest(0).await, before);
    assert_eq!(c.n(0).gw().revocations.len(), set_len);
    assert_eq!(echo_status(&client, c.n(0).port()).await, 200);
    assert_eq!(echo_status(&client, c.n(1).port()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_proves_every_peer_refuses_a_revoked_canary() {
    let c = Cluster::start(3, "").await;
    let (s, v) = c
        .n(1)
        .admin(
            Method::POST,
            "/v1/selftest",
            Some(json!({"timeout_ms": 2000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["local_accepted_before"], true);
    assert_eq!(v["local_refused_after"], true);
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    for p in peers {
        assert_eq!(p["accepted_before"], true, "{p}");
        assert_eq!(p["refused"], true, "{p}");
        let ms = p["propagation_ms"].as_f64().unwrap();
        assert!(ms < 1000.0, "{p}");
    }
    // The canary's session really is revoked everywhere.
    let sid = v["sid"].as_str().unwrap();
    for i in 0..3 {
        eventually(Duration::from_secs(2), "canary revoked", || {
            let g = c.n(i).gw().clone();
            let sid = sid.to_string();
            async move { g.revocations.get(Scope::Session, &sid).is_some() }
        })
        .await;
    }
    let metrics = |i: usize| {
        let url = c.n(i).control_url("/metrics");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let m = metrics(1).await;
    assert!(m.contains("portcullis_selftest_last_success 1"), "{m}");
    for l in c.links[1].iter().flatten() {
        let line = format!(
            "portcullis_selftest_propagation_seconds{{peer=\"{}\"}}",
            l.url()
        );
        assert!(m.contains(&line), "{line} in\n{m}");
    }
    let (s, last) = c.n(1).admin(Method::GET, "/v1/selftest", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(last["sid"], v["sid"]);

    // The CLI runs the same thing and exits 0 on success.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["selftest", "--url", &c.n(0).control_url(""), "--token"])
        .arg(c.n(0).admin_token())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    eprintln!("{stdout}");

    // A peer cut off: the self-test fails, names it, and the metric says so.
    c.partition(2, true);
    let (_, v) = c
        .n(1)
        .admin(
            Method::POST,
            "/v1/selftest",
            Some(json!({"timeout_ms": 500})),
        )
        .await;
    assert_eq!(v["ok"], false, "{v}");
    let bad: Vec<&Value> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ok"] == false)
        .collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert!(
        bad[0]["error"].as_str().unwrap().contains("unreachable"),
        "{v}"
    );
    let m = metrics(1).await;
    assert!(m.contains("portcullis_selftest_last_success 0"), "{m}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "selftest",
            "--timeout",
            "500ms",
            "--url",
            &c.n(1).control_url(""),
            "--token",
        ])
        .arg(c.n(1).admin_token())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "a failed self-test exits non-zero");
    assert!(stdout.contains("FAIL"), "{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_catches_a_peer_with_other_signing_keys() {
    let mut c = Cluster::prepare(2, "").await;
    c.start_node(0).await;
    // Node 2 generates its own keys instead of sharing node 1's.
    std::fs::create_dir_all(c.dir(1).join("state/keys")).unwrap();
    let g = Gw::start_in(&c.dir(1), &c.toml(1), c.clock.clone()).await;
    c.point_links_at(1, g.control());
    c.nodes[1] = Some(g);
    c.wait_ready(0).await;
    c.wait_ready(1).await;
    let (_, v) = c.n(0).admin(Method::POST, "/v1/selftest", None).await;
    assert_eq!(v["ok"], false, "{v}");
    let e = v["peers"][0]["error"].as_str().unwrap();
    assert!(e.contains("before the revocation"), "{e}");
}

/// A `portcullis run` process.
struct Proc {
    child: Option<std::process::Child>,
    dir: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("run")
            .arg("--config")
            .arg(dir.join("gateway.toml"))
            .current_dir(dir)
            .env("PORTCULLIS_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn portcullis");
        Proc {
            child: Some(child),
            dir: dir.to_path_buf(),
        }
    }
    /// SIGKILL: no shutdown, no flush.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
    /// Whether the process has ended (it failed to start, say).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_revocations_catches_up_before_it_reports_ready() {
    let mut c = Cluster::prepare(3, "").await;
    c.start_node(0).await;
    c.start_node(1).await;
    // Node 3 is a real process on fixed ports, so it comes back where its peers expect it.
    let (https3, ctrl3) = (free_port(), free_port());
    copy_dir(&c.dir(0).join("state/keys"), &c.dir(2).join("state/keys"));
    let toml = c
        .toml(2)
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{https3}\""),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{ctrl3}\""),
            1,
        );
    std::fs::write(c.dir(2).join("gateway.toml"), toml).unwrap();
    let ctrl3_addr: SocketAddr = format!("127.0.0.1:{ctrl3}").parse().unwrap();
    c.point_links_at(2, ctrl3_addr);
    let ready3 = format!("http://{ctrl3_addr}/readyz");
    let rc = reqwest::Client::new();
    let mut node3 = Proc::spawn(&c.dir(2));
    let t0 = Instant::now();
    while http_status(&rc, &ready3).await != 200 {
        assert!(
            !node3.exited() && t0.elapsed() < Duration::from_secs(20),
            "node 3 did not become ready:\n{}",
            node3.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.wait_ready(0).await;
    c.wait_ready(1).await;

    // Four browsers logged in at node 1; node 3 honours all of them.
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(logged_in(&c, 0, DEMO, DEMO_PW).await);
    }
    for (u, _) in &users {
        assert_eq!(echo_status(u, https3).await, 200);
    }

    // A stream of revocations at nodes 1 and 2 while node 3 is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let (stop, bases, tokens, clock) = (
            stop.clone(),
            [c.n(0).control_url(""), c.n(1).control_url("")],
            [c.n(0).admin_token(), c.n(1).admin_token()],
            c.clock.clone(),
        );
        tokio::spawn(async move {
            let rc = reqwest::Client::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                clock.advance(Duration::from_millis(1));
                let k = n % 2;
                let r = rc
                    .post(format!("{}/v1/revocations", bases[k]))
                    .bearer_auth(&tokens[k])
                    .json(&json!({"scope": "user", "target": format!("filler-{n}@example.com")}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                n += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            n
        })
    };
    let _ = c.revoke(0, "session", &users[0].1).await;
    refused_within(&users[0].0, https3, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    node3.kill9();
    // While it is down: more revocations it can only learn by pulling.
    let _ = c.revoke(1, "session", &users[1].1).await;
    let _ = c.revoke(0, "session", &users[2].1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let fillers = storm.await.unwrap();
    assert!(fillers > 20, "only {fillers} revocations in the storm");
    let d = c.digests_converge(Duration::from_secs(3)).await;

    let mut node3 = Proc::spawn(&c.dir(2));
    let t0 = Instant::now();
    let body = loop {
        let r = rc.get(&ready3).send().await;
        if let Ok(r) = r
            && r.status() == StatusCode::OK
        {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            !node3.exited() && t0.elapsed() < Duration::from_secs(20),
            "node 3 not ready again:\n{}",
            node3.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Ready means caught up: the revoked sessions are refused from the first request.
    for (i, (u, _)) in users.iter().enumerate() {
        let want = if i < 3 { 401 } else { 200 };
        assert_eq!(echo_status(u, https3).await, want, "user {i} at node 3");
    }
    assert_eq!(digest_at(&format!("http://{ctrl3_addr}")).await, d);
    assert_eq!(body["sync"]["startup"]["peers_answered"], 2, "{body}");
    node3.kill9();
}
