//! Shared Signals push delivery over the real listener: a test transmitter with its own
//! keys, its JWKS served by a real HTTP server, pushes Security Event Tokens to
//! `https://auth.localhost/ssf/okta/events`. Good SETs are applied once (a replay is
//! acknowledged and changes nothing); forged, expired, misaddressed, unauthenticated
//! and malformed ones get RFC 8935 errors and change nothing; unknown events are
//! acknowledged and not applied. Subjects by `iss_sub` and IdP session, with a real
//! OpenID Provider and two nodes, are in `oidc_login.rs`.

use crate::common::*;
use crate::support::signals::*;
use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const ISS: &str = "https://idp.test/";
const AUD: &str = "https://auth.localhost/ssf/okta";
const PUSH_TOKEN: &str = "transmitter-push-token-9c1e";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

struct Setup {
    g: Gw,
    _tmp: tempfile::TempDir,
    _jwks: JwksServer,
    es: TxKey,
    rs: TxKey,
    /// Not published: what a forger holds (same kid as the real key).
    forger: TxKey,
}

async fn setup() -> Setup {
    let (es, rs, forger) = (
        tx_key(Algorithm::ES256, "es-1"),
        tx_key(Algorithm::RS256, "rs-1"),
        tx_key(Algorithm::ES256, "es-1"),
    );
    let jwks = serve_jwks(&[&es, &rs]).await;
    let tmp = tempfile::tempdir().unwrap();
    write_secret(&tmp.path().join("ssf.token"), &format!("{PUSH_TOKEN}\n"));
    let extra = format!(
        r#"
[[signals.ssf]]
name = "okta"
issuer = "{ISS}"
jwks_url = "{jwks}"
audience = "{AUD}"
authorization_token_file = "ssf.token"
"#,
        jwks = jwks.url
    );
    let g = Gw::start_in(
        tmp.path(),
        &config_text(&extra),
        portcullis::clock::ManualClock::starting_now(),
    )
    .await;
    wait_ready(&g).await;
    Setup {
        g,
        _tmp: tmp,
        _jwks: jwks,
        es,
        rs,
        forger,
    }
}

async fn wait_ready(g: &Gw) {
    for _ in 0..500 {
        if reqwest::get(g.control_url("/readyz"))
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gateway not ready");
}

fn now_s(g: &Gw) -> i64 {
    use portcullis::clock::Clock;
    g.clock.now_us() / 1_000_000
}

/// SET claims: one event, a subject, issued now.
fn claims(g: &Gw, jti: &str, event: &str, sub_id: Value) -> Value {
    json!({
        "iss": ISS, "aud": AUD, "iat": now_s(g), "jti": jti, "sub_id": sub_id,
        "events": {event: {"event_timestamp": now_s(g), "reason_admin": {"en": "Landspeed Policy Violation"}}},
    })
}

fn email(e: &str) -> Value {
    json!({"format": "email", "email": e})
}

/// Pushes `set` with the transmitter's Authorization (or `auth`) and content type.
async fn push_with(g: &Gw, set: &str, auth: Option<&str>, ctype: &str) -> (StatusCode, String) {
    let c = client_for(g.h().https_addr, false);
    let mut rb = c
        .post(g.url("auth.localhost", "/ssf/okta/events"))
        .header("content-type", ctype)
        .header("accept", "application/json")
        .body(set.to_string());
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    let r = rb.send().await.unwrap();
    let s = r.status();
    (s, r.text().await.unwrap())
}

async fn push(g: &Gw, set: &str) -> (StatusCode, String) {
    push_with(
        g,
        set,
        Some(&format!("Bearer {PUSH_TOKEN}")),
        "application/secevent+jwt",
    )
    .await
}

async fn by_trigger(g: &Gw) -> Vec<Value> {
    let (_, v) = g.admin(Method::GET, "/v1/revocations", None).await;
    v["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == "ssf:okta")
        .cloned()
        .collect()
}

async fn app_status(g: &Gw, c: &reqwest::Client) -> StatusCode {
    xhr(c, &g.url("echo.localhost", "/.portcullis/identity"))
        .await
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_are_verified_applied_once_and_refused_with_rfc8935_errors() {
    let s = setup().await;
    let g = &s.g;
    let (bob, _) = client_with_jar(g.h().https_addr);
    assert_eq!(
        g.login(&bob, "echo.localhost", "/", BOB, BOB_PW)
            .await
            .status(),
        StatusCode::OK
    );

    // RISC account-disabled: 202, empty body; the token is refused at once.
    let disabled = s.es.sign(&claims(
        g,
        "jti-disable-1",
        &format!("{RISC}account-disabled"),
        email(BOB),
    ));
    let (st, body) = push(g, &disabled).await;
    assert_eq!((st, body.as_str()), (StatusCode::ACCEPTED, ""));
    assert_eq!(app_status(g, &bob).await, StatusCode::UNAUTHORIZED);
    let rev = by_trigger(g).await;
    assert_eq!(rev.len(), 1, "{rev:?}");
    assert_eq!(
        (rev[0]["scope"].as_str(), rev[0]["target"].as_str()),
        (Some("user"), Some(BOB))
    );
    assert_eq!(rev[0]["external_id"], "jti-disable-1");
    assert!(
        rev[0]["reason"]
            .as_str()
            .unwrap()
            .contains("account-disabled"),
        "{}",
        rev[0]
    );

    // Retransmitted: acknowledged, not applied again.
    assert_eq!(push(g, &disabled).await.0, StatusCode::ACCEPTED);
    assert_eq!(by_trigger(g).await.len(), 1);

    // Refusals, each with its RFC 8935 code, none changing anything.
    let mut stale = claims(
        g,
        "jti-old",
        &format!("{RISC}account-disabled"),
        email(DEMO),
    );
    stale["iat"] = json!(now_s(g) - 2 * 24 * 3600);
    let mut misaddressed = claims(
        g,
        "jti-aud",
        &format!("{RISC}account-disabled"),
        email(DEMO),
    );
    misaddressed["aud"] = json!("https://someone-else.example/ssf");
    let mut other_iss = claims(
        g,
        "jti-iss",
        &format!("{RISC}account-disabled"),
        email(DEMO),
    );
    other_iss["iss"] = json!("https://evil.test/");
    let forged = s.forger.sign(&claims(
        g,
        "jti-forged",
        &format!("{RISC}account-disabled"),
        email(DEMO),
    ));
    let auth = format!("Bearer {PUSH_TOKEN}");
    /// what, SET, Authorization, content type, status, RFC 8935 code
    type Case<'a> = (
        &'a str,
        String,
        Option<&'a str>,
        &'a str,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "forged",
            forged.clone(),
            Some(&auth),
            "application/secevent+jwt",
            StatusCode::BAD_REQUEST,
            "authentication_failed",
        ),
        (
            "expired",
            s.es.sign(&stale),
            Some(&auth),
            "application/secevent+jwt",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong audience",
            s.es.sign(&misaddressed),
            Some(&auth),
            "application/secevent+jwt",
            StatusCode::BAD_REQUEST,
            "invalid_audience",
        ),
        (
            "wrong issuer",
            s.es.sign(&other_iss),
            Some(&auth),
            "application/secevent+jwt",
            StatusCode::BAD_REQUEST,
            "invalid_issuer",
        ),
        (
            "no Authorization",
            forged.clone(),
            None,
            "application/secevent+jwt",
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
        ),
        (
            "wrong Authorization",
            forged.clone(),
            Some("Bearer nope"),
            "application/secevent+jwt",
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
        ),
        (
            "JSON, not a SET",
            r#"{"events":{}}"#.into(),
            Some(&auth),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "garbage",
            "a.b".into(),
            Some(&auth),
            "application/secevent+jwt",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (what, set, a, ctype, status, err) in cases {
        let (st, body) = push_with(g, &set, a, ctype).await;
        assert_eq!(st, status, "{what}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(v["err"], err, "{what}: {body}");
        assert!(
            v["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
    // An event this receiver does not act on, and the stream verification event.
    let unknown = s.es.sign(&claims(
        g,
        "jti-unknown",
        &format!("{CAEP}device-compliance-change"),
        email(DEMO),
    ));
    assert_eq!(push(g, &unknown).await.0, StatusCode::ACCEPTED);
    let verify = s.es.sign(&json!({"iss": ISS, "aud": AUD, "iat": now_s(g), "jti": "jti-verify",
        "sub_id": {"format": "opaque", "id": "stream-1"},
        "events": {"https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "VGhpcyBpcyBhIHRlc3Q"}}}));
    assert_eq!(push(g, &verify).await.0, StatusCode::ACCEPTED);
    let (demo, _) = client_with_jar(g.h().https_addr);
    assert_eq!(
        g.login(&demo, "echo.localhost", "/", DEMO, DEMO_PW)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app_status(g, &demo).await,
        StatusCode::OK,
        "nothing revoked demo"
    );
    assert_eq!(by_trigger(g).await.len(), 1);

    // Disabled: sign-in stays refused after the relogin lockout, until account-enabled
    // (this one signed with the transmitter's RSA key).
    g.advance(Duration::from_secs(61));
    let (c, _) = client_with_jar(g.h().https_addr);
    let r = g.login(&c, "echo.localhost", "/", BOB, BOB_PW).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("disabled by your organisation")
    );
    let enabled = s.rs.sign(&claims(
        g,
        "jti-enable-1",
        &format!("{RISC}account-enabled"),
        email(BOB),
    ));
    assert_eq!(push(g, &enabled).await.0, StatusCode::ACCEPTED);
    let (bob, _) = client_with_jar(g.h().https_addr);
    assert_eq!(
        g.login(&bob, "echo.localhost", "/", BOB, BOB_PW)
            .await
            .status(),
        StatusCode::OK
    );

    // token-claims-change: the app tokens go, the global session stays: re-issued
    // silently on the next navigation.
    g.advance(Duration::from_millis(5));
    let claims_change = s.es.sign(&claims(
        g,
        "jti-claims",
        &format!("{CAEP}token-claims-change"),
        email(BOB),
    ));
    assert_eq!(push(g, &claims_change).await.0, StatusCode::ACCEPTED);
    assert_eq!(app_status(g, &bob).await, StatusCode::UNAUTHORIZED);
    let (r, url) = navigate(&bob, &g.url("echo.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    assert!(
        !r.text().await.unwrap().contains("name=\"password\""),
        "no sign-in form"
    );
    assert_eq!(app_status(g, &bob).await, StatusCode::OK);

    // credential-change: every session and token of the user.
    let cred = s.es.sign(&claims(
        g,
        "jti-cred",
        &format!("{CAEP}credential-change"),
        email(DEMO),
    ));
    assert_eq!(push(g, &cred).await.0, StatusCode::ACCEPTED);
    assert_eq!(app_status(g, &demo).await, StatusCode::UNAUTHORIZED);
    let (r, _) = navigate(&demo, &g.url("echo.localhost", "/")).await;
    assert!(
        r.text().await.unwrap().contains("name=\"password\""),
        "the global session went too"
    );

    let m = reqwest::get(g.control_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let t = "trigger=\"ssf:okta\"";
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_ignored_total{{{t},reason=\"replayed\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_ignored_total{{{t},reason=\"unknown_event\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_ignored_total{{{t},reason=\"verification\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_refused_total{{{t},reason=\"authentication_failed\"}}")
        ),
        3
    );
    assert_eq!(
        metric(
            &m,
            &format!("portcullis_signals_refused_total{{{t},reason=\"invalid_audience\"}}")
        ),
        1
    );
    assert_eq!(
        metric(&m, &format!("portcullis_signals_applied_total{{{t}}}")),
        4
    );
    assert_eq!(
        metric(&m, &format!("portcullis_signals_received_total{{{t}}}")),
        15
    );
}
