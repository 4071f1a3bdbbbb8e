//! A round-robin TCP load balancer, like a plain L4 balancer without sticky sessions:
//! each new client connection goes to the next backend in turn and bytes are spliced
//! both ways. A test can take a backend out (node down), point a slot at a new address
//! (node restarted on another port), and count the connections each backend got.
//!
//! ```ignore
//! let lb = Lb::start(vec![n1, n2, n3]).await;
//! client.get(format!("https://{}/", lb.addr)) ...;   // each connection: next node
//! lb.disable(1);                                     // node 2 gets nothing now
//! lb.set_backend(1, new_addr); lb.enable(1);
//! assert_eq!(lb.connections(), vec![4, 3, 3]);
//! ```
//!
//! A backend that refuses the connection is skipped for the next one (as balancers
//! with a connect-failure redispatch do); with none left the client is disconnected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

struct Backend {
    addr: SocketAddr,
    enabled: bool,
    connections: u64,
}

#[derive(Default)]
struct State {
    backends: Mutex<Vec<Backend>>,
    next: AtomicUsize,
    refused: AtomicU64,
}

pub struct Lb {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Lb {
    /// Listens on 127.0.0.1 (a port the OS picks) in front of `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> Lb {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind lb");
        let addr = listener.local_addr().expect("lb addr");
        let state = Arc::new(State {
            backends: Mutex::new(
                backends
                    .into_iter()
                    .map(|addr| Backend {
                        addr,
                        enabled: true,
                        connections: 0,
                    })
                    .collect(),
            ),
            ..State::default()
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Lb {
            addr,
            state,
            accept,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Backend>) -> T) -> T {
        f(&mut self.state.backends.lock().expect("lb lock"))
    }

    /// Node `i` is down: new connections skip it (open ones stay).
    pub fn disable(&self, i: usize) {
        self.with(|b| b[i].enabled = false);
    }

    pub fn enable(&self, i: usize) {
        self.with(|b| b[i].enabled = true);
    }

    /// Slot `i` now sends to `addr` (its counter carries on).
    pub fn set_backend(&self, i: usize, addr: SocketAddr) {
        self.with(|b| b[i].addr = addr);
    }

    /// Connections each backend accepted through the balancer, by slot.
    pub fn connections(&self) -> Vec<u64> {
        self.with(|b| b.iter().map(|b| b.connections).collect())
    }

    /// Connection attempts a backend refused (they were sent on to the next one).
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which closes every spliced pair.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                conns.spawn(serve(client, state.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Picks the next enabled backends in turn, connects to the first that accepts, and
/// splices until either side closes.
async fn serve(mut client: TcpStream, state: Arc<State>) {
    let _ = client.set_nodelay(true);
    let candidates: Vec<(usize, SocketAddr)> = {
        let b = state.backends.lock().expect("lb lock");
        let n = b.len();
        let start = state.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n.max(1))
            .filter(|&i| b[i].enabled)
            .map(|i| (i, b[i].addr))
            .collect()
    };
    for (i, addr) in candidates {
        match TcpStream::connect(addr).await {
            Ok(mut upstream) => {
                let _ = upstream.set_nodelay(true);
                state.backends.lock().expect("lb lock")[i].connections += 1;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Err(_) => {
                state.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers each connection with its own name.
    async fn named(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(format!("{name}:{}", n).as_bytes()).await;
                });
            }
        });
        addr
    }

    async fn ask(lb: &Lb) -> String {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn round_robin_skips_disabled_and_follows_moved_backends() {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let lb = Lb::start(vec![a, b, c]).await;
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(ask(&lb).await);
        }
        assert_eq!(got, ["a:5", "b:5", "c:5", "a:5", "b:5", "c:5"]);
        assert_eq!(lb.connections(), vec![2, 2, 2]);

        lb.disable(1);
        for _ in 0..4 {
            assert!(!ask(&lb).await.starts_with('b'));
        }
        assert_eq!(lb.connections()[1], 2, "a disabled backend gets nothing");

        let d = named("d").await;
        lb.set_backend(1, d);
        lb.enable(1);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(ask(&lb).await);
        }
        assert!(seen.contains(&"d:5".to_string()), "{seen:?}");
    }

    #[tokio::test]
    async fn a_refusing_backend_is_skipped() {
        let a = named("a").await;
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        }; // closed again: connections to it are refused
        let lb = Lb::start(vec![dead, a]).await;
        for _ in 0..4 {
            assert_eq!(ask(&lb).await, "a:5");
        }
        assert_eq!(lb.connections(), vec![0, 4]);
        assert_eq!(lb.refused(), 2);
    }
}
