//! A fleet behind a plain round-robin TCP load balancer (no sticky sessions; every
//! request of these clients opens a new connection, so consecutive steps of one flow
//! land on different nodes), on both cluster backends: the built-in peer sync and Redis.

use crate::common::*;
use crate::support::lb::Lb;
use crate::support::redis::RedisServer;
use portcullis::clock::{Clock, ManualClock};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PEER_TOKEN: &str = "fleet-test-peer-token-2d8e61b0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Peers,
    Redis,
}

struct Fleet {
    nodes: Vec<Option<Gw>>,
    https: Vec<u16>,
    control: Vec<u16>,
    backend: Backend,
    redis: Option<RedisServer>,
    extra: String,
    clock: Arc<ManualClock>,
    /// Each node's clock: `clock` unless the test set its nodes' clocks apart.
    clocks: Vec<Arc<ManualClock>>,
    lb: Option<Lb>,
    tmp: tempfile::TempDir,
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

impl Fleet {
    /// Three nodes on fixed loopback ports, sharing keys, all ready, behind a balancer.
    async fn start(backend: Backend, extra: &str) -> Fleet {
        Fleet::start_skewed(backend, extra, [0; 3]).await
    }

    /// The same, with node i's clock `offsets_ms[i]` milliseconds off `clock`.
    async fn start_skewed(backend: Backend, extra: &str, offsets_ms: [i64; 3]) -> Fleet {
        let redis = (backend == Backend::Redis).then(RedisServer::start);
        let clock = ManualClock::starting_now();
        let clocks = offsets_ms
            .iter()
            .map(|ms| match ms {
                0 => clock.clone(),
                ms => ManualClock::new(clock.now_us() + ms * 1_000),
            })
            .collect();
        let mut f = Fleet {
            nodes: (0..3).map(|_| None).collect(),
            https: (0..3).map(|_| free_port()).collect(),
            control: (0..3).map(|_| free_port()).collect(),
            backend,
            redis,
            extra: extra.to_string(),
            clock,
            clocks,
            lb: None,
            tmp: tempfile::tempdir().unwrap(),
        };
        for i in 0..3 {
            std::fs::create_dir_all(f.dir(i).join("state")).unwrap();
            write_secret(&f.dir(i).join("peer.token"), &format!("{PEER_TOKEN}\n"));
        }
        for i in 0..3 {
            f.start_node(i).await;
        }
        for i in 0..3 {
            f.wait_ready(i).await;
        }
        let addrs = f.https.iter().map(|p| addr(*p)).collect();
        f.lb = Some(Lb::start(addrs).await);
        f
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("node{}", i + 1))
    }

    fn toml(&self, i: usize) -> String {
        let sync = match self.backend {
            Backend::Peers => {
                let peers: Vec<String> = (0..3)
                    .filter(|j| *j != i)
                    .map(|j| format!("\"http://127.0.0.1:{}\"", self.control[j]))
                    .collect();
                format!(
                    "peers = [{}]\npeer_token_file = \"peer.token\"\nanti_entropy_interval = \"200ms\"",
                    peers.join(", ")
                )
            }
            Backend::Redis => format!(
                "backend = \"redis\"\nredis_url = \"{}\"",
                self.redis.as_ref().map(|r| r.url()).unwrap_or_default()
            ),
        };
        config_text(&format!(
            "[login]\nmax_failures_per_user = 3\n\n[sync]\n{sync}\n{}\n",
            self.extra
        ))
        .replace(
            "node_id = \"test-1\"",
            &format!("node_id = \"node-{}\"", i + 1),
        )
        .replace(
            "listen = \"127.0.0.1:0\"\nauth_domain",
            &format!("listen = \"127.0.0.1:{}\"\nauth_domain", self.https[i]),
        )
        .replace(
            "[control]\nlisten = \"127.0.0.1:0\"",
            &format!("[control]\nlisten = \"127.0.0.1:{}\"", self.control[i]),
        )
    }

    async fn start_node(&mut self, i: usize) {
        let keys = self.dir(0).join("state/keys");
        if i > 0 && !self.dir(i).join("state/keys").exists() {
            copy_dir(&keys, &self.dir(i).join("state/keys"));
        }
        let g = Gw::start_in(&self.dir(i), &self.toml(i), self.clocks[i].clone()).await;
        self.nodes[i] = Some(g);
    }

    async fn stop_node(&mut self, i: usize) {
        if let Some(mut g) = self.nodes[i].take() {
            g.stop().await;
        }
    }

    fn n(&self, i: usize) -> &Gw {
        self.nodes[i].as_ref().expect("node running")
    }

    async fn wait_ready(&self, i: usize) {
        let url = self.n(i).control_url("/readyz");
        eventually(Duration::from_secs(10), "node ready", || {
            let url = url.clone();
            async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    fn lb(&self) -> &Lb {
        self.lb.as_ref().expect("balancer")
    }

    /// A browser behind the balancer: a cookie jar and a new connection per request.
    fn browser(&self) -> Browser {
        let (c, jar) = fresh_connections_client(self.lb().addr);
        Browser { c, jar }
    }

    /// `https://<host>:<balancer port><path>`.
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.lb().addr.port())
    }

    /// The same URL on node `i` directly.
    fn node_url(&self, i: usize, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https[i])
    }

    async fn signed_in(&self, email: &str, pw: &str) -> Browser {
        let b = self.browser();
        let r = login_at(&b.c, &self.url("echo.localhost", "/"), email, pw).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.text().await.unwrap();
        assert!(body.contains(email), "{body}");
        b
    }

    async fn admin(&self, i: usize, scope: &str, target: &str) -> (StatusCode, Value) {
        self.n(i)
            .admin(
                reqwest::Method::POST,
                "/v1/revocations",
                Some(json!({"scope": scope, "target": target, "reason": "test"})),
            )
            .await
    }
}

struct Browser {
    c: Client,
    jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    /// The app cookies this browser holds, as a Cookie header (what a thief would copy).
    fn app_cookies(&self) -> String {
        cookie_header(&self.jar, "https://echo.localhost/")
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {within:?}");
}

/// The app's answer to an API call with the cookies `c` holds, sent to `url`.
async fn api_status(c: &Client, url: &str) -> StatusCode {
    xhr(c, url).await.status()
}

/// `cookies` sent to each node directly, as an API call: every node's answer.
async fn on_every_node(f: &Fleet, cookies: &str) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for i in 0..3 {
        let r = client_for(addr(f.https[i]), false)
            .get(f.node_url(i, "echo.localhost", "/"))
            .header("cookie", cookies)
            .header("x-requested-with", "XMLHttpRequest")
            .send()
            .await
            .unwrap();
        out.push(r.status());
    }
    out
}

/// Waits until every node answers `cookies` with `want`.
async fn everywhere(f: &Fleet, cookies: &str, want: StatusCode, within: Duration) {
    let t0 = Instant::now();
    loop {
        let got = on_every_node(f, cookies).await;
        if got.iter().all(|s| *s == want) {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "wanted {want} everywhere, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn login_steps_spread_over_every_node(backend: Backend) {
    let f = Fleet::start(backend, "").await;
    let b = f.signed_in(DEMO, DEMO_PW).await;
    // The flow took several connections, spread by the balancer over all three nodes.
    let spread = f.lb().connections();
    assert!(spread.iter().all(|n| *n > 0), "{spread:?}");
    // And the app session works on every node.
    assert_eq!(
        on_every_node(&f, &b.app_cookies()).await,
        vec![StatusCode::OK; 3]
    );
    // A request through the balancer (any node) too.
    assert_eq!(
        api_status(&b.c, &f.url("echo.localhost", "/")).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_a_login_whose_steps_land_on_different_nodes_completes() {
    login_steps_spread_over_every_node(Backend::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_login_whose_steps_land_on_different_nodes_completes() {
    login_steps_spread_over_every_node(Backend::Redis).await;
}

async fn logout_ends_the_session_on_every_node(backend: Backend) {
    let f = Fleet::start(backend, "").await;
    let b = f.signed_in(DEMO, DEMO_PW).await;
    let stolen = b.app_cookies();
    let r =
        b.c.get(f.url("echo.localhost", "/.portcullis/logout"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The copied cookies (what a thief would hold) are refused by every node.
    everywhere(
        &f,
        &stolen,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_logout_through_the_balancer_ends_the_session_on_every_node() {
    logout_ends_the_session_on_every_node(Backend::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_logout_through_the_balancer_ends_the_session_on_every_node() {
    logout_ends_the_session_on_every_node(Backend::Redis).await;
}

/// Posts the sign-in form through the balancer once (a fresh form each time).
async fn try_sign_in(f: &Fleet, email: &str, pw: &str) -> (StatusCode, String) {
    let b = f.browser();
    let (r, form_url) = navigate(&b.c, &f.url("echo.localhost", "/")).await;
    let html = r.text().await.unwrap();
    let csrf = extract(&html, "csrf").expect("csrf");
    let return_to = extract(&html, "return_to").unwrap_or_default();
    let r =
        b.c.post(join(&form_url, "/login"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("email", email),
                ("password", pw),
                ("return_to", return_to.as_str()),
            ])
            .send()
            .await
            .unwrap();
    let s = r.status();
    (s, r.text().await.unwrap_or_default())
}

async fn lockout_holds_on_every_node(backend: Backend) {
    let f = Fleet::start(backend, "").await;
    let bob = f.signed_in(BOB, BOB_PW).await.app_cookies();
    let (s, v) = f.admin(0, "user", BOB).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Propagated (with `ack = "local"` the call does not wait for the peers)...
    everywhere(&f, &bob, StatusCode::UNAUTHORIZED, Duration::from_secs(3)).await;
    // ...through the balancer, three tries: each lands on another node; all refused.
    for _ in 0..3 {
        let (s, body) = try_sign_in(&f, BOB, BOB_PW).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("revoked by an administrator"), "{body}");
    }
    // After the lockout, any node lets them in again.
    f.clock.advance(Duration::from_secs(61));
    let (s, _) = try_sign_in(&f, BOB, BOB_PW).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_a_revoked_user_cannot_sign_in_through_any_node_during_the_lockout() {
    lockout_holds_on_every_node(Backend::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_revoked_user_cannot_sign_in_through_any_node_during_the_lockout() {
    lockout_holds_on_every_node(Backend::Redis).await;
}

async fn throttle_counts_over_the_cluster(backend: Backend) {
    let f = Fleet::start(backend, "").await;
    // max_failures_per_user = 3: three wrong passwords, each on another node...
    for _ in 0..3 {
        let (s, body) = try_sign_in(&f, DEMO, "wrong").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
        // People type slower than a push travels.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and every node now refuses further tries, the right password included.
    for _ in 0..3 {
        let (s, body) = try_sign_in(&f, DEMO, DEMO_PW).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
    let spread = f.lb().connections();
    assert!(spread.iter().all(|n| *n > 0), "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_wrong_passwords_spread_over_the_nodes_are_throttled() {
    throttle_counts_over_the_cluster(Backend::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wrong_passwords_spread_over_the_nodes_are_throttled() {
    throttle_counts_over_the_cluster(Backend::Redis).await;
}

async fn restarted_node_never_serves_a_token_revoked_while_down(backend: Backend) {
    let mut f = Fleet::start(backend, "").await;
    let b = f.signed_in(DEMO, DEMO_PW).await;
    let cookies = b.app_cookies();
    assert_eq!(on_every_node(&f, &cookies).await, vec![StatusCode::OK; 3]);
    f.stop_node(2).await;
    let (s, v) = f.admin(0, "user", DEMO).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    f.start_node(2).await;
    // From the moment it listens: never a 200 for the revoked token.
    let url = f.node_url(2, "echo.localhost", "/");
    let direct = client_for(addr(f.https[2]), false);
    let t0 = Instant::now();
    loop {
        let r = direct
            .get(&url)
            .header("cookie", &cookies)
            .header("x-requested-with", "XMLHttpRequest")
            .send()
            .await
            .unwrap();
        let s = r.status();
        assert_ne!(
            s,
            StatusCode::OK,
            "the restarted node served a revoked token"
        );
        if s == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(t0.elapsed() < Duration::from_secs(10), "never caught up");
    }
}

/// A browser signed in as the demo user straight at node `i` (no balancer): its client,
/// cookie jar and app cookies.
async fn signed_in_at(f: &Fleet, i: usize) -> (Client, Arc<reqwest::cookie::Jar>, String) {
    let (c, jar) = client_with_jar(addr(f.https[i]));
    let r = login_at(&c, &f.node_url(i, "echo.localhost", "/"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookies = cookie_header(&jar, "https://echo.localhost/");
    (c, jar, cookies)
}

/// Waits until node `i` says the cluster's time is at least `secs` ahead of its clock.
async fn lead_reaches(f: &Fleet, i: usize, secs: f64) {
    let metrics = f.n(i).control_url("/metrics");
    let what = format!("node {} knows the cluster's time", i + 1);
    eventually(Duration::from_secs(5), &what, || {
        let metrics = metrics.clone();
        async move {
            let m = reqwest::get(metrics).await.unwrap().text().await.unwrap();
            m.lines()
                .find_map(|l| l.strip_prefix("portcullis_clock_lead_seconds "))
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|lead| lead >= secs)
        }
    })
    .await;
}

/// Node 1's clock runs 4 s ahead of the others'. A token it issues is stamped 4 s "later"
/// than a revocation taken a moment after on node 2 would be with node 2's own clock: the
/// nodes stamp in the cluster's time (the latest clock reading they heard of), so the token is
/// refused everywhere, and a token issued after the revocation is accepted everywhere.
async fn clocks_apart_keep_revocations_in_order(backend: Backend) {
    let mut f = Fleet::start_skewed(backend, "", [4_000, 0, 0]).await;
    lead_reaches(&f, 1, 3.9).await;
    let (c, jar, cookies) = signed_in_at(&f, 0).await;
    assert_eq!(on_every_node(&f, &cookies).await, vec![StatusCode::OK; 3]);

    // A moment later (node 1's clock is frozen in this test; the others move on by hand).
    f.clock.advance(Duration::from_millis(1));
    let (s, v) = f.admin(1, "app", "echo").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    everywhere(
        &f,
        &cookies,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(3),
    )
    .await;
    // Node 1 re-issues from the global session: after the revocation, so valid everywhere.
    let (r, url) = navigate(&c, &f.node_url(0, "echo.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    let fresh = cookie_header(&jar, "https://echo.localhost/");
    assert_ne!(fresh, cookies);
    assert_eq!(on_every_node(&f, &fresh).await, vec![StatusCode::OK; 3]);

    // Node 1's clock steps back to the others' and node 3 restarts: it learns the
    // cluster's time back from the nodes that kept it (not node 1's clock alone), so its
    // revocations still come after what node 2 issues.
    f.clocks[0].set(f.clock.now_us());
    f.stop_node(2).await;
    f.start_node(2).await;
    f.wait_ready(2).await;
    lead_reaches(&f, 2, 3.9).await;
    let (_, _, cookies) = signed_in_at(&f, 1).await;
    // Frozen clocks: node 3 may hold a reading a millisecond older than node 2's (the
    // first advance); real time moves on by more than that between a sign-in and a
    // revocation.
    f.clock.advance(Duration::from_millis(10));
    let (s, v) = f.admin(2, "app", "echo").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    everywhere(
        &f,
        &cookies,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_clocks_seconds_apart_keep_revocations_in_order() {
    clocks_apart_keep_revocations_in_order(Backend::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clocks_seconds_apart_keep_revocations_in_order() {
    clocks_apart_keep_revocations_in_order(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_a_restarted_node_never_serves_a_token_revoked_while_it_was_down() {
    restarted_node_never_serves_a_token_revoked_while_down(Backend::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_restarted_node_never_serves_a_token_revoked_while_it_was_down() {
    restarted_node_never_serves_a_token_revoked_while_down(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_revocation_reaches_every_node_and_a_late_node_refuses_it() {
    let mut f = Fleet::start(Backend::Redis, "").await;
    let b = f.signed_in(BOB, BOB_PW).await;
    let cookies = b.app_cookies();
    f.stop_node(2).await;
    let (s, v) = f.admin(1, "user", BOB).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["propagated"], true, "{v}");
    // The running nodes refuse it within moments (the tail's delivery).
    for i in 0..2 {
        let direct = client_for(addr(f.https[i]), false);
        let url = f.node_url(i, "echo.localhost", "/");
        eventually(Duration::from_secs(2), "refused on a running node", || {
            let (direct, url, cookies) = (direct.clone(), url.clone(), cookies.clone());
            async move {
                let r = direct
                    .get(&url)
                    .header("cookie", &cookies)
                    .header("x-requested-with", "XMLHttpRequest")
                    .send()
                    .await
                    .unwrap();
                r.status() == StatusCode::UNAUTHORIZED
            }
        })
        .await;
    }
    // A node started after the revocation learns it from the snapshot.
    std::fs::remove_dir_all(f.dir(2).join("state")).unwrap();
    std::fs::create_dir_all(f.dir(2).join("state")).unwrap();
    f.start_node(2).await;
    f.wait_ready(2).await;
    everywhere(
        &f,
        &cookies,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(3),
    )
    .await;
    // And every node lists it, with its reason and actor.
    let (_, list) = f
        .n(2)
        .admin(reqwest::Method::GET, "/v1/revocations", None)
        .await;
    let found = list["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["target"] == BOB && r["actor"] == "ops" && r["node"] == "node-2");
    assert!(found, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_loses_nothing_acknowledged() {
    let mut f = Fleet::start(Backend::Redis, "").await;
    let users = [(DEMO, DEMO_PW), (BOB, BOB_PW)];
    let mut cookies = Vec::new();
    for (u, pw) in users {
        cookies.push(f.signed_in(u, pw).await.app_cookies());
    }
    let (s, v) = f.admin(0, "group", "nobody-before").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    f.redis.as_mut().unwrap().kill9();
    // Taken while Redis is down: durable and enforced here, not propagated yet (202).
    let (s, v) = f.admin(0, "user", DEMO).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["propagated"], false, "{v}");
    let (s, _) = f.admin(1, "user", BOB).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    f.redis.as_mut().unwrap().restart();
    // Once Redis is back, the outboxes drain and every node converges.
    for c in &cookies {
        everywhere(&f, c, StatusCode::UNAUTHORIZED, Duration::from_secs(10)).await;
    }
    for i in 0..3 {
        let (_, list) = f
            .n(i)
            .admin(reqwest::Method::GET, "/v1/revocations", None)
            .await;
        let targets: Vec<&str> = list["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["target"].as_str())
            .collect();
        for t in [DEMO, BOB, "nobody-before"] {
            assert!(targets.contains(&t), "node {} lacks {t}: {list}", i + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_longer_than_max_staleness_refuses_with_503() {
    let mut f = Fleet::start(
        Backend::Redis,
        "max_staleness = \"2s\"\non_stale = \"refuse\"",
    )
    .await;
    let b = f.signed_in(DEMO, DEMO_PW).await;
    let cookies = b.app_cookies();
    f.redis.as_mut().unwrap().kill9();
    // Past max_staleness (on each node's monotonic clock) every node refuses.
    everywhere(
        &f,
        &cookies,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    let r = reqwest::get(f.n(0).control_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    f.redis.as_mut().unwrap().restart();
    everywhere(&f, &cookies, StatusCode::OK, Duration::from_secs(15)).await;
}

/// The SCIM bearer token every node of the fleet is configured with (by its hash).
const FLEET_SCIM_TOKEN: &str = "fleet-scim-token-5b0e9f1c";

fn scim_tables() -> String {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(FLEET_SCIM_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        r#"
[scim]
name = "okta"
token_sha256 = "{hash}"

[[app]]
name = "staff"
hosts = ["staff.localhost"]
origin = "builtin:echo"
allow_groups = ["scim-admins"]
"#
    )
}

/// An identity provider's SCIM client whose every request (through the balancer) lands
/// on another node: each step must see what the previous one wrote, and its effects
/// hold on every node, before the documents' periodic round could have carried them.
async fn scim_steps_spread_over_every_node(backend: Backend) {
    use crate::support::signals::ScimClient;
    use reqwest::Method;
    let f = Fleet::start(backend, &scim_tables()).await;
    let s = ScimClient::through_balancer(f.lb().addr, f.lb().addr.port(), FLEET_SCIM_TOKEN);
    let send = |m: Method, path: String, body: Value| {
        let s = &s;
        async move {
            let r = s
                .request(m, &path, None, Some(body.to_string()), Some(&s.token))
                .await;
            assert!(r.status.is_success(), "{path}: {} {}", r.status, r.json);
            r.json
        }
    };
    let user = send(
        Method::POST,
        "/Users".into(),
        json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": BOB, "active": true}),
    )
    .await;
    let id = user["id"].as_str().unwrap().to_string();
    // Read back from each node in turn, as an IdP does right after creating.
    for _ in 0..3 {
        let r = s.get(&format!("/Users/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert_eq!(r.json["userName"], BOB);
    }
    let group = send(
        Method::POST,
        "/Groups".into(),
        json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "scim-admins", "members": [{"value": id}]}),
    )
    .await;
    let gid = group["id"].as_str().unwrap().to_string();

    // Bob, signed in, reaches the staff app through any node (the directory's group).
    let b = f.signed_in(BOB, BOB_PW).await;
    for _ in 0..3 {
        let (r, url) = navigate(&b.c, &f.url("staff.localhost", "/")).await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
    }
    // Removed from the group at one node: once the revocation has propagated (as fast
    // as a manual one: `ack = "local"` here), the next navigation, on whichever node,
    // re-issues his token without the group and the staff app refuses him.
    let staff = cookie_header(&b.jar, "https://staff.localhost/");
    send(
        Method::PATCH,
        format!("/Groups/{gid}"),
        json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]}),
    )
    .await;
    let t0 = Instant::now();
    for i in 0..3 {
        let url = f.node_url(i, "staff.localhost", "/");
        let c = client_for(addr(f.https[i]), false);
        loop {
            let r = c
                .get(&url)
                .header("cookie", &staff)
                .header("x-requested-with", "XMLHttpRequest")
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "node {}: {}",
                i + 1,
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!(
        "{backend:?}: the group's tokens refused on every node after {:?}",
        t0.elapsed()
    );
    for _ in 0..3 {
        let (r, url) = navigate(&b.c, &f.url("staff.localhost", "/")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
    }
    // The global session stays: other apps re-issue silently, without the form.
    let (r, url) = navigate(&b.c, &f.url("echo.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    assert!(
        !r.text().await.unwrap().contains("name=\"password\""),
        "{url}"
    );

    // Deactivated: his cookies are refused everywhere, and after the relogin lockout
    // every node still refuses his sign-in.
    let cookies = b.app_cookies();
    send(
        Method::PATCH,
        format!("/Users/{id}"),
        json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": false}}]}),
    )
    .await;
    everywhere(
        &f,
        &cookies,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(2),
    )
    .await;
    f.clock.advance(Duration::from_secs(61));
    for _ in 0..3 {
        let (st, body) = try_sign_in(&f, BOB, BOB_PW).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("deactivated"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_scim_steps_that_land_on_different_nodes_see_each_other() {
    scim_steps_spread_over_every_node(Backend::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_scim_steps_that_land_on_different_nodes_see_each_other() {
    scim_steps_spread_over_every_node(Backend::Redis).await;
}
