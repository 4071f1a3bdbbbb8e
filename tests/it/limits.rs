//! Limits against hostile clients, driven over real sockets: each test attacks the
//! gateway with one kind of hostile client (silent TLS connections, slowloris heads,
//! trickled bodies, broken chunked framing, connection floods, HTTP/2 rapid reset,
//! sign-in floods) while a well-behaved client keeps asking for pages, and checks
//! both that the attack is cut off (and counted) and that the good client is served.
//! The origin is a real TCP server that records every byte it receives and how each
//! connection ended, so "nothing an origin could act on" is checked on the wire.

use crate::common::*;
use reqwest::StatusCode;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How a connection to the recording origin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// FIN: the peer closed cleanly.
    Eof,
    /// RST (or another read error).
    Reset,
}

#[derive(Debug, Clone)]
struct ConnLog {
    bytes: Vec<u8>,
    end: End,
}

/// An origin that records every byte of every connection. It answers bodiless requests
/// (`GET /...`) with `200 ok` and never answers a request that has a body, so what the
/// gateway sent of such a request stays in the log as it arrived.
struct Recorder {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<ConnLog>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let c2 = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let i = {
                    let mut c = c2.lock().unwrap();
                    c.push(ConnLog {
                        bytes: Vec::new(),
                        end: End::Open,
                    });
                    c.len() - 1
                };
                tokio::spawn(record(s, c2.clone(), i));
            }
        });
        Recorder { addr, conns, task }
    }

    /// The connections on which a request for `path` arrived.
    fn with_path(&self, path: &str) -> Vec<ConnLog> {
        let needle = format!(" {path} HTTP/1.1");
        self.conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| String::from_utf8_lossy(&c.bytes).contains(&needle))
            .cloned()
            .collect()
    }
}

async fn record(mut s: TcpStream, conns: Arc<Mutex<Vec<ConnLog>>>, i: usize) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        let n = match s.read(&mut buf).await {
            Ok(0) => break End::Eof,
            Ok(n) => n,
            Err(_) => break End::Reset,
        };
        conns.lock().unwrap()[i].bytes.extend_from_slice(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        while let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..at]).to_ascii_lowercase();
            if head.contains("content-length") || head.contains("transfer-encoding") {
                // A request with a body: record it, never answer it.
                pending.clear();
                break;
            }
            pending.drain(..at + 4);
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok",
                )
                .await;
        }
    };
    conns.lock().unwrap()[i].end = end;
}

/// `[limits]` plus an app `up` in front of `origin`.
fn config(origin: &Recorder, limits: &str) -> String {
    format!(
        r#"
[[app]]
name = "up"
hosts = ["up.localhost"]
origin = "http://{}"
allow_emails = ["*@example.com"]
origin_timeout = "5s"

[login]
max_failures_per_user = 100000
max_failures_per_ip = 100000

[limits]
{limits}
"#,
        origin.addr
    )
}

/// A gateway in front of a recording origin, and a well-behaved client signed in to it
/// (from 127.0.0.1) with its cookie header for raw requests.
async fn setup(limits: &str) -> (Gw, Recorder, reqwest::Client, String) {
    let origin = Recorder::start().await;
    let gw = Gw::start(&config(&origin, limits)).await;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    let r = gw.login(&c, "up.localhost", "/ok", DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = cookie_header(&jar, &gw.url("up.localhost", "/"));
    (gw, origin, c, cookie)
}

/// The good client asks the origin for a page through the gateway: 200 "ok", in time.
async fn served(gw: &Gw, c: &reqwest::Client) {
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        c.get(gw.url("up.localhost", "/ok")).send(),
    )
    .await
    .expect("the good client was answered in time")
    .expect("the good client's request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok");
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A metric's value from the control port's `/metrics` (`name` with its labels as
/// printed, e.g. `portcullis_x_total{a="b"}`).
async fn metric(gw: &Gw, name: &str) -> u64 {
    let text = reqwest::get(gw.control_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics:\n{text}"))
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 all reaches
/// 127.0.0.1 on Linux): distinct client addresses on one machine.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Whether the server closed `s` within `wait` (EOF or reset), reading whatever it sent.
async fn closed_within(s: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Reads what the server says until it closes or `wait` passes.
async fn read_all(s: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn silent_tls_connections_are_closed_by_the_head_deadline() {
    let (gw, _o, c, _) = setup("request_head_timeout = \"1s\"").await;
    let addr = gw.h().https_addr;
    // Connections that never send a byte, not even a TLS ClientHello.
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await);
    }
    let t = Instant::now();
    served(&gw, &c).await;
    let mut checks = Vec::new();
    for mut s in silent {
        checks.push(tokio::spawn(async move {
            closed_within(&mut s, Duration::from_secs(6)).await
        }));
    }
    for ch in checks {
        assert!(ch.await.unwrap(), "a silent connection was still open");
    }
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "closed too early"
    );
    served(&gw, &c).await;
    let timed_out = "portcullis_connections_timed_out_total{deadline=\"request_head\"}";
    assert!(metric(&gw, timed_out).await >= 30);
    // A client that completes the handshake but sends no request is closed too.
    let mut tls = raw_tls(addr, "up.localhost").await;
    assert!(closed_within(&mut tls, Duration::from_secs(4)).await);
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_while_others_are_served() {
    let (gw, _o, c, _) = setup("request_head_timeout = \"1s\"").await;
    let addr = gw.h().https_addr;
    let mut loris = Vec::new();
    for _ in 0..5 {
        let tcp = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).await;
        let mut s = tls_over(tcp, "up.localhost", b"http/1.1").await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: up.localhost\r\n")
            .await
            .unwrap();
        loris.push(s);
    }
    // One header byte every 100 ms, for as long as the gateway listens.
    let t = Instant::now();
    let writers: Vec<_> = loris
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if s.write_all(b"X").await.is_err() || s.flush().await.is_err() {
                        break;
                    }
                }
                let said = read_all(&mut s, Duration::from_secs(1)).await;
                (Instant::now(), said)
            })
        })
        .collect();
    for _ in 0..3 {
        served(&gw, &c).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for w in writers {
        let (at, said) = w.await.unwrap();
        assert!(
            at.duration_since(t) < Duration::from_secs(6),
            "a slowloris head was held for {:?}",
            at.duration_since(t)
        );
        assert!(!said.contains("200 OK"), "{said}");
    }
    served(&gw, &c).await;
    let timed_out = "portcullis_connections_timed_out_total{deadline=\"request_head\"}";
    assert!(metric(&gw, timed_out).await >= 5);
}

#[tokio::test]
async fn a_body_trickling_one_byte_a_second_gets_408() {
    let (gw, origin, c, cookie) = setup("body_timeout = \"1s\"").await;
    let mut s = raw_tls(gw.h().https_addr, "up.localhost").await;
    let head = format!(
        "POST /trickle HTTP/1.1\r\nHost: up.localhost\r\nCookie: {cookie}\r\nAccept: application/json\r\nContent-Length: 60\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        for _ in 0..60 {
            if w.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let reader = tokio::spawn(async move { read_all(&mut r, Duration::from_secs(8)).await });
    served(&gw, &c).await;
    let said = reader.await.unwrap();
    writer.abort();
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(t.elapsed() < Duration::from_secs(8));
    served(&gw, &c).await;
    // The origin never got the whole body: whatever reached it was cut off by a reset.
    for conn in origin.with_path("/trickle") {
        let text = String::from_utf8_lossy(&conn.bytes).into_owned();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        assert!(body.len() < 60, "the origin got the whole body: {text}");
        assert_eq!(conn.end, End::Reset, "{text}");
    }
    assert!(metric(&gw, "portcullis_request_body_timeouts_total").await >= 1);
}

/// Sends a chunked request whose body is `parts` (written with pauses between them),
/// returns what the gateway answered.
async fn chunked(gw: &Gw, cookie: &str, path: &str, parts: &[&[u8]]) -> String {
    let mut s = raw_tls(gw.h().https_addr, "up.localhost").await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: up.localhost\r\nCookie: {cookie}\r\nAccept: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for p in parts {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(p).await.is_err() {
            break;
        }
    }
    read_all(&mut s, Duration::from_secs(4)).await
}

#[tokio::test]
async fn a_chunk_size_overflow_never_reaches_the_origin_as_a_request_it_could_act_on() {
    let (gw, origin, c, cookie) = setup("").await;
    let overflow: &[u8] = b"fffffffffffffffffffffffff\r\nxyz\r\n";
    // The first chunk header overflows: nothing at all goes upstream.
    let said = chunked(&gw, &cookie, "/evil-first", &[overflow]).await;
    assert!(said.starts_with("HTTP/1.1 400"), "{said}");
    assert!(
        origin.with_path("/evil-first").is_empty(),
        "the head of a refused request reached the origin"
    );
    served(&gw, &c).await;
    // A good first chunk, then an overflowing one: the origin saw the head and the
    // first chunk, never the last chunk, and its connection was reset (not closed as
    // if the request were complete).
    let said = chunked(&gw, &cookie, "/evil-later", &[b"5\r\nhello\r\n", overflow]).await;
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 400"),
        "{said}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = origin.with_path("/evil-later");
    assert_eq!(seen.len(), 1, "the head and first chunk went upstream");
    for conn in &seen {
        let text = String::from_utf8_lossy(&conn.bytes).into_owned();
        let request = &text[text.find("POST /evil-later").unwrap()..];
        assert!(request.contains("hello"), "{request}");
        assert!(
            !request.contains("\r\n0\r\n\r\n"),
            "a complete body: {request}"
        );
        assert_eq!(conn.end, End::Reset, "{text}");
    }
    served(&gw, &c).await;
    // The same request well framed is forwarded whole.
    let said = chunked(&gw, &cookie, "/fine", &[b"5\r\nhello\r\n0\r\n\r\n"]).await;
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 504"),
        "{said}"
    );
    let fine = origin.with_path("/fine");
    assert_eq!(fine.len(), 1);
    assert!(String::from_utf8_lossy(&fine[0].bytes).ends_with("5\r\nhello\r\n0\r\n\r\n"));
}

#[tokio::test]
async fn per_address_connection_cap() {
    let (gw, _o, c, _) = setup("max_connections_per_address = 4").await;
    let addr = gw.h().https_addr;
    let hostile = Ipv4Addr::new(127, 0, 0, 4);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(hostile, addr).await);
    }
    for s in &mut held {
        assert!(!closed_within(s, Duration::from_millis(300)).await);
    }
    // The fifth and later from the same address are closed at accept.
    for _ in 0..5 {
        let mut s = connect_from(hostile, addr).await;
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    }
    // Other addresses are served meanwhile (the good client is on 127.0.0.1).
    served(&gw, &c).await;
    let other = connect_from(Ipv4Addr::new(127, 0, 0, 5), addr).await;
    let tls = tls_over(other, "up.localhost", b"http/1.1").await;
    assert!(tls.is_ok(), "another address was refused");
    let refused = "portcullis_connections_refused_total{listener=\"data\",cap=\"per_address\"}";
    assert!(metric(&gw, refused).await >= 5);
    // Once the address closes its connections, it may connect again.
    drop(held);
    let again = async {
        loop {
            let mut s = connect_from(hostile, addr).await;
            if !closed_within(&mut s, Duration::from_millis(300)).await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), again)
        .await
        .expect("the address was let back in");
}

#[tokio::test]
async fn total_connection_cap_keeps_serving_open_connections() {
    let (gw, _o, c, cookie) = setup("max_connections = 6\nmax_connections_per_address = 4").await;
    let addr = gw.h().https_addr;
    drop(c);
    // The good client's keep-alive connection, opened before the flood, and alone.
    let mut good = raw_tls(addr, "up.localhost").await;
    let open = "portcullis_connections_open{listener=\"data\"}";
    let alone = async {
        while metric(&gw, open).await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), alone)
        .await
        .expect("the sign-in connections closed");
    let ask = format!("GET /ok HTTP/1.1\r\nHost: up.localhost\r\nCookie: {cookie}\r\n\r\n");
    let answered = async |s: &mut TlsStream| {
        s.write_all(ask.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"ok") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("answered in time")
                .unwrap();
            assert!(n > 0, "the good connection was closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    };
    answered(&mut good).await;
    // The flood: five from two addresses fill the remaining places...
    let mut held = Vec::new();
    for from in [
        [127, 0, 0, 6],
        [127, 0, 0, 6],
        [127, 0, 0, 6],
        [127, 0, 0, 7],
        [127, 0, 0, 7],
    ] {
        held.push(connect_from(Ipv4Addr::from(from), addr).await);
    }
    for s in &mut held {
        assert!(!closed_within(s, Duration::from_millis(200)).await);
    }
    // ...and every other connection, from any address, is closed at accept.
    for from in [[127, 0, 0, 7], [127, 0, 0, 8], [127, 0, 0, 1]] {
        let mut s = connect_from(Ipv4Addr::from(from), addr).await;
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    }
    // The connection already open keeps being served.
    for _ in 0..3 {
        answered(&mut good).await;
    }
    let refused = "portcullis_connections_refused_total{listener=\"data\",cap=\"total\"}";
    assert!(metric(&gw, refused).await >= 3);
    assert_eq!(metric(&gw, open).await, 6);
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fresh = raw_tls(addr, "up.localhost").await;
    answered(&mut fresh).await;
}

/// An HTTP/2 connection to the gateway (TLS, ALPN h2) and its driver task.
async fn h2_connect(
    gw: &Gw,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(gw.h().https_addr).await.unwrap();
    let tls = tls_over(tcp, "up.localhost", b"h2").await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    (send, tokio::spawn(conn))
}

fn h2_get(path: &str, cookie: &str) -> http::Request<()> {
    http::Request::get(format!("https://up.localhost{path}"))
        .header("cookie", cookie)
        .body(())
        .unwrap()
}

#[tokio::test]
async fn http2_stream_cap_and_rapid_reset() {
    let (gw, _o, c, cookie) =
        setup("h2_max_concurrent_streams = 5\nh2_max_pending_reset_streams = 10").await;
    // A well-behaved HTTP/2 client: sees the stream cap, and 20 requests at once on one
    // connection are all answered (five at a time).
    let (send, conn) = h2_connect(&gw).await;
    let mut s = send.clone().ready().await.unwrap();
    let (resp, _) = s.send_request(h2_get("/ok", &cookie), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert_eq!(send.current_max_send_streams(), 5);
    let many = (0..20).map(|_| {
        let send = send.clone();
        let cookie = cookie.clone();
        async move {
            let mut s = send.ready().await.unwrap();
            let (resp, _) = s.send_request(h2_get("/ok", &cookie), true).unwrap();
            resp.await.unwrap().status()
        }
    });
    for st in futures_util::future::join_all(many).await {
        assert_eq!(st, 200);
    }
    conn.abort();
    // Rapid reset (CVE-2023-44487), written frame by frame as an attacker would: a
    // burst of requests each cancelled at once, with no regard for the stream cap.
    let (goaway, frames_read) = rapid_reset(&gw, 2000).await;
    assert_eq!(
        goaway,
        Some(ENHANCE_YOUR_CALM),
        "no GOAWAY(ENHANCE_YOUR_CALM) after {frames_read} frames"
    );
    served(&gw, &c).await;
    let goaway = "portcullis_h2_goaway_total{reason=\"enhance_your_calm\"}";
    assert!(metric(&gw, goaway).await >= 1);
}

/// An HTTP/2 frame header: length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Opens an HTTP/2 connection by hand, writes `n` requests each followed at once by
/// RST_STREAM(CANCEL) in one burst, then reads the gateway's frames until it closes:
/// returns the GOAWAY's error code, if one came, and how many frames were read.
async fn rapid_reset(gw: &Gw, n: u32) -> (Option<u32>, usize) {
    let tcp = TcpStream::connect(gw.h().https_addr).await.unwrap();
    let mut tls = tls_over(tcp, "up.localhost", b"h2").await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    // HPACK: GET, https, /, then :authority as a literal without indexing.
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 12];
    block.extend_from_slice(b"up.localhost");
    for i in 0..n {
        let id = 2 * i + 1;
        out.extend(frame(0x1, 0x5, id, &block));
        out.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&out).await;
        let _ = w.flush().await;
        w
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let (mut frames, mut goaway) = (0, None);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while goaway.is_none() {
        match tokio::time::timeout_at(until, r.read(&mut chunk)).await {
            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
            _ => break,
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            frames += 1;
            if buf[3] == 0x7 && len >= 8 {
                goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
    }
    tls = r.unsplit(writer.await.unwrap());
    drop(tls);
    (goaway, frames)
}

/// Posts the sign-in form `n` times at once (wrong passwords), returns the statuses
/// and whether every 503 carried a Retry-After.
async fn sign_in_flood(gw: &Gw, n: usize) -> (Vec<StatusCode>, bool) {
    let c = client_for(gw.h().https_addr, true);
    let (r, form_url) = navigate(&c, &gw.url("up.localhost", "/")).await;
    let html = r.text().await.unwrap();
    let csrf = extract(&html, "csrf").expect("csrf");
    let post = join(&form_url, "/login");
    let tries = (0..n).map(|i| {
        let (c, post, csrf) = (c.clone(), post.clone(), csrf.clone());
        async move {
            let email = format!("flood{i}@example.com");
            let r = c
                .post(&post)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("email", &email),
                    ("password", "x"),
                ])
                .send()
                .await
                .unwrap();
            let retry = r.headers().contains_key("retry-after");
            (r.status(), retry)
        }
    });
    let all = futures_util::future::join_all(tries).await;
    let retry_ok = all
        .iter()
        .all(|(s, retry)| *s != StatusCode::SERVICE_UNAVAILABLE || *retry);
    (all.into_iter().map(|(s, _)| s).collect(), retry_ok)
}

#[tokio::test]
async fn a_sign_in_flood_gets_503_and_proxying_goes_on() {
    let (gw, _o, c, _) = setup("password_checks = 1\npassword_check_queue = 2").await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        async {
            let mut statuses = Vec::new();
            let mut retry_ok = true;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (s, r) = sign_in_flood(&gw, 24).await;
                statuses.extend(s);
                retry_ok &= r;
            }
            (statuses, retry_ok)
        }
    };
    let good = async {
        // Give the flood a moment to fill the queue, then keep asking.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            served(&gw, &c).await;
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        worst
    };
    let ((statuses, retry_ok), worst) = tokio::join!(flood, good);
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let wrong = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(busy > 0, "no sign-in was turned away: {statuses:?}");
    assert!(wrong > 0, "no password was checked: {statuses:?}");
    assert_eq!(busy + wrong, statuses.len(), "{statuses:?}");
    assert!(retry_ok, "a 503 without Retry-After");
    assert!(worst < Duration::from_secs(3), "proxying took {worst:?}");
    let refused = metric(&gw, "portcullis_password_checks_refused_total").await;
    assert_eq!(refused, busy as u64);
    // Once the flood is over, a real sign-in works.
    let fresh = client_for(gw.h().https_addr, true);
    let r = gw.login(&fresh, "up.localhost", "/ok", BOB, BOB_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn failed_sign_in_histories_and_sessions_stay_within_their_bounds() {
    let limits =
        "max_throttle_keys = 10\nmax_sessions = 3\npassword_checks = 2\npassword_check_queue = 64";
    let (gw, _o, c, _) = setup(limits).await;
    // 30 failed sign-ins, each for another email: 30 more failure histories.
    let (statuses, _) = sign_in_flood(&gw, 30).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let entries = |map: &str| format!("portcullis_bounded_map_entries{{map=\"{map}\"}}");
    let evictions = |map: &str| format!("portcullis_bounded_map_evictions_total{{map=\"{map}\"}}");
    assert!(metric(&gw, &entries("login_failures")).await <= 10);
    assert!(metric(&gw, &evictions("login_failures")).await >= 20);
    served(&gw, &c).await;
    // Six sign-ins into a registry of three: the oldest leave the operators' list, and
    // every one of them is still served (a session's validity is its token's).
    let mut clients = vec![c];
    for _ in 0..5 {
        let fresh = client_for(gw.h().https_addr, true);
        let r = gw.login(&fresh, "up.localhost", "/ok", DEMO, DEMO_PW).await;
        assert_eq!(r.status(), StatusCode::OK);
        clients.push(fresh);
    }
    assert!(metric(&gw, &entries("sessions")).await <= 3);
    assert!(metric(&gw, &evictions("sessions")).await >= 3);
    for c in &clients {
        served(&gw, c).await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn secret_files_are_created_private_and_open_ones_refused() {
    use portcullis::config::{Config, Secrets};
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let mut gw = Gw::start("").await;
    let (dir, path) = (gw.dir.clone(), gw.config_path.clone());
    gw.stop().await;
    let token = dir.join("state/admin.token");
    let keys = dir.join("state/keys");
    let pem = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pem"))
        .expect("a signing key");
    assert_eq!(mode(&token), 0o600);
    assert_eq!(mode(&pem), 0o600);
    assert_eq!(mode(&keys), 0o700);
    // An admin token its group may read: the config is refused, naming the file.
    chmod(&token, 0o640);
    let e = Config::load(&path, Secrets::Create)
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin.token") && e.contains("chmod 600"), "{e}");
    chmod(&token, 0o600);
    // A signing key others may read: the gateway does not start.
    chmod(&pem, 0o644);
    let config = Config::load(&path, Secrets::Create).expect("config");
    let clock = portcullis::clock::ManualClock::starting_now();
    let e = match portcullis::server::start(config, clock).await {
        Ok(_) => panic!("started with a world-readable signing key"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("chmod 600"), "{e}");
    // A peer token file open to others is refused too.
    chmod(&pem, 0o600);
    let peer = dir.join("peer.token");
    std::fs::write(&peer, "a-peer-token").unwrap();
    chmod(&peer, 0o644);
    let text = std::fs::read_to_string(&path).unwrap()
        + "\n[sync]\npeers = [\"http://127.0.0.1:9\"]\npeer_token_file = \"peer.token\"\n";
    let e = Config::parse(&text, &path, Secrets::Create)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("peer_token_file") && e.contains("chmod 600"),
        "{e}"
    );
}
