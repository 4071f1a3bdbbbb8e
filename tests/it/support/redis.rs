//! A real `redis-server` (Debian's) owned by one test: started on a free loopback port
//! with its own temp dir and an append-only file fsynced on every write, killed on drop.
//! `kill9` + `restart` bring it back on the same port with the same data, the way an
//! operator's Redis comes back after a crash.
//!
//! ```ignore
//! let mut r = RedisServer::start();
//! let store = RedisStore::new(RedisConfig::new(r.url()), clock)?;
//! r.kill9();       // Redis dies; calls fail fast
//! r.restart();     // same port, same AOF
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/redis-server";
const CLI: &str = "/usr/bin/redis-cli";

#[derive(Clone, Debug, Default)]
pub struct RedisOpts {
    /// `requirepass`: clients must AUTH with it.
    pub password: Option<String>,
    /// Serve TLS only (`--tls-port`, plaintext port 0) with a certificate for
    /// 127.0.0.1 issued by a throwaway CA; see [`RedisServer::ca_pem`].
    pub tls: bool,
}

pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    opts: RedisOpts,
    child: Option<Child>,
    ca_pem: Option<Vec<u8>>,
}

/// A port nobody listens on right now (the OS picked it; we let it go at once).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOpts::default())
    }

    /// Starts and waits until it answers PING (panics after 10 s, with its log).
    pub fn start_with(opts: RedisOpts) -> RedisServer {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: run .ci/install-redis.sh"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_pem = opts.tls.then(|| write_tls_files(dir.path()));
        let mut r = RedisServer {
            port: free_port(),
            dir,
            opts,
            child: None,
            ca_pem,
        };
        r.restart();
        r
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://` with TLS), without the password.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The URL with the password in it (`redis://:<pw>@127.0.0.1:<port>/0`).
    pub fn url_with_password(&self) -> String {
        let pw = self.opts.password.as_deref().unwrap_or_default();
        self.url().replacen("://", &format!("://:{pw}@"), 1)
    }

    /// The CA that issued the server's certificate (PEM), with TLS.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.ca_pem.clone()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no shutdown, no final save; only what the AOF already has survives.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and dir (it reloads its AOF), and
    /// waits until it answers. Does nothing to a server that is running.
    pub fn restart(&mut self) {
        if self.is_running() {
            return;
        }
        let log = std::fs::File::create(self.log_path()).expect("redis log file");
        let child = Command::new(BINARY)
            .args(self.args())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// SIGSTOP: the server keeps its connections but answers nothing (a hung Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {sig} {pid} failed");
    }

    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// Runs `redis-cli` against this server and returns its output (trimmed).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(CLI);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.opts.password {
            cmd.env("REDISCLI_AUTH", pw);
        }
        if self.opts.tls {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(self.dir.path().join("ca.pem"));
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn args(&self) -> Vec<String> {
        let d = self.dir.path().display().to_string();
        let mut a: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--dir",
            &d,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let port = self.port.to_string();
        if self.opts.tls {
            let f = |n: &str| self.dir.path().join(n).display().to_string();
            a.extend(["--port".into(), "0".into(), "--tls-port".into(), port]);
            a.extend([
                "--tls-cert-file".into(),
                f("server.pem"),
                "--tls-key-file".into(),
                f("server.key"),
            ]);
            a.extend([
                "--tls-ca-cert-file".into(),
                f("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
        } else {
            a.extend(["--port".into(), port]);
        }
        if let Some(pw) = &self.opts.password {
            a.extend(["--requirepass".into(), pw.clone()]);
        }
        a
    }

    /// Waits until the server accepts connections and is done loading its AOF.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.is_running() {
                panic!("redis-server exited at start:\n{}", self.log());
            }
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer within 10 s:\n{}", self.log());
    }

    fn answers(&self) -> bool {
        if self.opts.tls {
            // The log line comes after the AOF is loaded; then the TLS port is open.
            return self.log().contains("Ready to accept connections")
                && TcpStream::connect(self.addr()).is_ok();
        }
        let Ok(mut s) = TcpStream::connect(self.addr()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        // +PONG, or -NOAUTH with requirepass: either way it is serving (not -LOADING).
        buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process dies of SIGKILL too, but make it runnable to be tidy.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, written as ca.pem,
/// server.pem and server.key; returns the CA's PEM.
fn write_tls_files(dir: &Path) -> Vec<u8> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis test redis CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write key");
    ca.pem().into_bytes()
}

#[test]
fn starts_kills_and_restarts_with_its_data() {
    let mut r = RedisServer::start();
    assert_eq!(r.cli(&["SET", "k", "v"]), "OK");
    let port = r.port();
    r.kill9();
    assert!(
        TcpStream::connect(r.addr()).is_err(),
        "killed server still accepts"
    );
    r.restart();
    assert_eq!(r.port(), port);
    assert_eq!(r.cli(&["GET", "k"]), "v", "the AOF brought the key back");
}
