//! A real origin server for tests: HTTP/1.1 on 127.0.0.1:0, with routes that echo what
//! arrived, stream large bodies, answer slowly, stream events forever, and speak
//! WebSocket.

#![allow(dead_code)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

type B = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> B {
    Full::new(s.into()).boxed()
}

pub struct Origin {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub async fn start() -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(handle);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Origin { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn q(req: &Request<Incoming>, k: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))?
        .parse()
        .ok()
}

async fn handle(req: Request<Incoming>) -> Result<Response<B>, Infallible> {
    let path = req.uri().path().to_string();
    Ok(match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(q(&req, "ms").unwrap_or(5000))).await;
            Response::new(full("slow"))
        }
        "/upload" => {
            // Counts and hashes the body as it streams in, never holding it whole.
            let mut body = req.into_body();
            let mut n = 0u64;
            let mut h = Sha256::new();
            let mut max_chunk = 0usize;
            while let Some(f) = body.frame().await {
                let Ok(f) = f else { break };
                if let Some(d) = f.data_ref() {
                    n += d.len() as u64;
                    max_chunk = max_chunk.max(d.len());
                    h.update(d);
                }
            }
            Response::new(full(
                serde_json::json!({"bytes": n, "sha256": hex::encode(h.finalize()), "max_chunk": max_chunk}).to_string(),
            ))
        }
        "/download" => {
            let total = q(&req, "bytes").unwrap_or(1 << 20);
            let chunk = 64 * 1024u64;
            let stream = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent >= total {
                    return None;
                }
                let n = chunk.min(total - sent);
                let data = Bytes::from(vec![b'x'; n as usize]);
                Some((Ok::<_, Infallible>(Frame::data(data)), sent + n))
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/events" => {
            // Never ends by itself: a long-lived streaming response.
            let stream = futures_util::stream::unfold(0u64, |i| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: {i}\n\n")))),
                    i + 1,
                ))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("hv"));
            r
        }
        "/hop" => {
            let mut r = Response::new(full("hop"));
            let h = r.headers_mut();
            h.insert("connection", "x-origin-secret".parse().expect("hv"));
            h.insert("x-origin-secret", "1".parse().expect("hv"));
            h.insert("keep-alive", "timeout=5".parse().expect("hv"));
            h.insert("x-origin-kept", "1".parse().expect("hv"));
            r
        }
        "/ws" => websocket(req),
        _ => {
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let v = serde_json::json!({
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "query": req.uri().query(),
                "headers": headers,
            });
            Response::new(full(v.to_string()))
        }
    })
}

fn websocket(mut req: Request<Incoming>) -> Response<B> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full("not a websocket request"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = on.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                return;
            }
        }
    });
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", "upgrade".parse().expect("hv"));
    h.insert("upgrade", "websocket".parse().expect("hv"));
    h.insert("sec-websocket-accept", accept.parse().expect("hv"));
    r
}
