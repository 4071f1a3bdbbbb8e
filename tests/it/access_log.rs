//! The access log as operators run it: the real `portcullis run` process with
//! `[log] access_log_file`, stopped with SIGTERM, and the lines it left in the file.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Process {
    child: Child,
    dir: tempfile::TempDir,
    https: SocketAddr,
    control: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `[log] format = "<format>"` and the access log in a file.
fn start(format: &str) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let (https, control) = (free_port(), free_port());
    let toml = config_text(&format!(
        "\n[log]\nformat = \"{format}\"\naccess_log_file = \"logs/access.log\"\n"
    ))
    .replace(
        "listen = \"127.0.0.1:0\"\nauth_domain",
        &format!("listen = \"127.0.0.1:{https}\"\nauth_domain"),
    )
    .replace(
        "[control]\nlisten = \"127.0.0.1:0\"",
        &format!("[control]\nlisten = \"127.0.0.1:{control}\""),
    );
    std::fs::write(dir.path().join("gateway.toml"), toml).unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["--config", "gateway.toml", "run"])
        .current_dir(dir.path())
        .env_remove("PORTCULLIS_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let p = Process {
        child,
        dir,
        https: SocketAddr::from(([127, 0, 0, 1], https)),
        control: SocketAddr::from(([127, 0, 0, 1], control)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(p.control).is_err() {
        assert!(
            Instant::now() < deadline,
            "the gateway did not start: {}",
            read(&p.dir.path().join("stderr.log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// SIGTERM, then the exit: the shutdown flushes the access log.
fn terminate(p: &mut Process) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signs in, makes one authenticated and one anonymous request, reads the metric.
async fn traffic(p: &Process) -> String {
    let c = client_for(p.https, true);
    let base = format!("https://echo.localhost:{}", p.https.port());
    let r = login_at(&c, &format!("{base}/landing"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!("{base}/seen/by?the=log"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let anon = client_for(p.https, false);
    assert_eq!(
        xhr(&anon, &format!("{base}/anonymous")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    reqwest::get(format!("http://{}/metrics", p.control))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn text_access_log_in_a_file_is_written_by_the_time_the_process_exits() {
    let mut p = start("text");
    let metrics = traffic(&p).await;
    assert!(
        metrics.contains("\nportcullis_access_log_dropped_total 0\n"),
        "{metrics}"
    );
    terminate(&mut p);
    let log = read(&p.dir.path().join("logs/access.log"));
    let line = log
        .lines()
        .find(|l| l.contains(" path=/seen/by "))
        .unwrap_or_else(|| panic!("no line for /seen/by in:\n{log}"));
    let (stamp, rest) = line.split_once("  INFO portcullis::access: ").unwrap();
    assert_eq!(stamp.len(), "2026-11-22T09:30:00.123456Z".len(), "{line}");
    assert!(stamp.ends_with('Z'));
    // Over HTTP/2 (this client) the host comes from the authority, without the port.
    assert!(
        rest.starts_with("method=GET host=echo.localhost path=/seen/by status=200 duration_us="),
        "{line}"
    );
    assert!(
        rest.ends_with(" user=\"demo@example.com\" peer=127.0.0.1"),
        "{line}"
    );
    let anon = log
        .lines()
        .find(|l| l.contains(" path=/anonymous "))
        .unwrap();
    assert!(
        anon.contains(" status=401 ") && anon.contains(" user=\"-\" "),
        "{anon}"
    );
    // The login flow on the auth domain is logged too, and nothing is coloured.
    assert!(log.contains(" host=auth.localhost path=/login status="));
    let stderr = read(&p.dir.path().join("stderr.log"));
    assert!(
        !log.contains('\x1b') && !stderr.contains('\x1b'),
        "{stderr}"
    );
    assert!(stderr.contains("portcullis stopped"), "{stderr}");
    assert!(
        !stderr.contains("portcullis::access"),
        "access lines went to the file only"
    );
}

#[tokio::test]
async fn json_access_log_lines_carry_every_field() {
    let mut p = start("json");
    traffic(&p).await;
    terminate(&mut p);
    let log = read(&p.dir.path().join("logs/access.log"));
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let seen = lines
        .iter()
        .find(|v| v["path"] == "/seen/by")
        .unwrap_or_else(|| panic!("no line for /seen/by in:\n{log}"));
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["host"], "echo.localhost");
    assert_eq!(seen["status"], 200);
    assert!(seen["duration_us"].as_u64().is_some());
    assert_eq!(seen["user"], DEMO);
    assert_eq!(seen["peer"], "127.0.0.1");
    assert_eq!(seen["target"], "portcullis::access");
    assert!(seen["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(
        lines
            .iter()
            .any(|v| v["path"] == "/anonymous" && v["status"] == 401 && v["user"] == "-")
    );
}
