//! A test transmitter: ES256 and RS256 keys generated here, its JWKS served by a real
//! HTTP server on 127.0.0.1, SETs signed with jsonwebtoken; then the receiver is fed
//! good, forged, `alg: none`, stale, future, misaddressed and malformed SETs.

use super::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISS: &str = "https://idp.example.com/123456789/";
const AUD: &str = "https://auth.example.com/ssf/okta";
const NOW_S: i64 = 1_760_000_000;
const NOW: Micros = NOW_S * 1_000_000;

struct TestKey {
    enc: EncodingKey,
    jwk: Jwk,
    alg: Algorithm,
    kid: String,
}

fn make_key(alg: Algorithm, kid: &str) -> TestKey {
    let kp = match alg {
        Algorithm::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        _ => rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap(),
    };
    let pem = kp.serialize_pem();
    let enc = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    TestKey {
        enc,
        jwk,
        alg,
        kid: kid.into(),
    }
}

/// Keys are generated once for all tests (RSA generation takes a moment).
fn keys() -> &'static [TestKey; 4] {
    static KEYS: OnceLock<[TestKey; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            make_key(Algorithm::ES256, "es-1"),
            make_key(Algorithm::RS256, "rs-1"),
            // Not published: an attacker's key, and a rotated-in key.
            make_key(Algorithm::ES256, "es-1"),
            make_key(Algorithm::ES256, "es-2"),
        ]
    })
}

fn jwks(ks: &[&TestKey]) -> String {
    json!({"keys": ks.iter().map(|k| &k.jwk).collect::<Vec<_>>()}).to_string()
}

/// A real HTTP server answering every request with the current JWKS document.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

async fn serve(doc: String) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let doc = Arc::new(Mutex::new(doc));
    let hits = Arc::new(AtomicUsize::new(0));
    let (d, h) = (doc.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (d, h) = (d.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = d.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    JwksServer { url, doc, hits }
}

fn claims(event: &str) -> Value {
    json!({
        "iss": ISS,
        "jti": "24c63fb56e5a2d77a6b512616ca9fa24",
        "iat": NOW_S,
        "aud": AUD,
        "txn": "8675309",
        "sub_id": {"format": "email", "email": "Ada@Example.com"},
        "events": {event: {"event_timestamp": NOW_S - 5}}
    })
}

fn session_revoked() -> String {
    format!("{CAEP}session-revoked")
}

fn sign_with(k: &TestKey, typ: &str, c: &Value) -> String {
    let mut h = Header::new(k.alg);
    h.typ = Some(typ.into());
    h.kid = Some(k.kid.clone());
    jsonwebtoken::encode(&h, c, &k.enc).unwrap()
}

fn sign(k: &TestKey, c: &Value) -> String {
    sign_with(k, "secevent+jwt", c)
}

fn push(body: &str) -> SsfRequest<'_> {
    SsfRequest {
        authorization: None,
        content_type: Some("application/secevent+jwt"),
        body: body.as_bytes(),
    }
}

async fn receiver(policy: ReceiverPolicy) -> (Receiver, JwksServer) {
    let [es, rs, ..] = keys();
    let server = serve(jwks(&[es, rs])).await;
    let cfg = SsfConfig::with_jwks_url("okta", ISS, AUD, &server.url);
    (Receiver::new(cfg, policy).unwrap(), server)
}

#[tokio::test]
async fn good_sets_verify_with_es256_and_rs256_and_keys_are_cached() {
    let (rx, server) = receiver(ReceiverPolicy::default()).await;
    let [es, rs, ..] = keys();
    for k in [es, rs] {
        let set = sign(k, &claims(&session_revoked()));
        let v = rx.receive(&push(&set), NOW).await.unwrap();
        assert_eq!(v.jti, "24c63fb56e5a2d77a6b512616ca9fa24");
        assert_eq!(
            (v.iss.as_str(), v.iat, v.txn.as_deref()),
            (ISS, NOW_S, Some("8675309"))
        );
        assert_eq!(
            v.events,
            vec![SsfEvent {
                event_type: session_revoked(),
                action: SsfAction::EndAllSessions {
                    user: SsfUser::Email {
                        email: "ada@example.com".into()
                    }
                },
                reason: None,
            }]
        );
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "one fetch for both SETs"
    );
    // Replays verify again: the caller's persistent jti check is what drops them.
    let set = sign(es, &claims(&session_revoked()));
    assert_eq!(
        rx.receive(&push(&set), NOW).await.unwrap().jti,
        "24c63fb56e5a2d77a6b512616ca9fa24"
    );
}

#[tokio::test]
async fn refusals_carry_rfc_8935_codes() {
    let (rx, _server) = receiver(ReceiverPolicy::default()).await;
    let [es, _, forger, _] = keys();
    let good = claims(&session_revoked());
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let none_alg = {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"secevent+jwt"}"#);
        let p = URL_SAFE_NO_PAD.encode(good.to_string());
        format!("{h}.{p}.")
    };
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("secevent+jwt".into());
        jsonwebtoken::encode(
            &h,
            &good,
            &EncodingKey::from_secret(b"public-key-as-secret"),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String, SetErrorCode)> = vec![
        (
            "forged (other key, same kid)",
            sign(forger, &good),
            SetErrorCode::AuthenticationFailed,
        ),
        (
            "tampered payload",
            tamper(&sign(es, &good)),
            SetErrorCode::AuthenticationFailed,
        ),
        ("alg none", none_alg, SetErrorCode::InvalidRequest),
        ("alg HS256", hs256, SetErrorCode::InvalidRequest),
        (
            "typ JWT",
            sign_with(es, "JWT", &good),
            SetErrorCode::InvalidRequest,
        ),
        (
            "wrong issuer",
            sign(es, &with("iss", json!("https://evil.example.com/"))),
            SetErrorCode::InvalidIssuer,
        ),
        (
            "wrong audience",
            sign(es, &with("aud", json!("https://other.example.com"))),
            SetErrorCode::InvalidAudience,
        ),
        (
            "no audience",
            sign(es, &without("aud")),
            SetErrorCode::InvalidAudience,
        ),
        (
            "stale iat",
            sign(es, &with("iat", json!(NOW_S - 25 * 3600))),
            SetErrorCode::InvalidRequest,
        ),
        (
            "future iat",
            sign(es, &with("iat", json!(NOW_S + 600))),
            SetErrorCode::InvalidRequest,
        ),
        (
            "no iat",
            sign(es, &without("iat")),
            SetErrorCode::InvalidRequest,
        ),
        (
            "no jti",
            sign(es, &without("jti")),
            SetErrorCode::InvalidRequest,
        ),
        (
            "no events",
            sign(es, &with("events", json!({}))),
            SetErrorCode::InvalidRequest,
        ),
        (
            "no sub_id",
            sign(es, &without("sub_id")),
            SetErrorCode::InvalidRequest,
        ),
        (
            "bad sub_id",
            sign(es, &with("sub_id", json!("ada"))),
            SetErrorCode::InvalidRequest,
        ),
        ("not a JWT", "hello".into(), SetErrorCode::InvalidRequest),
        (
            "JWE-shaped",
            "a.b.c.d.e".into(),
            SetErrorCode::InvalidRequest,
        ),
    ];
    for (name, set, code) in cases {
        let e = rx.receive(&push(&set), NOW).await.unwrap_err();
        assert_eq!((e.code, e.status), (code, 400), "{name}: {e}");
        assert_eq!(e.body()["err"], code.as_str());
        assert!(!e.description.is_empty());
    }
    // Content type.
    let set = sign(es, &good);
    let req = SsfRequest {
        content_type: Some("application/json"),
        ..push(&set)
    };
    assert_eq!(
        rx.receive(&req, NOW).await.unwrap_err().code,
        SetErrorCode::InvalidRequest
    );
    let req = SsfRequest {
        content_type: Some("Application/SecEvent+JWT; charset=utf-8"),
        ..push(&set)
    };
    assert!(rx.receive(&req, NOW).await.is_ok());
    // Inside the windows: 24 h old, 5 min ahead, aud as an array.
    for c in [
        with("iat", json!(NOW_S - 24 * 3600)),
        with("iat", json!(NOW_S + 300)),
        with("aud", json!(["x", AUD])),
    ] {
        assert!(rx.receive(&push(&sign(es, &c)), NOW).await.is_ok(), "{c}");
    }
}

fn tamper(set: &str) -> String {
    let parts: Vec<&str> = set.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub_id"]["email"] = json!("victim@example.com");
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

#[tokio::test]
async fn unknown_kids_refetch_at_a_bounded_rate_and_rotation_works() {
    let (rx, server) = receiver(ReceiverPolicy::default()).await;
    let [es, rs, _, rotated] = keys();
    let c = claims(&session_revoked());
    rx.receive(&push(&sign(es, &c)), NOW).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    // es-2 is not published yet: invalid_key; the refetch that finds out is rate-limited.
    for _ in 0..5 {
        let e = rx
            .receive(&push(&sign(rotated, &c)), NOW + 1_000_000)
            .await
            .unwrap_err();
        assert_eq!(e.code, SetErrorCode::InvalidKey);
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "within a minute of the last fetch: none"
    );
    // The transmitter rotates; a minute later the unknown kid triggers one refetch.
    *server.doc.lock().unwrap() = jwks(&[rotated, rs]);
    let later = NOW + 61_000_000;
    rx.receive(&push(&sign(rotated, &c)), later).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    let e = rx.receive(&push(&sign(es, &c)), later).await.unwrap_err();
    assert_eq!(e.code, SetErrorCode::InvalidKey, "the retired key is gone");
    // An hour later the cache is refreshed even for a known kid.
    rx.receive(&push(&sign(rs, &c)), later + 3_601_000_000)
        .await
        .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_unreachable_jwks_is_503_so_the_transmitter_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let rx = Receiver::new(
        SsfConfig::with_jwks_url("x", ISS, AUD, &url),
        ReceiverPolicy::default(),
    )
    .unwrap();
    let e = rx
        .receive(&push(&sign(&keys()[0], &claims(&session_revoked()))), NOW)
        .await
        .unwrap_err();
    assert_eq!((e.code, e.status), (SetErrorCode::InvalidKey, 503));
    assert!(rx.refresh_keys(NOW + 120_000_000).await.is_err());
}

#[tokio::test]
async fn the_authorization_header_is_checked_first() {
    let [es, ..] = keys();
    let server = serve(jwks(&[es])).await;
    let cfg = SsfConfig::with_jwks_url("okta", ISS, AUD, &server.url)
        .require_authorization("s3cret-token");
    let rx = Receiver::new(cfg, ReceiverPolicy::default()).unwrap();
    let set = sign(es, &claims(&session_revoked()));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret-token"),
        Some("Bearer s3cret-token-and-more"),
    ] {
        let req = SsfRequest {
            authorization: auth,
            ..push(&set)
        };
        let e = rx.receive(&req, NOW).await.unwrap_err();
        assert_eq!(
            (e.code, e.status),
            (SetErrorCode::AuthenticationFailed, 401),
            "{auth:?}"
        );
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "refused before any key work"
    );
    let req = SsfRequest {
        authorization: Some("Bearer s3cret-token"),
        ..push(&set)
    };
    assert!(rx.receive(&req, NOW).await.is_ok());
}

#[tokio::test]
async fn events_unknown_verification_and_old_draft_subjects() {
    let (rx, _server) = receiver(ReceiverPolicy::default()).await;
    let es = &keys()[0];
    let v = rx
        .receive(
            &push(&sign(es, &claims("https://example.com/event/unknown"))),
            NOW,
        )
        .await
        .unwrap();
    assert!(matches!(v.events[0].action, SsfAction::Ignore { .. }));

    let mut c = claims(VERIFICATION);
    c["sub_id"] = json!({"format": "opaque", "id": "f67e39a0a4d34d56b3aa1bc4cff0069f"});
    c["events"] = json!({VERIFICATION: {"state": "VGhpcyBpcyBhbiBleGFtcGxlIHN0YXRlIHZhbHVlLgo="}});
    let v = rx.receive(&push(&sign(es, &c)), NOW).await.unwrap();
    assert_eq!(
        v.events[0].action,
        SsfAction::Verify {
            state: Some("VGhpcyBpcyBhbiBleGFtcGxlIHN0YXRlIHZhbHVlLgo=".into())
        }
    );

    let mut c = claims(&format!("{RISC}account-disabled"));
    c.as_object_mut().unwrap().remove("sub_id");
    c["events"] = json!({format!("{RISC}account-disabled"): {"subject": {"format": "iss_sub", "iss": ISS, "sub": "00u1"}, "reason": "hijacking"}});
    let v = rx.receive(&push(&sign(es, &c)), NOW).await.unwrap();
    assert_eq!(
        v.events[0].action,
        SsfAction::Disable {
            user: SsfUser::IssSub {
                iss: ISS.into(),
                sub: "00u1".into()
            }
        }
    );
}

#[tokio::test]
async fn config_validation_and_jwks_files() {
    let dir = tempfile::tempdir().unwrap();
    let [es, rs, ..] = keys();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[es, rs])).unwrap();
    std::fs::write(
        dir.path().join("empty.json"),
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
    )
    .unwrap();
    crate::secrets::write_private(&dir.path().join("auth"), "tok-123\n");
    let f = |name: &str, url: Option<&str>, file: Option<&str>| SsfFile {
        name: name.into(),
        issuer: ISS.into(),
        jwks_url: url.map(Into::into),
        jwks_file: file.map(Into::into),
        audience: AUD.into(),
        authorization_token_file: None,
    };
    let mut with_auth = f("file", None, Some("jwks.json"));
    with_auth.authorization_token_file = Some("auth".into());
    let cfgs = validate(
        &[
            with_auth,
            f("url", Some("https://idp.example.com/jwks"), None),
        ],
        dir.path(),
    )
    .unwrap();
    assert!(
        !format!("{:?}", cfgs[0]).contains("tok-123"),
        "Debug hides the token"
    );
    let rx = Receiver::new(cfgs[0].clone(), ReceiverPolicy::default()).unwrap();
    let set = sign(rs, &claims(&session_revoked()));
    let req = SsfRequest {
        authorization: Some("Bearer tok-123"),
        ..push(&set)
    };
    assert!(rx.receive(&req, NOW).await.is_ok());

    let bad: Vec<(Vec<SsfFile>, &str)> = vec![
        (
            vec![f("a", Some("https://x/j"), Some("jwks.json"))],
            "signals.ssf[0]",
        ),
        (vec![f("a", None, None)], "signals.ssf[0]"),
        (
            vec![f("a", Some("http://idp.example.com/jwks"), None)],
            "signals.ssf[0].jwks_url",
        ),
        (
            vec![f("a", Some("not a url"), None)],
            "signals.ssf[0].jwks_url",
        ),
        (
            vec![f("a", None, Some("missing.json"))],
            "signals.ssf[0].jwks_file",
        ),
        (
            vec![f("a", None, Some("empty.json"))],
            "signals.ssf[0].jwks_file",
        ),
        (
            vec![f("Bad/Name", None, Some("jwks.json"))],
            "signals.ssf[0].name",
        ),
        (
            vec![
                f("a", None, Some("jwks.json")),
                f("a", None, Some("jwks.json")),
            ],
            "signals.ssf[1].name",
        ),
    ];
    for (files, field) in bad {
        assert_eq!(validate(&files, dir.path()).unwrap_err().field, field);
    }
    let mut no_auth_file = f("a", None, Some("jwks.json"));
    no_auth_file.authorization_token_file = Some("nope".into());
    assert_eq!(
        validate(&[no_auth_file], dir.path()).unwrap_err().field,
        "signals.ssf[0].authorization_token_file"
    );
    assert!(
        validate(&[f("l", Some("http://127.0.0.1:9/jwks"), None)], dir.path()).is_ok(),
        "loopback http is fine"
    );
    let t = "name='a'\nissuer='i'\naudience='a'\njwks_url='https://x'\nextra=1\n";
    assert!(
        toml::from_str::<SsfFile>(t).is_err(),
        "unknown fields are refused"
    );
}
