//! Signed SIEM/SOAR webhooks on the real control port: `POST /v1/hooks/splunk` with
//! `Portcullis-Signature: t=<unix>,v1=<HMAC-SHA256 of "<t>.<body>">` computed by an
//! independent HMAC implementation. A good one revokes (actor `hook:splunk`, the event
//! id as external id, in the listing and the audit log); a replay or a re-signed retry
//! of the same event id is acknowledged and applies nothing; wrong, stale, future,
//! missing and malformed signatures, tampered bodies and bad revocations are refused
//! and change nothing.

use crate::common::*;
use crate::support::signals::*;
use portcullis::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "whsec_5b0c1d7e9f3a2468ace0bdf13579";

async fn start() -> (Gw, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    write_secret(&tmp.path().join("hook.secret"), &format!("{SECRET}\n"));
    let extra = r#"
[[signals.webhook]]
name = "splunk"
secret_file = "hook.secret"
"#;
    let g = Gw::start_in(
        tmp.path(),
        &config_text(extra),
        portcullis::clock::ManualClock::starting_now(),
    )
    .await;
    (g, tmp)
}

async fn deliver(g: &Gw, name: &str, body: &str, signature: Option<&str>) -> (StatusCode, Value) {
    let mut rb = reqwest::Client::new()
        .post(g.control_url(&format!("/v1/hooks/{name}")))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        rb = rb.header("Portcullis-Signature", s);
    }
    let r = rb.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn hook_revocations(g: &Gw) -> Vec<Value> {
    let (_, v) = g.admin(Method::GET, "/v1/revocations", None).await;
    v["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == "hook:splunk")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_revoke_once_and_bad_ones_change_nothing() {
    let (g, _tmp) = start().await;
    let (bob, _) = client_with_jar(g.h().https_addr);
    assert_eq!(
        g.login(&bob, "echo.localhost", "/", BOB, BOB_PW)
            .await
            .status(),
        StatusCode::OK
    );
    let t = g.clock.now_us() / 1_000_000;
    let body = json!({"scope": "user", "target": BOB, "reason": "siem:impossible-travel", "event_id": "alert-42"})
        .to_string();
    let sign = |t: i64, b: &str| hook_signature(SECRET.as_bytes(), t, b.as_bytes());

    // Refused, and nothing changes: wrong secret, stale, future, missing, malformed,
    // a body that is not the one signed.
    let other = hook_signature(b"another-secret-0123456789", t, body.as_bytes());
    let tampered = body.replace(BOB, DEMO);
    let cases: Vec<(&str, &str, Option<String>, StatusCode, &str)> = vec![
        (
            "wrong secret",
            &body,
            Some(other),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "stale",
            &body,
            Some(sign(t - 301, &body)),
            StatusCode::UNAUTHORIZED,
            "stale",
        ),
        (
            "future",
            &body,
            Some(sign(t + 301, &body)),
            StatusCode::UNAUTHORIZED,
            "future",
        ),
        (
            "missing",
            &body,
            None,
            StatusCode::UNAUTHORIZED,
            "missing_signature",
        ),
        (
            "malformed",
            &body,
            Some("t=x,v1=zz".into()),
            StatusCode::UNAUTHORIZED,
            "malformed_signature",
        ),
        (
            "tampered",
            &tampered,
            Some(sign(t, &body)),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
    ];
    for (what, b, sig, status, code) in cases {
        let (st, v) = deliver(&g, "splunk", b, sig.as_deref()).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (status, Some(code)),
            "{what}: {v}"
        );
    }
    // Correctly signed but not a valid revocation: 400, nothing applied, and the event
    // id is not used up.
    for bad in [
        json!({"scope": "planet", "target": BOB, "event_id": "alert-43"}),
        json!({"scope": "member", "target": "no-email:staff", "event_id": "alert-43"}),
        json!({"scope": "user", "target": BOB, "event_id": "has space"}),
    ] {
        let b = bad.to_string();
        let (st, v) = deliver(&g, "splunk", &b, Some(&sign(t, &b))).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_body")),
            "{b}: {v}"
        );
    }
    let (st, _) = deliver(&g, "nobody", &body, Some(&sign(t, &body))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(hook_revocations(&g).await.is_empty());
    assert_eq!(
        xhr(&bob, &g.url("echo.localhost", "/")).await.status(),
        StatusCode::OK
    );

    // A good one: revoked, named after the hook, with the event id.
    let (st, v) = deliver(&g, "splunk", &body, Some(&sign(t, &body))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revocation"]["external_id"], "alert-42");
    assert_eq!(
        xhr(&bob, &g.url("echo.localhost", "/")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let rev = hook_revocations(&g).await;
    assert_eq!(rev.len(), 1);
    assert_eq!(rev[0]["target"], BOB);
    assert_eq!(rev[0]["reason"], "siem:impossible-travel");
    assert_eq!(rev[0]["external_id"], "alert-42");
    let audit = std::fs::read_to_string(g.dir.join("state/audit.log")).unwrap();
    let line: Value = serde_json::from_str(
        audit
            .lines()
            .find(|l| l.contains("hook:splunk"))
            .expect("audit line"),
    )
    .unwrap();
    assert_eq!(
        (line["external_id"].as_str(), line["reason"].as_str()),
        (Some("alert-42"), Some("siem:impossible-travel"))
    );

    // Replayed as is, and retried with a fresh signature: acknowledged, not applied.
    g.advance(std::time::Duration::from_secs(30));
    for sig in [sign(t, &body), sign(t + 30, &body)] {
        let (st, v) = deliver(&g, "splunk", &body, Some(&sig)).await;
        assert_eq!(
            (st, v["status"].as_str()),
            (StatusCode::OK, Some("duplicate")),
            "{v}"
        );
    }
    assert_eq!(hook_revocations(&g).await.len(), 1);
    // A fixed body with the event id that was refused before is applied.
    let fixed =
        json!({"scope": "group", "target": "contractors", "event_id": "alert-43"}).to_string();
    let (st, v) = deliver(&g, "splunk", &fixed, Some(&sign(t + 30, &fixed))).await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("revoked")),
        "{v}"
    );

    let m = reqwest::get(g.control_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let l = "trigger=\"hook:splunk\"";
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_refused_total{{{l},reason=\"stale\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_refused_total{{{l},reason=\"bad_signature\"}}")
        ),
        2
    );
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_refused_total{{{l},reason=\"bad_body\"}}")
        ),
        3
    );
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_ignored_total{{{l},reason=\"replayed\"}}")
        ),
        2
    );
    assert_eq!(
        metric(&m, &format!("portcullis_signals_applied_total{{{l}}}")),
        2
    );
    assert_eq!(
        metric(&m, &format!("portcullis_signals_received_total{{{l}}}")),
        13
    );
}
