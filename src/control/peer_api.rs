//! The peer API other nodes call: pushed revocations, the set's digest and entries, and
//! this node's sessions for the cluster-wide lists. (Anti-entropy's binary endpoints and
//! the self-test's check live with sync, in `sync::http`.)

use super::{Control, ControlError, Res, json_of, read_body};
use crate::sync::peer::{Digest, Entries, PushAck, PushBody};
use crate::sync::shared::{ClaimRequest, FailureNote};
use crate::timefmt::month_start;
use crate::web::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;

impl Control {
    pub(super) async fn peer_push(&self, req: Request<Incoming>) -> Res {
        let bytes = read_body(req.into_body()).await?;
        let b: PushBody = serde_json::from_slice(&bytes)
            .map_err(|e| ControlError::BadRequest(format!("invalid JSON: {e}")))?;
        let (applied, sessions) = self.engine.accept(b.records).await?;
        if applied > 0 {
            tracing::info!(from = %b.from, applied, "applied revocations pushed by a peer");
        }
        Ok(json_of(&PushAck { applied, sessions }))
    }

    /// Another node claims a single-use key: did this node have it already?
    pub(super) async fn peer_claim(&self, req: Request<Incoming>) -> Res {
        let bytes = read_body(req.into_body()).await?;
        let claim: ClaimRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ControlError::BadRequest(format!("invalid JSON: {e}")))?;
        Ok(json_of(&self.sync.shared.on_claim(&claim)))
    }

    /// Another node recorded (or cleared) failed sign-ins.
    pub(super) async fn peer_failure(&self, req: Request<Incoming>) -> Res {
        let bytes = read_body(req.into_body()).await?;
        let note: FailureNote = serde_json::from_slice(&bytes)
            .map_err(|e| ControlError::BadRequest(format!("invalid JSON: {e}")))?;
        self.sync.shared.on_failure(&note);
        Ok(json_of(&serde_json::json!({"ok": true})))
    }

    pub(super) fn peer_digest(&self) -> Response<Body> {
        let set = self.engine.set();
        json_of(&Digest {
            node: self.engine.node_id().to_string(),
            digest: set.digest(),
            count: set.len(),
        })
    }

    pub(super) fn peer_entries(&self) -> Response<Body> {
        json_of(&Entries {
            node: self.engine.node_id().to_string(),
            entries: self.engine.set().entries(),
        })
    }

    pub(super) fn peer_sessions(&self, user: Option<&str>) -> Response<Body> {
        json_of(&self.sessions.list(user, self.engine.now_us()))
    }

    pub(super) fn peer_users(&self) -> Response<Body> {
        json_of(
            &self
                .sessions
                .created_since(month_start(self.engine.now_us())),
        )
    }
}
