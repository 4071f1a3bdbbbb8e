//! The peer backend's [`SessionDirectory`]: this node's registry plus every peer's
//! (`GET /v1/peer/sessions`, `/v1/peer/users`), asked at once and merged.

use super::PeerSync;
use crate::clock::Micros;
use crate::cluster::{Directory, SessionDirectory};
use crate::session::registry::{SessionView, merge};
use futures_util::future::BoxFuture;
use http::Method;

impl PeerSync {
    /// Asks every peer for `path` (a JSON list of sessions) at once.
    async fn gather(&self, path: String, mut local: Vec<SessionView>) -> Directory {
        let mut set = tokio::task::JoinSet::new();
        for p in self.client.peers() {
            let (client, path) = (self.client.clone(), path.clone());
            set.spawn(async move {
                let r = client.call(&p, Method::GET, &path, None).await;
                let sessions = r
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Vec<SessionView>>(&b).ok());
                (p, sessions)
            });
        }
        let mut out = Directory::default();
        while let Some(Ok((p, r))) = set.join_next().await {
            match r {
                Some(v) => {
                    out.answered += 1;
                    local.extend(v);
                }
                None => out.missing.push(p),
            }
        }
        out.sessions = merge(local);
        out
    }
}

impl SessionDirectory for PeerSync {
    fn live<'a>(&'a self, user: Option<&'a str>) -> BoxFuture<'a, Directory> {
        Box::pin(async move {
            let local = self.sessions.list(user, self.engine.now_us());
            let path = match user {
                Some(u) => format!(
                    "/v1/peer/sessions?{}",
                    crate::web::query::encode(&[("user", u)])
                ),
                None => "/v1/peer/sessions".into(),
            };
            let mut d = self.gather(path, local).await;
            // A session revoked anywhere is over everywhere.
            let set = self.engine.set();
            d.sessions.retain(|s| {
                let i = &s.info;
                !set.revokes_session(&i.sid, &i.user, &i.groups, i.created_us)
            });
            d
        })
    }

    fn created_since(&self, since: Micros) -> BoxFuture<'_, Directory> {
        Box::pin(async move {
            let local = self.sessions.created_since(since);
            self.gather("/v1/peer/users".into(), local).await
        })
    }
}
