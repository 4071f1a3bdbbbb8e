//! The Cluster page: this node, the backend, each peer's state, last contact and lag
//! (whether its revocation set matches this node's right now), the last self-test, and
//! a button that runs the self-test and shows each peer's propagation time.
//!
//! The page reads the backend through [`ClusterView`]; [`NodeCluster`] implements it for
//! either backend (peers: each peer's state and lag; Redis: the connection and stream
//! lag from the backend's readiness, and no peers).

use super::form::Fields;
use super::view::{self, Page, Tab, badge, esc, when};
use super::{Admin, Console};
use crate::clock::Micros;
use crate::cluster::BackendStatus;
use crate::sync::PeerSync;
use crate::sync::peer::Digest;
use crate::sync::selftest::{self, Report};
use crate::web::body::Body;
use futures_util::future::BoxFuture;
use http::{Method, Response, StatusCode};
use std::sync::Arc;

/// One peer as this node sees it.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub peer: String,
    pub up: bool,
    /// When it last answered (before this page asked).
    pub last_heard_us: Option<Micros>,
    pub push_failures: u64,
    /// Its revocation set's digest and size, asked now; or why not.
    pub digest: Result<(String, usize), String>,
}

/// What the Cluster page needs from the cluster backend.
pub trait ClusterView: Send + Sync {
    /// The backend's name as shown.
    fn backend(&self) -> String;
    /// The backend's readiness facts (`/readyz`'s `sync` field).
    fn readiness(&self) -> serde_json::Value;
    /// Every peer, with its set's digest asked now.
    fn peers(&self) -> BoxFuture<'_, Vec<PeerState>>;
    fn last_selftest(&self) -> Option<Report>;
    /// Runs the self-test from this node for `actor`.
    fn run_selftest<'a>(&'a self, actor: &'a str) -> BoxFuture<'a, Report>;
}

/// The backend in force (`status`) and the peer sync that runs the self-test (`sync`,
/// whose peer list is empty with the Redis backend).
pub struct NodeCluster {
    pub sync: Arc<PeerSync>,
    pub status: Arc<dyn BackendStatus>,
}

impl ClusterView for NodeCluster {
    fn backend(&self) -> String {
        match self.status.name() {
            "redis" => "redis (every node writes revocations to one Redis stream and follows it)",
            _ => "peers (push to every node, anti-entropy every few seconds)",
        }
        .into()
    }

    fn readiness(&self) -> serde_json::Value {
        self.status.readiness()
    }

    fn peers(&self) -> BoxFuture<'_, Vec<PeerState>> {
        Box::pin(async move {
            let client = &self.sync.client;
            let asks = client.peers().into_iter().map(|p| async move {
                let (up, last_heard_us, push_failures) = (
                    client.health.is_up(&p),
                    client.health.last_heard(&p),
                    client.health.push_failures(&p),
                );
                let digest = client
                    .call(&p, Method::GET, "/v1/peer/digest", None)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Digest>(&b).map_err(|e| e.to_string()))
                    .map(|d| (d.digest, d.count));
                PeerState {
                    peer: p,
                    up,
                    last_heard_us,
                    push_failures,
                    digest,
                }
            });
            futures_util::future::join_all(asks).await
        })
    }

    fn last_selftest(&self) -> Option<Report> {
        selftest::last(&self.sync)
    }

    fn run_selftest<'a>(&'a self, actor: &'a str) -> BoxFuture<'a, Report> {
        Box::pin(selftest::run(&self.sync, actor, selftest::DEFAULT_TIMEOUT))
    }
}

/// The backend's state in a sentence, from its readiness facts.
fn sync_note(ready: &serde_json::Value) -> String {
    if ready["backend"] == "redis" {
        let connected = if ready["connected"] == true {
            "connected"
        } else {
            "NOT connected"
        };
        let lag = ready["lag_ms"]
            .as_u64()
            .map_or("no entry applied yet".to_string(), |ms| {
                format!("{ms} ms behind the stream")
            });
        let outbox = ready["outbox"].as_u64().unwrap_or(0);
        return format!(
            "{connected} to {}; {lag}; {outbox} revocation(s) waiting to be written",
            ready["redis"].as_str().unwrap_or("redis")
        );
    }
    ready["note"]
        .as_str()
        .unwrap_or("no peers: this node is the whole cluster")
        .to_string()
}

fn peer_row(p: &PeerState, ours: &(String, usize), now: Micros) -> String {
    let state = if p.up {
        badge("b-ok", "up")
    } else {
        badge("b-bad", "down")
    };
    let last = p
        .last_heard_us
        .map_or("never".to_string(), |t| when(t, now));
    let lag = match &p.digest {
        Ok((d, n)) if *d == ours.0 => badge("b-ok", &format!("in sync ({n} entries)")),
        Ok((_, n)) => badge(
            "b-warn",
            &format!(
                "differs: {n} entries there, {} here; anti-entropy repairs it",
                ours.1
            ),
        ),
        Err(e) => badge("b-bad", &format!("cannot ask: {e}")),
    };
    format!(
        r#"<tr><td><code>{}</code></td><td>{state}</td><td>{last}</td><td>{lag}</td><td class="num">{}</td></tr>"#,
        esc(&p.peer),
        p.push_failures
    )
}

fn selftest_card(r: Option<&Report>, just_ran: bool, now: Micros) -> String {
    let Some(r) = r else {
        return r#"<p class="muted">No self-test has run on this node since it started.</p>"#
            .into();
    };
    let verdict = if r.ok {
        badge("b-ok", "passed")
    } else {
        badge("b-bad", "failed")
    };
    let fresh = if just_ran {
        r#"<p class="notice ok">The self-test just ran.</p>"#
    } else {
        ""
    };
    let peers: String = r
        .peers
        .iter()
        .map(|p| {
            let res = if p.ok { badge("b-ok", "refused in time") } else { badge("b-bad", "failed") };
            let ms = p.propagation_ms.map_or("&mdash;".to_string(), |ms| format!("{ms:.1} ms"));
            format!(r#"<tr><td><code>{}</code></td><td>{res}</td><td class="num">{ms}</td><td class="ua">{}</td></tr>"#, esc(&p.peer), esc(p.error.as_deref().unwrap_or("")))
        })
        .collect();
    let table = if r.peers.is_empty() {
        r#"<p class="muted small">No peers: the canary was revoked and refused on this node only.</p>"#.to_string()
    } else {
        format!(
            r#"<div class="table-wrap"><table id="propagation"><thead><tr><th>Peer</th><th>Result</th><th class="num">Propagation</th><th>Error</th></tr></thead><tbody>{peers}</tbody></table></div>"#
        )
    };
    let error = r
        .error
        .as_deref()
        .map(|e| format!(r#"<p class="notice bad">{}</p>"#, esc(e)))
        .unwrap_or_default();
    format!(
        r#"{fresh}<p id="selftest-result">{verdict} from node <b>{}</b>, started {}, took {:.0} ms; this node refused the revoked canary: {}.</p>{error}{table}"#,
        esc(&r.node),
        when(r.started_us, now),
        r.duration_ms,
        if r.local_refused_after { "yes" } else { "no" },
    )
}

impl Console {
    pub(super) async fn cluster_page(&self, a: &Admin<'_>, ran: Option<Report>) -> Response<Body> {
        let peers = self.cluster.peers().await;
        let set = self.engine.set();
        let ours = (set.digest(), set.len());
        let note = sync_note(&self.cluster.readiness());
        let rows: String = peers.iter().map(|p| peer_row(p, &ours, a.now)).collect();
        let last = ran.clone().or_else(|| self.cluster.last_selftest());
        let token = self.form(a, "selftest", String::new(), String::new());
        let body = format!(
            r#"<h1>Cluster</h1>
<div class="card"><dl class="facts"><dt>This node</dt><dd><b>{node}</b></dd><dt>Backend</dt><dd>{backend}</dd><dt>Revocations in force</dt><dd>{n} <span class="muted small">(digest <code>{digest}</code>)</span></dd><dt>Sync</dt><dd>{note}</dd></dl></div>
<h2>Nodes</h2><div class="table-wrap"><table id="nodes"><thead><tr><th>Node</th><th>State</th><th>Last contact</th><th>Lag</th><th class="num">Failed pushes</th></tr></thead><tbody>
<tr><td><b>{node}</b> <span class="muted small">(this node)</span></td><td>{up}</td><td>&mdash;</td><td>&mdash;</td><td class="num">&mdash;</td></tr>{rows}</tbody></table></div>
<h2>Self-test</h2><div class="card"><p class="muted small">Mints a real canary token, checks every node accepts it, revokes it here through the normal path and measures how long each peer takes to refuse it.</p>{card}
<form method="post" action="/admin/cluster/selftest"><input type="hidden" name="csrf" value="{token}"><div class="actions"><button class="btn" type="submit" id="run-selftest">Run the self-test now</button></div></form></div>"#,
            node = esc(&a.node),
            backend = esc(&self.cluster.backend()),
            n = ours.1,
            digest = esc(&ours.0.chars().take(16).collect::<String>()),
            note = esc(&note),
            up = badge("b-ok", "serving"),
            card = selftest_card(last.as_ref(), ran.is_some(), a.now),
            token = esc(&token),
        );
        view::respond(
            StatusCode::OK,
            &Page {
                title: "Cluster",
                tab: Tab::Cluster,
                body,
                script: None,
            },
            Some(&a.viewer()),
        )
    }

    pub(super) async fn selftest(
        &self,
        a: &Admin<'_>,
        f: Fields,
    ) -> Result<Response<Body>, crate::error::GatewayError> {
        if let Err(r) = self.acting_form(a, &f, "selftest").await {
            return Ok(*r);
        }
        let report = self.cluster.run_selftest(&a.actor()).await;
        Ok(self.cluster_page(a, Some(report)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::sync_note;
    use serde_json::json;

    #[test]
    fn the_sync_note_says_what_the_backend_says() {
        let redis = json!({"backend": "redis", "redis": "redis://127.0.0.1:6379/", "connected": true, "lag_ms": 3, "outbox": 0});
        assert_eq!(
            sync_note(&redis),
            "connected to redis://127.0.0.1:6379/; 3 ms behind the stream; 0 revocation(s) waiting to be written"
        );
        let down = json!({"backend": "redis", "connected": false, "lag_ms": null, "outbox": 2});
        assert!(sync_note(&down).starts_with("NOT connected to redis; no entry applied yet; 2"));
        assert_eq!(sync_note(&json!({"note": "caught up"})), "caught up");
        assert_eq!(
            sync_note(&json!({})),
            "no peers: this node is the whole cluster"
        );
    }
}
