//! The soak's network: TCP links the fault schedule can cut (a partition between two
//! nodes, or between a node and Redis), the round-robin balancer in front of the nodes,
//! and free ports below the ephemeral range for the processes it starts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// A port that is free now, between 20000 and 32000 (below the kernel's ephemeral
/// range, so no outgoing connection takes it before the process we start binds it).
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let seed = (std::process::id() as u64).wrapping_mul(2_654_435_761) ^ nanos;
    for _ in 0..4000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A one-way TCP link to a fixed address: connections made to `addr` are spliced to the
/// target until the link is cut. Cutting drops every spliced connection at once and
/// closes new ones as soon as they are accepted (the caller sees the connection fail),
/// until the link is healed.
pub struct Link {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl Link {
    pub async fn new(to: SocketAddr) -> std::io::Result<Link> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (c, cs) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let _ = down.set_nodelay(true);
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(to).await {
                        let _ = up.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                let mut cs = cs.lock().expect("link lock");
                cs.retain(|h| !h.is_finished());
                cs.push(h.abort_handle());
            }
        });
        Ok(Link {
            addr,
            cut,
            conns,
            accept,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for h in self.conns.lock().expect("link lock").drain(..) {
                h.abort();
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.conns.lock().expect("link lock").drain(..) {
            h.abort();
        }
    }
}

/// A round-robin TCP balancer: each new connection goes to the next node in turn (a
/// node refusing connections, because it is down, is skipped). TLS passes through.
pub struct Balancer {
    pub addr: SocketAddr,
    pub per_node: Arc<Vec<AtomicU64>>,
    accept: JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let per_node: Arc<Vec<AtomicU64>> =
            Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let (counts, backends) = (per_node.clone(), Arc::new(backends));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let start = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(splice(client, backends.clone(), start, counts.clone()));
            }
        });
        Ok(Balancer {
            addr,
            per_node,
            accept,
        })
    }

    pub fn connections(&self) -> Vec<u64> {
        self.per_node
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn splice(
    mut client: TcpStream,
    backends: Arc<Vec<SocketAddr>>,
    start: usize,
    counts: Arc<Vec<AtomicU64>>,
) {
    let _ = client.set_nodelay(true);
    let n = backends.len();
    for k in 0..n {
        let i = (start + k) % n;
        if let Ok(mut up) = TcpStream::connect(backends[i]).await {
            let _ = up.set_nodelay(true);
            counts[i].fetch_add(1, Ordering::Relaxed);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            return;
        }
    }
}
