//! The gateway's own HTTP/1.1 origin client, against an origin that writes exact bytes:
//! every response framing, interim responses, ambiguous and broken responses, request
//! body framing, connection reuse and stale pooled connections.

use crate::common::*;
use reqwest::StatusCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the origin received it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// An origin that answers each path with scripted bytes.
struct RawOrigin {
    addr: std::net::SocketAddr,
    conns: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    /// How many requests for `path` arrived.
    fn count(&self, path: &str) -> usize {
        let line = format!(" {path} HTTP/1.1");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.head.lines().next().is_some_and(|l| l.ends_with(&line)))
            .count()
    }

    async fn start() -> RawOrigin {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c2, s2) = (conns.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c2.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, s2.clone()));
            }
        });
        RawOrigin {
            addr,
            conns,
            seen,
            task,
        }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// Reads one request (head and body, Content-Length or chunked); `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end);
    let mut seen = Seen {
        head,
        body: Vec::new(),
    };
    let mut fill = async |buf: &mut Vec<u8>, want: usize| {
        while buf.len() < want {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    if let Some(n) = seen.header("content-length") {
        let n: usize = n.parse().ok()?;
        fill(buf, n).await?;
        seen.body = buf.drain(..n).collect();
    } else if seen.header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let want = buf.len() + 1;
                fill(buf, want).await?;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[..line_end])
                    .split(';')
                    .next()?,
                16,
            )
            .ok()?;
            buf.drain(..line_end + 2);
            fill(buf, size + 2).await?;
            seen.body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    Some(seen)
}

async fn serve(mut s: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        let path = req
            .head
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let framing = req
            .header("transfer-encoding")
            .map(|t| format!("te={t}"))
            .or_else(|| req.header("content-length").map(|n| format!("cl={n}")))
            .unwrap_or_else(|| "none".into());
        let body_len = req.body.len();
        seen.lock().unwrap().push(req);
        let w = |b: &str| b.as_bytes().to_vec();
        let (reply, close): (Vec<Vec<u8>>, bool) = match path.as_str() {
            "/fixed" => (
                vec![w(
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Origin: raw\r\n\r\nhello",
                )],
                false,
            ),
            "/chunked" => (
                vec![
                    w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel"),
                    w("lo\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"),
                ],
                false,
            ),
            "/close" => (vec![w("HTTP/1.1 200 OK\r\n\r\nuntil"), w(" the end")], true),
            "/interim" => (
                vec![w(
                    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                )],
                false,
            ),
            "/both" => (
                vec![w(
                    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                )],
                false,
            ),
            "/conflict" => (
                vec![w(
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                )],
                true,
            ),
            "/garbage" => (vec![w("SMTP ready\r\n\r\n")], true),
            // Takes the request and dies without answering.
            "/die" => (vec![], true),
            // Takes the request and never answers (the connection stays open).
            "/hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            "/truncated" => (
                vec![w("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")],
                true,
            ),
            "/nocontent" => (vec![w("HTTP/1.1 204 No Content\r\n\r\n")], false),
            "/idle-close" => (
                vec![w("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")],
                true,
            ),
            "/body" => (
                vec![w(&format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body_len} {framing}",
                    format!("{body_len} {framing}").len()
                ))],
                false,
            ),
            _ => (
                vec![w("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")],
                false,
            ),
        };
        for (i, part) in reply.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            if s.write_all(part).await.is_err() {
                return;
            }
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// A gateway with `other.localhost` in front of a scripted origin, and the session
/// cookie header of a logged-in user.
async fn setup() -> (Gw, RawOrigin, String) {
    let origin = RawOrigin::start().await;
    let extra = format!(
        r#"
[[app]]
name = "raw"
hosts = ["other.localhost"]
origin = "http://{}"
allow_emails = ["*@example.com"]
origin_timeout = "1s"
"#,
        origin.addr
    );
    let gw = Gw::start(&extra).await;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    let r = gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Sign in to the raw app too (its first response is whatever the origin says).
    let r = navigate(&c, &gw.url("other.localhost", "/fixed")).await.0;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = cookie_header(&jar, &gw.url("other.localhost", "/"));
    (gw, origin, cookie)
}

/// A client speaking HTTP/1.1 only (the gateway's origin side is HTTP/1.1 either way).
fn http1(gw: &Gw) -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .resolve("other.localhost", gw.h().https_addr)
        .build()
        .unwrap()
}

async fn get(c: &reqwest::Client, gw: &Gw, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = c
        .get(gw.url("other.localhost", path))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let s = r.status();
    (
        s,
        r.text()
            .await
            .unwrap_or_else(|e| format!("body error: {e}")),
    )
}

#[tokio::test]
async fn every_response_framing_is_read_exactly() {
    let (gw, o, cookie) = setup().await;
    let c = http1(&gw);
    assert_eq!(
        get(&c, &gw, &cookie, "/fixed").await,
        (StatusCode::OK, "hello".into())
    );
    // Chunked with an extension and a trailer, arriving in two pieces.
    assert_eq!(
        get(&c, &gw, &cookie, "/chunked").await,
        (StatusCode::OK, "hello world".into())
    );
    // No length at all: the body ends when the origin closes.
    assert_eq!(
        get(&c, &gw, &cookie, "/close").await,
        (StatusCode::OK, "until the end".into())
    );
    // 100 and 103 are skipped; the final response is the one forwarded.
    assert_eq!(
        get(&c, &gw, &cookie, "/interim").await,
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(
        get(&c, &gw, &cookie, "/nocontent").await,
        (StatusCode::NO_CONTENT, String::new())
    );
    // HEAD: the length is forwarded, no body is waited for, the connection stays usable.
    let r = c
        .head(gw.url("other.localhost", "/fixed"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "5");
    assert_eq!(
        get(&c, &gw, &cookie, "/fixed").await,
        (StatusCode::OK, "hello".into())
    );
    // Transfer-Encoding beats Content-Length, and that connection is not used again.
    let before = o.conns();
    assert_eq!(
        get(&c, &gw, &cookie, "/both").await,
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(
        get(&c, &gw, &cookie, "/fixed").await,
        (StatusCode::OK, "hello".into())
    );
    assert_eq!(o.conns(), before + 1, "the ambiguous connection was reused");
}

#[tokio::test]
async fn broken_origin_responses_are_502_or_cut_short() {
    let (gw, _o, cookie) = setup().await;
    let c = http1(&gw);
    let (s, body) = get(&c, &gw, &cookie, "/conflict").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    let (s, body) = get(&c, &gw, &cookie, "/garbage").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    // Counted on the metrics page (process-wide, so other tests may add to it).
    let m = reqwest::get(gw.control_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let malformed = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_origin_malformed_responses_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(malformed.is_some_and(|n| n >= 2), "{m}");
    assert!(
        m.contains("portcullis_origin_connections_opened_total"),
        "{m}"
    );
    // A body shorter than its Content-Length is not passed off as complete.
    // (The connection is cut: before the head reached the client, or after.)
    let r = c
        .get(gw.url("other.localhost", "/truncated"))
        .header("cookie", &cookie)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.bytes().await.is_err(), "a truncated body arrived whole");
    }
    // The gateway is unharmed.
    assert_eq!(
        get(&c, &gw, &cookie, "/fixed").await,
        (StatusCode::OK, "hello".into())
    );
}

#[tokio::test]
async fn connections_are_reused_and_stale_ones_replaced() {
    let (gw, o, cookie) = setup().await;
    let c = http1(&gw);
    let before = o.conns();
    for _ in 0..20 {
        assert_eq!(get(&c, &gw, &cookie, "/fixed").await.0, StatusCode::OK);
    }
    assert!(
        o.conns() <= before + 1,
        "20 sequential requests opened {} connections",
        o.conns() - before
    );
    // The origin closes a kept-alive connection after answering; the gateway
    // notices (or retries the bodyless request on a new connection) without a 502.
    // Without a pause the close races the next request: the write may land on the
    // closed connection, and the read then finds it gone.
    for pause in [0, 0, 0, 20, 20] {
        assert_eq!(get(&c, &gw, &cookie, "/idle-close").await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        assert_eq!(
            get(&c, &gw, &cookie, "/fixed").await,
            (StatusCode::OK, "hello".into())
        );
    }
}

#[tokio::test]
async fn request_bodies_reach_the_origin_framed() {
    let (gw, o, cookie) = setup().await;
    let url = gw.url("other.localhost", "/body");
    let data = vec![b'x'; 100_000];
    // A length-delimited body keeps its length.
    let c = http1(&gw);
    let r = c
        .post(&url)
        .header("cookie", &cookie)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "100000 cl=100000");
    assert_eq!(o.last().body, data);
    // A streamed body without a length (chunked from an HTTP/1.1 client, DATA frames
    // from HTTP/2) is sent chunked.
    for c in [http1(&gw), client_for(gw.h().https_addr, false)] {
        let parts: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(vec![b'a'; 3000]),
            Ok(vec![b'b'; 5]),
            Ok(vec![b'c'; 70_000]),
        ];
        let r = c
            .post(&url)
            .header("cookie", &cookie)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "73005 te=chunked");
        let got = o.last().body;
        assert_eq!(got.len(), 73_005);
        assert!(got.starts_with(&[b'a'; 3000]) && got.ends_with(&[b'c'; 70_000]));
    }
    // An empty POST says so.
    let r = c.post(&url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "0 cl=0");
    // Expect is the gateway's business with the client, not the origin's.
    assert_eq!(o.last().header("expect"), None);
}

#[tokio::test]
async fn only_idempotent_requests_are_sent_twice() {
    let (gw, o, cookie) = setup().await;
    let c = http1(&gw);
    // The origin takes the request on a kept-alive connection and dies: for GET the
    // gateway cannot tell that from a connection closed while idle, so it tries once
    // more on a new connection; a POST is never repeated.
    assert_eq!(get(&c, &gw, &cookie, "/fixed").await.0, StatusCode::OK);
    let r = c
        .post(gw.url("other.localhost", "/die"))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(o.count("/die"), 1, "a POST was repeated");
    assert_eq!(get(&c, &gw, &cookie, "/fixed").await.0, StatusCode::OK);
    assert_eq!(
        get(&c, &gw, &cookie, "/die").await.0,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        o.count("/die"),
        3,
        "a GET on a reused connection is tried twice"
    );
}

#[tokio::test]
async fn a_silent_origin_is_504_on_new_and_reused_connections() {
    let (gw, o, cookie) = setup().await;
    let c = http1(&gw);
    // Each time on a connection the previous request left in the pool: its timer is
    // re-armed for the new request, and the hung connection is not reused.
    for _ in 0..2 {
        assert_eq!(get(&c, &gw, &cookie, "/fixed").await.0, StatusCode::OK);
        let (s, body) = get(&c, &gw, &cookie, "/hang").await;
        assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    }
    assert_eq!(o.count("/hang"), 2);
    assert_eq!(
        get(&c, &gw, &cookie, "/fixed").await,
        (StatusCode::OK, "hello".into())
    );
}
