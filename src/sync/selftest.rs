//! The self-test: proves that revocation works end to end, on this node and on every
//! peer, by revoking something real and trying it.
//!
//! 1. Mint a canary: a real signed token (an app token for the first configured app, or
//!    a global session token when there is none) for the synthetic user
//!    `selftest@portcullis.invalid` with a fresh session id. No session is recorded, so
//!    canaries never show up in session or user lists.
//! 2. Check that this node and every peer accept it (`POST /v1/peer/check`): a peer that
//!    refuses a canary before it is revoked (other signing keys, a broken clock) proves
//!    nothing by refusing it afterwards.
//! 3. Ask every peer to check it again and hold the answer until it refuses the canary
//!    (the peer waits on its revocation set, no polling), then revoke the canary's
//!    session here through the normal path (durable, audited, pushed).
//! 4. Per peer, the time from the revocation call to the refusal is the propagation
//!    time. The last report and those times are exposed as metrics.

use super::PeerSync;
use super::client::PEER_TIMEOUT;
use super::peer::PeerError;
use crate::metrics::{Kind, Writer};
use crate::revocation::Scope;
use crate::revocation::engine::RevokeRequest;
use crate::session::token::Claims;
use http::Method;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CANARY_USER: &str = "selftest@portcullis.invalid";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Canaries live this long; the self-test revokes them long before.
const CANARY_LIFETIME_S: i64 = 600;

#[derive(Default)]
pub struct State {
    last: Mutex<Option<Report>>,
    runs: AtomicU64,
    failures: AtomicU64,
    running: tokio::sync::Mutex<()>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub ok: bool,
    pub node: String,
    pub started: String,
    pub started_us: i64,
    pub user: String,
    pub sid: String,
    /// The app the canary is a token for (none: a global session token).
    pub app: Option<String>,
    pub revocation_id: Option<String>,
    pub local_accepted_before: bool,
    pub local_refused_after: bool,
    pub peers: Vec<PeerReport>,
    pub duration_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerReport {
    pub peer: String,
    pub ok: bool,
    pub accepted_before: bool,
    pub refused: bool,
    /// From the revocation call here to the peer's refusal.
    pub propagation_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/peer/check`: verify `token` the way the data plane does (signature, times,
/// audience, revocation set), optionally waiting up to `wait_ms` for it to be refused.
#[derive(Serialize, Deserialize)]
pub struct CheckRequest {
    pub token: String,
    /// The app the token is for; none: a global session token.
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accepted,
    Refused,
    Invalid,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CheckAnswer {
    pub node: String,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub waited_ms: f64,
}

/// The real check, as the data plane runs it on a request carrying `token`.
pub fn check_token(sync: &PeerSync, token: &str, app: Option<&str>) -> CheckAnswer {
    let rt = sync.live.load();
    let iss = rt.config.issuer.as_str();
    let aud = app.unwrap_or(iss);
    let mut a = CheckAnswer {
        node: sync.client.node_id().to_string(),
        verdict: Verdict::Accepted,
        scope: None,
        error: None,
        waited_ms: 0.0,
    };
    match sync.auth.verify(token, aud, iss) {
        Err(e) => {
            a.verdict = Verdict::Invalid;
            a.error = Some(e.to_string());
        }
        Ok(v) => {
            if let Some(scope) = sync.auth.revocations().check(&v.claims, app.is_some()) {
                a.verdict = Verdict::Refused;
                a.scope = Some(scope);
            }
        }
    }
    a
}

/// Checks, and while the token is accepted waits (on the revocation set's change
/// notifications) up to `wait` for it to be refused.
pub async fn check_waiting(
    sync: &PeerSync,
    token: &str,
    app: Option<&str>,
    wait: Duration,
) -> CheckAnswer {
    let t0 = Instant::now();
    let mut changes = sync.auth.revocations().subscribe();
    let deadline = tokio::time::Instant::now() + wait.min(MAX_TIMEOUT);
    loop {
        let mut a = check_token(sync, token, app);
        a.waited_ms = t0.elapsed().as_secs_f64() * 1e3;
        if a.verdict != Verdict::Accepted || wait.is_zero() {
            return a;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return a },
            _ = tokio::time::sleep_until(deadline) => {
                let mut a = check_token(sync, token, app);
                a.waited_ms = t0.elapsed().as_secs_f64() * 1e3;
                return a;
            }
        }
    }
}

fn mint(sync: &PeerSync) -> Result<(String, String, Option<String>), String> {
    let rt = sync.live.load();
    let app = rt.config.apps.first().map(|a| a.name.clone());
    let iat_us = sync.auth.tick();
    let iat = iat_us.div_euclid(1_000_000);
    let sid = format!("selftest-{}", crate::secrets::random_b64(16));
    let claims = Claims {
        iss: rt.config.issuer.clone(),
        aud: app.clone().unwrap_or_else(|| rt.config.issuer.clone()),
        sub: CANARY_USER.into(),
        email: CANARY_USER.into(),
        groups: vec![],
        sid: sid.clone(),
        jti: crate::secrets::random_b64(12),
        iat,
        exp: iat + CANARY_LIFETIME_S,
        nbf: None,
        iat_us,
        bnd: None,
    };
    let tok = sync.auth.sign(&claims).map_err(|e| e.to_string())?;
    Ok((tok, sid, app))
}

async fn ask(
    sync: &PeerSync,
    peer: &str,
    token: &str,
    app: Option<&str>,
    wait: Duration,
) -> Result<CheckAnswer, PeerError> {
    let body = serde_json::to_vec(&CheckRequest {
        token: token.to_string(),
        app: app.map(str::to_string),
        wait_ms: wait.as_millis() as u64,
    })
    .map_err(|e| PeerError::Decode(e.to_string()))?;
    let bytes = sync
        .client
        .call_with(
            peer,
            Method::POST,
            "/v1/peer/check",
            Some(body),
            wait + PEER_TIMEOUT,
        )
        .await?;
    serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode(e.to_string()))
}

fn verdict_text(a: &CheckAnswer) -> String {
    match (&a.verdict, &a.error, a.scope) {
        (Verdict::Invalid, Some(e), _) => format!("canary invalid there: {e}"),
        (Verdict::Refused, _, Some(s)) => format!("canary refused there (revoked: {})", s.as_str()),
        (v, _, _) => format!("canary {v:?}").to_lowercase(),
    }
}

/// Runs the self-test from this node; `actor` is the admin who asked.
pub async fn run(sync: &Arc<PeerSync>, actor: &str, timeout: Duration) -> Report {
    let _one_at_a_time = sync.selftest.running.lock().await;
    let timeout = timeout.min(MAX_TIMEOUT);
    let t_start = Instant::now();
    let started_us = sync.engine.now_us();
    let peers = sync.client.peers();
    let mut report = Report {
        ok: false,
        node: sync.client.node_id().to_string(),
        started: crate::timefmt::format_rfc3339_millis(started_us),
        started_us,
        user: CANARY_USER.into(),
        sid: String::new(),
        app: None,
        revocation_id: None,
        local_accepted_before: false,
        local_refused_after: false,
        peers: peers
            .iter()
            .map(|p| PeerReport {
                peer: p.clone(),
                ok: false,
                accepted_before: false,
                refused: false,
                propagation_ms: None,
                error: None,
            })
            .collect(),
        duration_ms: 0.0,
        error: None,
    };
    let result = run_inner(sync, actor, timeout, &mut report).await;
    if let Err(e) = result {
        report.error = Some(e);
    }
    report.ok = report.error.is_none()
        && report.local_accepted_before
        && report.local_refused_after
        && report.peers.iter().all(|p| p.ok);
    report.duration_ms = t_start.elapsed().as_secs_f64() * 1e3;
    let st = &sync.selftest;
    st.runs.fetch_add(1, Ordering::Relaxed);
    if !report.ok {
        st.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(report = ?report, "self-test failed");
    } else {
        tracing::info!(
            duration_ms = report.duration_ms,
            peers = report.peers.len(),
            "self-test passed"
        );
    }
    if let Ok(mut l) = st.last.lock() {
        *l = Some(report.clone());
    }
    report
}

async fn run_inner(
    sync: &Arc<PeerSync>,
    actor: &str,
    timeout: Duration,
    report: &mut Report,
) -> Result<(), String> {
    let (tok, sid, app) = mint(sync).map_err(|e| format!("cannot mint the canary: {e}"))?;
    report.sid = sid.clone();
    report.app = app.clone();
    let local = check_token(sync, &tok, app.as_deref());
    report.local_accepted_before = local.verdict == Verdict::Accepted;
    if !report.local_accepted_before {
        return Err(format!(
            "this node does not accept its own canary: {}",
            verdict_text(&local)
        ));
    }
    // Every peer must accept the canary first; then each waits for its refusal.
    let t0 = Instant::now();
    let mut waiting = accepted_everywhere(sync, &tok, app.as_deref(), timeout, report, t0).await;
    // Give the waiting checks a moment to reach the peers, so the measured time is
    // propagation, not connection setup racing the push.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t_revoke = t0.elapsed();
    let out = sync
        .engine
        .revoke(RevokeRequest {
            scope: Scope::Session,
            target: sid,
            reason: "selftest".into(),
            actor: format!("selftest:{actor}"),
            external_id: None,
        })
        .await
        .map_err(|e| format!("cannot revoke the canary: {e}"))?;
    report.revocation_id = Some(out.id);
    let after = check_token(sync, &tok, app.as_deref());
    report.local_refused_after = after.verdict == Verdict::Refused;
    while let Some(j) = waiting.join_next().await {
        let Ok((i, r, at)) = j else { continue };
        let pr = &mut report.peers[i];
        match r {
            Ok(a) if a.verdict == Verdict::Refused => {
                pr.refused = true;
                pr.ok = true;
                pr.propagation_ms = Some(at.saturating_sub(t_revoke).as_secs_f64() * 1e3);
            }
            Ok(a) => {
                pr.error = Some(format!(
                    "still not refused after {} ms: {}",
                    timeout.as_millis(),
                    verdict_text(&a)
                ))
            }
            Err(e) => pr.error = Some(format!("while waiting for the refusal: {e}")),
        }
    }
    if !report.local_refused_after {
        return Err(format!(
            "this node still accepts the revoked canary: {}",
            verdict_text(&after)
        ));
    }
    Ok(())
}

type Waiting = tokio::task::JoinSet<(usize, Result<CheckAnswer, PeerError>, Duration)>;

/// Asks every peer whether it accepts the canary now; for those that do, starts a check
/// that holds until the peer refuses it (or `timeout`).
async fn accepted_everywhere(
    sync: &Arc<PeerSync>,
    tok: &str,
    app: Option<&str>,
    timeout: Duration,
    report: &mut Report,
    t0: Instant,
) -> Waiting {
    let peers: Vec<String> = report.peers.iter().map(|p| p.peer.clone()).collect();
    let before = futures_util::future::join_all(
        peers.iter().map(|p| ask(sync, p, tok, app, Duration::ZERO)),
    )
    .await;
    let mut waiting = Waiting::new();
    for (i, r) in before.into_iter().enumerate() {
        let pr = &mut report.peers[i];
        match r {
            Ok(a) if a.verdict == Verdict::Accepted => {
                pr.accepted_before = true;
                let (s, p, tok) = (sync.clone(), pr.peer.clone(), tok.to_string());
                let app = app.map(str::to_string);
                waiting.spawn(async move {
                    let r = ask(&s, &p, &tok, app.as_deref(), timeout).await;
                    (i, r, t0.elapsed())
                });
            }
            Ok(a) => pr.error = Some(format!("before the revocation: {}", verdict_text(&a))),
            Err(e) => pr.error = Some(format!("unreachable: {e}")),
        }
    }
    waiting
}

pub fn last(sync: &PeerSync) -> Option<Report> {
    sync.selftest.last.lock().ok().and_then(|l| l.clone())
}

/// The self-test's lines on the metrics page.
pub fn write_metrics(sync: &PeerSync, w: &mut Writer) {
    let st = &sync.selftest;
    w.counter(
        "portcullis_selftest_runs_total",
        "Self-tests run from this node.",
        st.runs.load(Ordering::Relaxed),
    );
    w.counter(
        "portcullis_selftest_failures_total",
        "Self-tests that failed.",
        st.failures.load(Ordering::Relaxed),
    );
    let Some(r) = last(sync) else { return };
    w.gauge(
        "portcullis_selftest_last_success",
        "Whether the last self-test passed (1) or failed (0).",
        u8::from(r.ok),
    );
    w.gauge(
        "portcullis_selftest_last_run_timestamp_seconds",
        "When the last self-test started (Unix time).",
        r.started_us as f64 / 1e6,
    );
    w.gauge(
        "portcullis_selftest_duration_seconds",
        "How long the last self-test took.",
        r.duration_ms / 1e3,
    );
    let labels: Vec<[(&str, &str); 1]> = r
        .peers
        .iter()
        .map(|p| [("peer", p.peer.as_str())])
        .collect();
    w.family(
        "portcullis_selftest_propagation_seconds",
        "In the last self-test, time from the revocation here to each peer refusing the canary.",
        Kind::Gauge,
        labels
            .iter()
            .zip(&r.peers)
            .filter_map(|(l, p)| p.propagation_ms.map(|ms| (&l[..], ms / 1e3))),
    );
    w.family(
        "portcullis_selftest_peer_ok",
        "Whether each peer passed the last self-test.",
        Kind::Gauge,
        labels
            .iter()
            .zip(&r.peers)
            .map(|(l, p)| (&l[..], u8::from(p.ok))),
    );
}
