//! The fleet under test: real `portcullis run` processes (each in its own folder,
//! sharing the first node's signing keys, on fixed loopback ports, reaching their peers
//! or Redis through cuttable links), a real `redis-server` with an append-only file
//! fsynced on every write, and the operations the fault schedule performs on them:
//! kill -9 and restart, cut and heal, clock steps. Every state change is recorded as an
//! event when it has taken effect.

use crate::history::{Event, Recorder};
use crate::net::{Link, free_port, loopback};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const PEER_TOKEN: &str = "soak-peer-token-6b1f0c2e9a7d4e35";
pub const ADMIN_TOKEN: &str = "soak-admin-token-3c9e57a1f08b4d26";
const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// How long a node may stay cut off before it refuses protected apps (`on_stale`).
pub const MAX_STALENESS_S: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Peers,
    Redis,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Peers => "peers",
            Backend::Redis => "redis",
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub email: String,
    pub password: String,
    pub groups: Vec<String>,
}

/// `users` built-in users `u00@example.com`.. with known passwords, each in one or two
/// of four groups.
pub fn users(n: usize) -> Vec<User> {
    (0..n)
        .map(|i| {
            let mut groups = vec![format!("g{}", i % 4)];
            if i % 3 == 0 {
                groups.push(format!("g{}", (i / 3) % 4));
            }
            groups.dedup();
            User {
                email: format!("u{i:02}@example.com"),
                password: format!("soak-password-{i}"),
                groups,
            }
        })
        .collect()
}

pub const APPS: [(&str, &str); 2] = [("echo", "echo.localhost"), ("app2", "app2.localhost")];
pub const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];

struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct NodeInfo {
    pub dir: PathBuf,
    pub https: u16,
    pub control: u16,
}

pub struct Fleet {
    pub backend: Backend,
    pub root: PathBuf,
    binary: PathBuf,
    pub nodes: Vec<NodeInfo>,
    procs: Vec<Mutex<Proc>>,
    /// Peer backend: links[a][b] is how node a reaches node b's control port.
    links: Vec<Vec<Option<Link>>>,
    /// Redis backend: how each node reaches Redis.
    redis_links: Vec<Link>,
    redis_port: u16,
    redis: Mutex<Proc>,
    pub rec: Recorder,
    pub users: Vec<User>,
}

impl Fleet {
    /// Writes every node's folder and config, starts Redis (Redis backend) and the nodes,
    /// and waits until every node is ready.
    pub async fn start(
        backend: Backend,
        root: &Path,
        binary: &Path,
        n: usize,
        users: Vec<User>,
        rec: Recorder,
    ) -> anyhow::Result<Fleet> {
        let nodes: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo {
                dir: root.join(format!("node{}", i + 1)),
                https: free_port(),
                control: free_port(),
            })
            .collect();
        let mut links = Vec::new();
        let mut redis_links = Vec::new();
        let redis_port = free_port();
        match backend {
            Backend::Peers => {
                for a in 0..n {
                    let mut row = Vec::new();
                    for (b, node) in nodes.iter().enumerate() {
                        row.push(if a == b {
                            None
                        } else {
                            Some(Link::new(loopback(node.control)).await?)
                        });
                    }
                    links.push(row);
                }
            }
            Backend::Redis => {
                for _ in 0..n {
                    redis_links.push(Link::new(loopback(redis_port)).await?);
                }
            }
        }
        std::fs::create_dir_all(root.join("pids"))?;
        let f = Fleet {
            backend,
            root: root.to_path_buf(),
            binary: binary.to_path_buf(),
            procs: nodes
                .iter()
                .map(|_| Mutex::new(Proc { child: None }))
                .collect(),
            nodes,
            links,
            redis_links,
            redis_port,
            redis: Mutex::new(Proc { child: None }),
            rec,
            users,
        };
        f.prepare()?;
        if backend == Backend::Redis {
            f.redis_start().await?;
        }
        for i in 0..n {
            f.spawn(i)?;
        }
        for i in 0..n {
            f.wait_up(i, Duration::from_secs(60)).await?;
        }
        for i in 0..n {
            f.wait_ready(i, Duration::from_secs(60)).await?;
        }
        Ok(f)
    }

    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    /// Folders, configs, secrets, and the first node's signing key copied to the others.
    fn prepare(&self) -> anyhow::Result<()> {
        let hashes: Vec<String> = self
            .users
            .iter()
            .map(|u| portcullis::login::users::hash_password(&u.password))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("hash: {e}"))?;
        for (i, node) in self.nodes.iter().enumerate() {
            std::fs::create_dir_all(node.dir.join("state"))?;
            secret(&node.dir.join("peer.token"), PEER_TOKEN)?;
            secret(&node.dir.join("state/admin.token"), ADMIN_TOKEN)?;
            std::fs::write(node.dir.join("clock.offset"), "0\n")?;
            std::fs::write(node.dir.join("gateway.toml"), self.toml(i, &hashes))?;
        }
        let first = &self.nodes[0].dir;
        let out = Command::new(&self.binary)
            .args(["keys", "rotate", "--config"])
            .arg(first.join("gateway.toml"))
            .current_dir(first)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "portcullis keys rotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for node in &self.nodes[1..] {
            copy_dir(&first.join("state/keys"), &node.dir.join("state/keys"))?;
        }
        Ok(())
    }

    fn toml(&self, i: usize, hashes: &[String]) -> String {
        let node = &self.nodes[i];
        let sync = match self.backend {
            Backend::Peers => {
                let peers: Vec<String> = self.links[i]
                    .iter()
                    .flatten()
                    .map(|l| format!("\"{}\"", l.url()))
                    .collect();
                format!(
                    "peers = [{}]\npeer_token_file = \"peer.token\"\nanti_entropy_interval = \"200ms\"",
                    peers.join(", ")
                )
            }
            Backend::Redis => format!(
                "backend = \"redis\"\nredis_url = \"redis://{}/0\"",
                self.redis_links[i].addr
            ),
        };
        let mut t = format!(
            r#"# Written by benches/soak.rs.
[gateway]
listen = "127.0.0.1:{https}"
auth_domain = "auth.localhost"
state_dir = "state"
node_id = "node-{id}"
origin_timeout = "5s"

[session]
relogin_lockout = "2s"

[login]
max_failures_per_user = 100000
max_failures_per_ip = 1000000

[control]
listen = "127.0.0.1:{control}"
[[control.admin]]
name = "soak"
token_file = "state/admin.token"

[sync]
{sync}
on_stale = "refuse"
max_staleness = "{MAX_STALENESS_S}s"
startup_sync_timeout = "5s"

[log]
access_log_file = "access.log"
"#,
            https = node.https,
            id = i + 1,
            control = node.control,
        );
        for (name, host) in APPS {
            t.push_str(&format!(
                "\n[[app]]\nname = \"{name}\"\nhosts = [\"{host}\"]\norigin = \"builtin:echo\"\nallow_emails = [\"*@example.com\"]\n"
            ));
        }
        for (u, h) in self.users.iter().zip(hashes) {
            let groups: Vec<String> = u.groups.iter().map(|g| format!("\"{g}\"")).collect();
            t.push_str(&format!(
                "\n[[user]]\nemail = \"{}\"\npassword_hash = \"{h}\"\ngroups = [{}]\n",
                u.email,
                groups.join(", ")
            ));
        }
        t
    }

    /// Starts node `i`'s process (it must not be running).
    fn spawn(&self, i: usize) -> anyhow::Result<()> {
        let dir = &self.nodes[i].dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))?;
        let child = command(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(dir.join("gateway.toml"))
            .current_dir(dir)
            .env("PORTCULLIS_LOG", "info")
            .env(portcullis::clock::OFFSET_FILE_ENV, dir.join("clock.offset"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        std::fs::write(
            self.root.join(format!("pids/node{}.pid", i + 1)),
            child.id().to_string(),
        )?;
        self.procs[i].lock().expect("proc lock").child = Some(child);
        Ok(())
    }

    /// kill -9 node `i`.
    pub fn kill(&self, i: usize, why: &str) {
        self.procs[i].lock().expect("proc lock").kill9();
        self.rec.event(Event::NodeDown(i), why);
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i].lock().expect("proc lock").running()
    }

    /// Starts node `i` again and waits until its control port answers.
    pub async fn restart(&self, i: usize, why: &str) -> anyhow::Result<()> {
        if self.running(i) {
            return Ok(());
        }
        self.spawn(i)?;
        self.wait_up(i, Duration::from_secs(60)).await?;
        self.rec.event(Event::NodeUp(i), why);
        Ok(())
    }

    async fn wait_up(&self, i: usize, within: Duration) -> anyhow::Result<()> {
        self.wait_status(i, "/healthz", within).await
    }

    pub async fn wait_ready(&self, i: usize, within: Duration) -> anyhow::Result<()> {
        self.wait_status(i, "/readyz", within).await
    }

    async fn wait_status(&self, i: usize, path: &str, within: Duration) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}{path}", self.nodes[i].control);
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let t0 = Instant::now();
        loop {
            if let Ok(r) = c.get(&url).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if !self.running(i) {
                anyhow::bail!(
                    "node {} exited; its log ends with:\n{}",
                    i + 1,
                    self.log_tail(i)
                );
            }
            if t0.elapsed() > within {
                anyhow::bail!(
                    "node {}: {path} not 200 within {within:?}; log:\n{}",
                    i + 1,
                    self.log_tail(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_tail(&self, i: usize) -> String {
        let s = std::fs::read_to_string(self.nodes[i].dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Peer backend: cut (or heal) the link a -> b.
    pub fn set_link(&self, a: usize, b: usize, cut: bool) {
        if let Some(Some(l)) = self.links.get(a).and_then(|r| r.get(b))
            && l.is_cut() != cut
        {
            l.set_cut(cut);
            let e = if cut {
                Event::Cut(a, b)
            } else {
                Event::Heal(a, b)
            };
            self.rec.event(e, "");
        }
    }

    /// Redis backend: cut (or heal) node i's link to Redis.
    pub fn set_redis_link(&self, i: usize, cut: bool) {
        if let Some(l) = self.redis_links.get(i)
            && l.is_cut() != cut
        {
            l.set_cut(cut);
            let e = if cut {
                Event::RedisCut(i)
            } else {
                Event::RedisHeal(i)
            };
            self.rec.event(e, "");
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for a in 0..self.n() {
            for b in 0..self.n() {
                self.set_link(a, b, false);
            }
            self.set_redis_link(a, false);
        }
    }

    pub fn redis_running(&self) -> bool {
        self.redis.lock().expect("redis lock").running()
    }

    pub fn redis_kill(&self) {
        self.redis.lock().expect("redis lock").kill9();
        self.rec.event(Event::RedisDown, "kill -9");
    }

    /// Starts Redis on its port with its data dir (it reloads its AOF), and waits until
    /// it answers PING.
    pub async fn redis_start(&self) -> anyhow::Result<()> {
        if self.redis_running() {
            return Ok(());
        }
        let dir = self.root.join("redis");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("redis.log"))?;
        let d = dir.display().to_string();
        let port = self.redis_port.to_string();
        // Recorded before the process exists: a node may reconnect the moment it
        // listens, before this driver's next poll sees it answer.
        self.rec.event(Event::RedisStarting, "");
        let child = command(Path::new(REDIS_SERVER))
            .args(["--bind", "127.0.0.1", "--port", &port, "--dir", &d])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        std::fs::write(self.root.join("pids/redis.pid"), child.id().to_string())?;
        self.redis.lock().expect("redis lock").child = Some(child);
        let t0 = Instant::now();
        while !redis_answers(self.redis_port).await {
            anyhow::ensure!(self.redis_running(), "redis-server exited at start");
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "redis-server not answering"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.rec.event(Event::RedisUp, "");
        Ok(())
    }

    /// Steps node i's clock to `ms` milliseconds off the machine's.
    pub fn set_clock(&self, i: usize, ms: i64) {
        let f = self.nodes[i].dir.join("clock.offset");
        let tmp = f.with_extension("tmp");
        if std::fs::write(&tmp, format!("{ms}\n")).is_ok() && std::fs::rename(&tmp, &f).is_ok() {
            self.rec.event(Event::Clock(i, ms), "");
        }
    }

    /// Kills everything this fleet started.
    pub fn stop_all(&self) {
        for p in &self.procs {
            p.lock().expect("proc lock").kill9();
        }
        self.redis.lock().expect("redis lock").kill9();
    }

    pub fn control_url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nodes[i].control)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Whether Redis answers PING with PONG (not -LOADING while it replays its AOF).
async fn redis_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(loopback(port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    buf[..n].starts_with(b"+PONG")
}

/// A command for a process of the fleet that dies with the driver, whatever ends the
/// driver (even kill -9): through util-linux's `setpriv --pdeathsig KILL` when the
/// machine has it.
fn command(program: &Path) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).exists() {
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A secret file, readable by its owner only.
fn secret(path: &Path, value: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{value}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        std::fs::copy(e.path(), &dest)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
