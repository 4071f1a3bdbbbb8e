//! The foundation: routing, forwarding, streaming, upgrades, errors, smuggling, reload.

use crate::common::*;
use crate::origin::Origin;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

fn up_app(origin: &Origin, extra: &str) -> String {
    format!(
        r#"
[[app]]
name = "up"
hosts = ["up.localhost"]
origin = "{}"
allow_emails = ["*@example.com"]
origin_timeout = "700ms"
{extra}
"#,
        origin.url()
    )
}

/// A gateway in front of a real origin, and a client logged in to it.
async fn setup(
    extra: &str,
) -> (
    Gw,
    Origin,
    reqwest::Client,
    std::sync::Arc<reqwest::cookie::Jar>,
) {
    let origin = Origin::start().await;
    let gw = Gw::start(&up_app(&origin, extra)).await;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    let r = gw.login(&c, "up.localhost", "/", DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    (gw, origin, c, jar)
}

fn header<'a>(v: &'a Value, name: &str) -> Vec<&'a str> {
    v["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p[0].as_str() == Some(name))
                .filter_map(|p| p[1].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn routes_by_host_to_the_right_origin() {
    let (gw, _o, c, _) = setup("").await;
    let v: Value = c
        .get(gw.url("up.localhost", "/a/b?x=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/a/b");
    assert_eq!(v["query"], "x=1");
    // The builtin echo answers for its own host (after its own hand-off).
    let r = navigate(&c, &gw.url("echo.localhost", "/hello")).await.0;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = c
        .get(gw.url("echo.localhost", "/hello"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["identity"]["email"], DEMO);
}

#[tokio::test]
async fn unknown_host_is_404_and_sni_mismatch_is_421() {
    let gw = Gw::start("").await;
    let addr = gw.h().https_addr;
    let resp = raw_exchange(
        addr,
        "nowhere.localhost",
        b"GET / HTTP/1.1\r\nHost: nowhere.localhost\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    let resp = raw_exchange(
        addr,
        "echo.localhost",
        b"GET / HTTP/1.1\r\nHost: auth.localhost\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 421"), "{resp}");
}

#[tokio::test]
async fn keep_alive_and_http2_clients() {
    let (gw, _o, _c, jar) = setup("").await;
    let url = gw.url("up.localhost", "/k");
    let cookie = cookie_header(&jar, &url);
    // HTTP/1.1: three requests on one connection, written and read by hand.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = raw_tls(gw.h().https_addr, "up.localhost").await;
    for i in 0..3 {
        let req = format!(
            "GET /k{i} HTTP/1.1\r\nHost: up.localhost\r\nCookie: {cookie}\r\nAccept: application/json\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = String::new();
        while !got.contains(&format!("/k{i}")) {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed after {i} requests");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    // HTTP/2 over TLS (ALPN h2).
    let h2 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .resolve("up.localhost", gw.h().https_addr)
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = h2.get(&url).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn streams_large_bodies_both_ways() {
    let (gw, _o, c, _) = setup("").await;
    // Upload 48 MiB as a stream; the origin hashes what arrives.
    let chunks = 768usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(|i| Ok::<_, std::io::Error>(vec![(i % 251) as u8; 64 * 1024])),
    );
    let r = c
        .post(gw.url("up.localhost", "/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["bytes"], (chunks * 64 * 1024) as u64);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    for i in 0..chunks {
        sha2::Digest::update(&mut h, vec![(i % 251) as u8; 64 * 1024]);
    }
    assert_eq!(v["sha256"], hex::encode(sha2::Digest::finalize(h)));
    // Download 64 MiB and count it as it streams.
    let mut r = c
        .get(gw.url("up.localhost", "/download?bytes=67108864"))
        .send()
        .await
        .unwrap();
    let mut n = 0usize;
    while let Some(chunk) = r.chunk().await.unwrap() {
        n += chunk.len();
    }
    assert_eq!(n, 64 << 20);
    // An endless stream: the first events arrive although the response never ends,
    // so nothing waits for the whole body.
    let mut r = c
        .get(gw.url("up.localhost", "/events"))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(3), r.chunk())
        .await
        .expect("streamed")
        .unwrap();
    assert!(first.is_some());
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let (gw, _o, _c, jar) = setup("").await;
    let url = gw.url("up.localhost", "/h");
    let cookie = cookie_header(&jar, &url);
    let req = format!(
        "GET /h HTTP/1.1\r\nHost: up.localhost\r\nCookie: {cookie}\r\nConnection: close, x-client-secret\r\nX-Client-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\nX-Kept: yes\r\nAccept: application/json\r\n\r\n"
    );
    let resp = raw_exchange(
        gw.h().https_addr,
        "up.localhost",
        req.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let body = body
        .find('{')
        .map(|i| &body[i..body.rfind('}').unwrap() + 1])
        .unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    for gone in ["x-client-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            header(&v, gone).is_empty(),
            "{gone} reached the origin: {v}"
        );
    }
    assert_eq!(header(&v, "x-kept"), vec!["yes"]);
    let r = reqwest_get(&gw, &jar, "/hop").await;
    assert!(r.headers().get("x-origin-secret").is_none());
    assert!(r.headers().get("keep-alive").is_none());
    assert_eq!(r.headers()["x-origin-kept"], "1");
}

async fn reqwest_get(gw: &Gw, jar: &reqwest::cookie::Jar, path: &str) -> reqwest::Response {
    let c = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .resolve("up.localhost", gw.h().https_addr)
        .build()
        .unwrap();
    let url = gw.url("up.localhost", path);
    c.get(&url)
        .header("cookie", cookie_header(jar, &url))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forwarded_headers_are_set_and_not_spoofable() {
    let (gw, _o, c, _) = setup("").await;
    let v: Value = c
        .get(gw.url("up.localhost", "/f"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-host", "evil.example")
        .header("portcullis-jwt-assertion", "forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&v, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header(&v, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        header(&v, "x-forwarded-host"),
        vec![format!("up.localhost:{}", gw.port()).as_str()]
    );
    let assertion = header(&v, "portcullis-jwt-assertion");
    assert_eq!(assertion.len(), 1);
    assert_ne!(assertion[0], "forged");
    // The binding cookie never reaches the origin; nor do the gateway's other cookies.
    let cookies = header(&v, "cookie").join("; ");
    assert!(!cookies.contains("portcullis_"), "{cookies}");
}

#[tokio::test]
async fn trusted_proxies_extend_the_chain() {
    let origin = Origin::start().await;
    let extra = up_app(&origin, "");
    let toml = config_text(&extra).replace(
        "origin_timeout = \"2s\"",
        "origin_timeout = \"2s\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let gw = Gw::start_raw(&toml).await;
    let c = gw.client();
    gw.login(&c, "up.localhost", "/", DEMO, DEMO_PW).await;
    let v: Value = c
        .get(gw.url("up.localhost", "/f"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        header(&v, "x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let (gw, _o, _c, jar) = setup("").await;
    let url = gw.url("up.localhost", "/ws");
    let tls = raw_tls(gw.h().https_addr, "up.localhost").await;
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://up.localhost:{}/ws", gw.port()),
    )
    .unwrap();
    let mut req = req;
    req.headers_mut()
        .insert("cookie", cookie_header(&jar, &url).parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for msg in ["hello", "through", "portcullis"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), msg);
    }
}

#[tokio::test]
async fn origin_down_is_502_and_slow_is_504() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        r#"
[[app]]
name = "down"
hosts = ["other.localhost"]
origin = "http://{dead}"
allow_emails = ["*@example.com"]
"#
    );
    let (gw, _o, c, _) = setup(&extra).await;
    let r = navigate(&c, &gw.url("other.localhost", "/")).await.0;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.text().await.unwrap().contains("could not be reached"));
    let r = c
        .get(gw.url("up.localhost", "/slow?ms=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn smuggling_shaped_requests_are_refused() {
    let origin = Origin::start().await;
    let gw = Gw::start(&up_app(&origin, "")).await;
    let addr = gw.h().https_addr;
    let cases: [&[u8]; 7] = [
        b"POST / HTTP/1.1\r\nHost: up.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: up.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: up.localhost\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: up.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: up.localhost\r\nContent-Length: 4, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: up.localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        // A clean request, then a smuggled one pipelined behind it on the same connection.
        b"GET / HTTP/1.1\r\nHost: up.localhost\r\n\r\nPOST / HTTP/1.1\r\nHost: up.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for req in cases {
        let resp = raw_exchange(addr, "up.localhost", req, Duration::from_secs(3)).await;
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{}: {resp}",
            String::from_utf8_lossy(req)
        );
    }
    // Oversized headers are refused too, and the gateway keeps serving.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: up.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let resp = raw_exchange(addr, "up.localhost", big.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        resp.starts_with("HTTP/1.1 431") || resp.starts_with("HTTP/1.1 400") || resp.is_empty(),
        "{resp}"
    );
    let ok = raw_exchange(
        addr,
        "up.localhost",
        b"GET / HTTP/1.1\r\nHost: up.localhost\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 401"), "{ok}");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let origin = Origin::start().await;
    let extra = up_app(&origin, "");
    let toml = config_text(&extra).replace(
        "origin_timeout = \"2s\"",
        "origin_timeout = \"2s\"\nmax_body_bytes = 1024",
    );
    let gw = Gw::start_raw(&toml).await;
    let c = gw.client();
    gw.login(&c, "up.localhost", "/", DEMO, DEMO_PW).await;
    let r = c
        .post(gw.url("up.localhost", "/upload"))
        .body(vec![0u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn hot_reload_applies_good_files_and_refuses_bad_ones() {
    let gw = Gw::start("").await;
    let c = gw.client();
    let gen0 = gw.gw().generation();
    // app2 is unknown at first.
    let r = c.get(gw.url("app2.localhost", "/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let good = config_text(
        r#"
[[app]]
name = "app2"
hosts = ["app2.localhost"]
origin = "builtin:echo"
allow_emails = ["*@example.com"]
"#,
    );
    std::fs::write(&gw.config_path, &good).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.gw().generation() == gen0 {
        assert!(
            std::time::Instant::now() < deadline,
            "file change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .get(gw.url("app2.localhost", "/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "app2 is now protected by the gateway"
    );
    // A bad file is refused; the running config keeps serving.
    let gen1 = gw.gw().generation();
    let bad = good.replace(
        "name = \"app2\"",
        "name = \"app2\"\nsame_site = \"sideways\"",
    );
    std::fs::write(&gw.config_path, &bad).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failures = || {
        gw.gw()
            .metrics
            .config_reload_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    while failures() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "bad file was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.gw().generation(), gen1);
    let r = c
        .get(gw.url("app2.localhost", "/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The reload is explicit in the error and in the metrics.
    let m = reqwest::get(gw.control_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(&format!("portcullis_config_generation {gen1}")),
        "{m}"
    );
    let err = gw.gw().reload().unwrap_err().to_string();
    assert!(err.contains("app[1].same_site"), "{err}");
}

#[tokio::test]
async fn check_command_names_file_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    let text = config_text("").replace(
        "origin = \"builtin:echo\"",
        "origin = \"builtin:echo\"\nsame_site = \"sideways\"",
    );
    std::fs::write(&p, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("app[0].same_site") && err.contains("sideways"),
        "{err}"
    );
    let p2 = dir.path().join("good.toml");
    std::fs::write(&p2, config_text("")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&p2)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The shipped gateway.toml is valid as it is.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&shipped)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let (mut gw, _o, c, _) = setup("").await;
    let addr = gw.h().https_addr;
    let slow = tokio::spawn({
        let c = c.clone();
        let url = gw.url("up.localhost", "/slow?ms=500");
        async move { c.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = std::time::Instant::now();
    gw.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown waited past its grace"
    );
    assert_eq!(
        slow.await.unwrap().unwrap(),
        StatusCode::OK,
        "in-flight request was cut"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn certificates_are_reloaded_with_the_config() {
    let gw = Gw::start("").await;
    let fingerprint = |gw: &Gw| {
        let addr = gw.h().https_addr;
        async move {
            let s = raw_tls(addr, "echo.localhost").await;
            let certs = s.get_ref().1.peer_certificates().unwrap().to_vec();
            certs[0].as_ref().to_vec()
        }
    };
    let before = fingerprint(&gw).await;
    // A new app host: the generated development certificate is rewritten to cover it.
    std::fs::write(
        &gw.config_path,
        config_text("[[app]]\nname = \"app2\"\nhosts = [\"app2.localhost\"]\norigin = \"builtin:echo\"\nallow_emails = [\"*\"]\n"),
    )
    .unwrap();
    gw.gw().reload().unwrap();
    let after = fingerprint(&gw).await;
    assert_ne!(before, after, "the reloaded certificate is served");
}
