//! What every task of the driver shares: the history, the fleet, HTTP clients (through
//! the balancer, directly to each node, to the control ports), the end of the load
//! phase, and the tokens browsers obtained lately (the revoker's targets).

use crate::fleet::{Fleet, User};
use crate::history::Recorder;
use reqwest::{Client, ClientBuilder, redirect::Policy};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOSTS: [&str; 3] = ["echo.localhost", "app2.localhost", "auth.localhost"];

pub struct Ctx {
    pub rec: Recorder,
    pub fleet: Arc<Fleet>,
    pub users: Vec<User>,
    pub binary: PathBuf,
    pub lb_port: u16,
    /// Through the balancer, a new connection per request.
    pub lb_client: Client,
    /// Straight to each node, keep-alive.
    pub direct: Vec<Client>,
    /// Control ports.
    pub control: Client,
    pub max_skew_ms: i64,
    pub minutes: f64,
    load_end: Instant,
    next_id: AtomicU64,
    recent: Mutex<VecDeque<usize>>,
    /// Armed by the fault schedule: kill -9 the node that acknowledges the next
    /// revocation, as soon as the acknowledgement is in.
    kill_on_ack: AtomicBool,
}

impl Ctx {
    pub fn new(
        rec: Recorder,
        fleet: Arc<Fleet>,
        binary: PathBuf,
        lb: SocketAddr,
        minutes: f64,
        max_skew_ms: i64,
    ) -> anyhow::Result<Ctx> {
        let direct = fleet
            .nodes
            .iter()
            .map(|n| builder(crate::net::loopback(n.https)).build())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ctx {
            rec,
            users: fleet.users.clone(),
            binary,
            lb_port: lb.port(),
            lb_client: builder(lb).pool_max_idle_per_host(0).build()?,
            direct,
            control: Client::builder().timeout(Duration::from_secs(15)).build()?,
            max_skew_ms,
            minutes,
            load_end: Instant::now() + Duration::from_secs_f64(minutes * 60.0),
            next_id: AtomicU64::new(1),
            recent: Mutex::new(VecDeque::new()),
            kill_on_ack: AtomicBool::new(false),
            fleet,
        })
    }

    /// A client that sends every test host to `addr`, trusts the nodes' self-signed
    /// certificates and follows no redirects.
    pub fn builder(&self, addr: SocketAddr) -> ClientBuilder {
        builder(addr)
    }

    pub fn lb_addr(&self) -> SocketAddr {
        crate::net::loopback(self.lb_port)
    }

    pub fn load_over(&self) -> bool {
        Instant::now() >= self.load_end
    }

    pub fn load_left(&self) -> Duration {
        self.load_end.saturating_duration_since(Instant::now())
    }

    /// Sleeps `d`, or until the load phase ends if that comes first.
    pub async fn pause(&self, d: Duration) {
        tokio::time::sleep(d.min(self.load_left())).await;
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes a token a browser just obtained.
    pub fn recent(&self, tok: usize) {
        let mut r = self.recent.lock().expect("recent lock");
        r.push_back(tok);
        if r.len() > 300 {
            r.pop_front();
        }
    }

    pub fn arm_kill_on_ack(&self, armed: bool) {
        self.kill_on_ack.store(armed, Ordering::SeqCst);
    }

    /// Node `node` just acknowledged revocation `r`: kill -9 it if armed.
    pub fn after_ack(&self, node: usize, r: usize) {
        if self.kill_on_ack.swap(false, Ordering::SeqCst) {
            self.fleet.kill(
                node,
                &format!("kill -9 right after it acknowledged revocation #{r}"),
            );
        }
    }

    pub fn recent_tokens(&self) -> Vec<usize> {
        self.recent
            .lock()
            .expect("recent lock")
            .iter()
            .copied()
            .collect()
    }
}

fn builder(addr: SocketAddr) -> ClientBuilder {
    let mut b = Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    for h in HOSTS {
        b = b.resolve(h, addr);
    }
    b
}
