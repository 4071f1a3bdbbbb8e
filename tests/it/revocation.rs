//! Revocation: each scope's effect, lockout, bulk, control-port auth, audit chain,
//! session registry, long-lived connections, and durability across SIGKILL.

use crate::common::*;
use crate::origin::Origin;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

fn apps(origin: &Origin) -> String {
    format!(
        r#"
[[app]]
name = "up"
hosts = ["up.localhost"]
origin = "{}"
allow_emails = ["*@example.com"]

[[app]]
name = "staff"
hosts = ["staff.localhost"]
origin = "builtin:echo"
allow_groups = ["staff", "contractors"]
"#,
        origin.url()
    )
}

struct World {
    gw: Gw,
    _origin: Origin,
}

async fn world() -> World {
    let origin = Origin::start().await;
    let gw = Gw::start(&apps(&origin)).await;
    World {
        gw,
        _origin: origin,
    }
}

async fn logged_in(gw: &Gw, email: &str, pw: &str) -> reqwest::Client {
    let c = gw.client();
    let r = gw.login(&c, "echo.localhost", "/", email, pw).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (r, _) = navigate(&c, &gw.url("staff.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    c
}

async fn status(c: &reqwest::Client, gw: &Gw, host: &str) -> StatusCode {
    xhr(c, &gw.url(host, "/")).await.status()
}

#[tokio::test]
async fn user_scope_ends_every_session_of_that_user_only() {
    let w = world().await;
    let gw = &w.gw;
    let demo = logged_in(gw, DEMO, DEMO_PW).await;
    let demo2 = logged_in(gw, DEMO, DEMO_PW).await;
    let bob = logged_in(gw, BOB, BOB_PW).await;
    let out = gw.revoke("user", "Demo@Example.com").await;
    assert_eq!(out["scope"], "user");
    assert_eq!(out["target"], DEMO);
    assert_eq!(out["sessions_revoked"], 2);
    assert!(out["id"].is_string() && out["not_before"].is_string());
    for c in [&demo, &demo2] {
        for host in ["echo.localhost", "staff.localhost"] {
            let r = xhr(c, &gw.url(host, "/")).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "session_revoked");
        }
        // A navigation does not reach the origin: the renewal path died too.
        let (r, url) = navigate(c, &gw.url("echo.localhost", "/")).await;
        assert!(url.contains("/login"), "{url}");
        assert!(r.text().await.unwrap().contains("revoked"));
    }
    assert_eq!(status(&bob, gw, "echo.localhost").await, StatusCode::OK);
    assert_eq!(status(&bob, gw, "staff.localhost").await, StatusCode::OK);
}

#[tokio::test]
async fn relogin_is_locked_out_then_allowed() {
    let w = world().await;
    let gw = &w.gw;
    logged_in(gw, DEMO, DEMO_PW).await;
    gw.revoke("user", DEMO).await;
    let c = gw.client();
    let r = gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("revoked") && html.contains("60 more seconds"),
        "{html}"
    );
    gw.advance(Duration::from_secs(30));
    let r = gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    assert!(r.text().await.unwrap().contains("30 more seconds"));
    gw.advance(Duration::from_secs(31));
    let r = gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(status(&c, gw, "echo.localhost").await, StatusCode::OK);
}

#[tokio::test]
async fn session_scope_ends_one_session_and_its_app_tokens() {
    let w = world().await;
    let gw = &w.gw;
    let a = logged_in(gw, DEMO, DEMO_PW).await;
    let b = logged_in(gw, DEMO, DEMO_PW).await;
    let sid: String = xhr(&a, &gw.url("echo.localhost", "/.portcullis/identity"))
        .await
        .json::<Value>()
        .await
        .unwrap()["sid"]
        .as_str()
        .unwrap()
        .into();
    let out = gw.revoke("session", &sid).await;
    assert_eq!(out["sessions_revoked"], 1);
    assert_eq!(
        status(&a, gw, "echo.localhost").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&a, gw, "staff.localhost").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&b, gw, "echo.localhost").await, StatusCode::OK);
    let (_, url) = navigate(&a, &gw.url("echo.localhost", "/")).await;
    assert!(
        url.contains("/login"),
        "the global session died with it: {url}"
    );
    // DELETE /v1/sessions/{sid} does the same.
    let sid_b: String = xhr(&b, &gw.url("echo.localhost", "/.portcullis/identity"))
        .await
        .json::<Value>()
        .await
        .unwrap()["sid"]
        .as_str()
        .unwrap()
        .into();
    let (s, v) = gw
        .admin(Method::DELETE, &format!("/v1/sessions/{sid_b}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        status(&b, gw, "echo.localhost").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn group_scope_matches_the_tokens_groups() {
    let w = world().await;
    let gw = &w.gw;
    let demo = logged_in(gw, DEMO, DEMO_PW).await; // staff
    let bob = logged_in(gw, BOB, BOB_PW).await; // contractors
    let out = gw.revoke("group", "contractors").await;
    assert_eq!(out["sessions_revoked"], 1);
    assert_eq!(
        status(&bob, gw, "echo.localhost").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&bob, gw, "staff.localhost").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&demo, gw, "echo.localhost").await, StatusCode::OK);
}

#[tokio::test]
async fn app_scope_kills_that_apps_tokens_and_reissues_silently_in_the_same_second() {
    let w = world().await;
    let gw = &w.gw;
    let demo = logged_in(gw, DEMO, DEMO_PW).await;
    // The clock is frozen: the revocation and the new token share the same second.
    let out = gw.revoke("app", "echo").await;
    assert_eq!(out["sessions_revoked"], 1);
    assert_eq!(
        status(&demo, gw, "echo.localhost").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&demo, gw, "staff.localhost").await,
        StatusCode::OK,
        "other apps live on"
    );
    let (r, url) = navigate(&demo, &gw.url("echo.localhost", "/back")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        url,
        gw.url("echo.localhost", "/back"),
        "silent re-issue, no form"
    );
    assert_eq!(status(&demo, gw, "echo.localhost").await, StatusCode::OK);
}

#[tokio::test]
async fn all_scope_ends_everything_issued_before_it() {
    let w = world().await;
    let gw = &w.gw;
    let demo = logged_in(gw, DEMO, DEMO_PW).await;
    let bob = logged_in(gw, BOB, BOB_PW).await;
    let out = gw.revoke("all", "").await;
    assert_eq!(out["sessions_revoked"], 2);
    for c in [&demo, &bob] {
        assert_eq!(
            status(c, gw, "echo.localhost").await,
            StatusCode::UNAUTHORIZED
        );
    }
    // Sessions made after it (same frozen second) work.
    let c = logged_in(gw, BOB, BOB_PW).await;
    assert_eq!(status(&c, gw, "echo.localhost").await, StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_are_400_and_bad_tokens_401_changing_nothing() {
    let w = world().await;
    let gw = &w.gw;
    let c = reqwest::Client::new();
    let url = gw.control_url("/v1/revocations");
    let audit_before = std::fs::read_to_string(gw.dir.join("state/audit.log")).unwrap_or_default();
    for (body, want) in [
        ("{not json", "invalid JSON"),
        (r#"{"scope":"planet","target":"x"}"#, "unknown scope"),
        (r#"{"scope":"user","target":"  "}"#, "must not be empty"),
    ] {
        let r = c
            .post(&url)
            .bearer_auth(gw.admin_token())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(r.text().await.unwrap().contains(want), "{body}");
    }
    let good = json!({"scope": "user", "target": DEMO, "reason": "x"});
    let r = c.post(&url).json(&good).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(&url)
        .bearer_auth("wrong-token")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(&url)
        .header("authorization", format!("Basic {}", gw.admin_token()))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for path in ["/v1/revocations", "/v1/sessions", "/v1/users"] {
        let r = c.get(gw.control_url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = c
        .delete(gw.control_url("/v1/sessions/abc"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(gw.gw().revocations.is_empty(), "nothing changed");
    let audit_after = std::fs::read_to_string(gw.dir.join("state/audit.log")).unwrap_or_default();
    assert_eq!(audit_before, audit_after);
}

#[tokio::test]
async fn bulk_csv_reports_each_row() {
    let w = world().await;
    let gw = &w.gw;
    let demo = logged_in(gw, DEMO, DEMO_PW).await;
    let bob = logged_in(gw, BOB, BOB_PW).await;
    let csv =
        format!("name,user\nDemo,{DEMO}\nGhost,ghost@example.com\n\"Bob, B.\",{BOB}\nEmpty,\n");
    let r = reqwest::Client::new()
        .post(gw.control_url("/v1/revocations/bulk?reason=offboarding"))
        .bearer_auth(gw.admin_token())
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["status"], "revoked");
    assert_eq!(rows[0]["sessions_revoked"], 1);
    assert_eq!(rows[1]["status"], "unknown_user");
    assert_eq!(rows[2]["status"], "revoked");
    assert_eq!(rows[3]["status"], "invalid");
    assert_eq!(v["revoked"], 2);
    assert_eq!(
        status(&demo, gw, "echo.localhost").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&bob, gw, "echo.localhost").await,
        StatusCode::UNAUTHORIZED
    );
    // JSON works too.
    let (s, v) = gw
        .admin(
            Method::POST,
            "/v1/revocations/bulk",
            Some(json!({"users": [EVE, "nobody@example.com"], "reason": "hr"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["results"][0]["status"], "revoked");
    assert_eq!(v["results"][1]["status"], "unknown_user");
    // And the list shows them with reasons and actors.
    let (_, v) = gw.admin(Method::GET, "/v1/revocations", None).await;
    let list = v["revocations"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|r| r["target"] == BOB && r["reason"] == "offboarding" && r["actor"] == "ops")
    );
}

#[tokio::test]
async fn audit_chain_detects_an_edited_line() {
    let w = world().await;
    let gw = &w.gw;
    gw.revoke("user", DEMO).await;
    gw.revoke("group", "contractors").await;
    gw.revoke("app", "echo").await;
    let path = gw.dir.join("state/audit.log");
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for k in [
        "time",
        "actor",
        "scope",
        "target",
        "reason",
        "sessions_revoked",
        "node",
        "id",
        "prev",
    ] {
        assert!(lines[0].get(k).is_some(), "audit field {k}");
    }
    assert_eq!(lines[0]["actor"], "ops");
    let verify = |p: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["audit", "verify", "--file"])
            .arg(p)
            .output()
            .unwrap()
    };
    let out = verify(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"target\":\"contractors\"", "\"target\":\"interns\"", 1);
    let copy = gw.dir.join("edited.log");
    std::fs::write(&copy, edited).unwrap();
    let out = verify(&copy);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sessions_and_users_show_who_is_in() {
    let w = world().await;
    let gw = &w.gw;
    let c = gw.client();
    let r = login_at(&c, &gw.url("echo.localhost", "/"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = gw
        .admin(Method::GET, &format!("/v1/sessions?user={DEMO}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let sess = &v["sessions"][0];
    assert_eq!(sess["user"], DEMO);
    assert_eq!(sess["ip"], "127.0.0.1");
    assert!(sess["user_agent"].is_string());
    assert_eq!(sess["apps"], json!(["echo"]));
    for k in ["sid", "created", "last_seen", "expires"] {
        assert!(sess[k].is_string(), "{k}");
    }
    let (_, v) = gw.admin(Method::GET, "/v1/users", None).await;
    let u = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == DEMO)
        .expect("demo listed");
    assert!(u["last_login"].is_string());
    // The CLI prints a table from the same data.
    // tokio's Command: the gateway runs on this test's runtime and must keep serving.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["sessions", "--config"])
        .arg(&gw.config_path)
        .args(["--url", &gw.control_url("")])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("USER AGENT") && table.contains(DEMO) && table.contains("127.0.0.1"),
        "{table}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "revoke",
            "--user",
            DEMO,
            "--reason",
            "offboarding",
            "--config",
        ])
        .arg(&gw.config_path)
        .args(["--url", &gw.control_url("")])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 sessions ended"));
    assert_eq!(
        status(&c, gw, "echo.localhost").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn open_websocket_and_stream_close_on_revocation() {
    let w = world().await;
    let gw = &w.gw;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    gw.login(&c, "up.localhost", "/", DEMO, DEMO_PW).await;
    let url = gw.url("up.localhost", "/ws");
    let tls = raw_tls(gw.h().https_addr, "up.localhost").await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://up.localhost:{}/ws", gw.port()),
    )
    .unwrap();
    req.headers_mut()
        .insert("cookie", cookie_header(&jar, &url).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    assert!(ws.next().await.unwrap().is_ok());
    let mut events = c
        .get(gw.url("up.localhost", "/events"))
        .send()
        .await
        .unwrap();
    assert!(events.chunk().await.unwrap().is_some());
    gw.revoke("user", DEMO).await;
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "websocket still open a second after the revocation"
    );
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match events.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "event stream still flowing a second after the revocation"
    );
}

/// The real binary: revoke, SIGKILL right after the 200, restart: still refused.
#[tokio::test]
async fn revocation_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_text("").replace("[control]", "[log]\nformat = \"json\"\n\n[control]");
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let (mut child, https, control) = spawn_gateway(&cfg).await;
    let c = client_for(https, true);
    let r = login_at(
        &c,
        &format!("https://echo.localhost:{}/", https.port()),
        DEMO,
        DEMO_PW,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (c2, jar) = {
        let (c2, jar) = client_with_jar(https);
        login_at(
            &c2,
            &format!("https://echo.localhost:{}/", https.port()),
            BOB,
            BOB_PW,
        )
        .await;
        (c2, jar)
    };
    let bob_cookie = cookie_header(&jar, &format!("https://echo.localhost:{}/", https.port()));
    let token = std::fs::read_to_string(dir.path().join("state/admin.token")).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{control}/v1/revocations"))
        .bearer_auth(token.trim())
        .json(&json!({"scope": "user", "target": BOB, "reason": "offboarding"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    child.kill().unwrap(); // SIGKILL, right after the 200
    child.wait().unwrap();
    drop(c2);
    let (mut child, https2, _) = spawn_gateway(&cfg).await;
    let raw = client_for(https2, false);
    let r = raw
        .get(format!("https://echo.localhost:{}/", https2.port()))
        .header("cookie", &bob_cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "revocation lost across SIGKILL"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "session_revoked");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Starts `portcullis run` and reads the listening addresses from its JSON log.
pub async fn spawn_gateway(
    cfg: &std::path::Path,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "portcullis is listening"
            {
                let _ = tx.send((
                    v["https"].as_str().unwrap().to_string(),
                    v["control"].as_str().unwrap().to_string(),
                ));
            }
        }
    });
    let (https, control) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("gateway started");
    (child, https.parse().unwrap(), control.parse().unwrap())
}

#[tokio::test]
async fn restart_replays_compacts_and_survives_a_torn_record() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = portcullis::clock::ManualClock::starting_now();
    let toml = config_text("");
    let mut gw = Gw::start_in(tmp.path(), &toml, clock.clone()).await;
    gw.revoke("user", "old@example.com").await;
    clock.advance(Duration::from_secs(25 * 3600 + 600));
    gw.revoke("user", DEMO).await;
    gw.stop().await;
    // A crash mid-append leaves half a record at the end.
    let log = tmp.path().join("state/revocations.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"0000abcd {\"id\":\"torn").unwrap();
    drop(f);
    let gw = Gw::start_in(tmp.path(), &toml, clock.clone()).await;
    let set = &gw.gw().revocations;
    assert!(
        set.get(portcullis::revocation::Scope::User, DEMO).is_some(),
        "live entry replayed"
    );
    assert!(
        set.get(portcullis::revocation::Scope::User, "old@example.com")
            .is_none(),
        "expired entry dropped"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("old@example.com"), "log compacted at start");
    assert!(!text.contains("torn"), "torn record removed");
    // And it keeps appending cleanly.
    gw.revoke("user", BOB).await;
    let (_, recs) = portcullis::revocation::log::RevocationLog::open(&log).unwrap();
    assert_eq!(recs.len(), 2);
}
