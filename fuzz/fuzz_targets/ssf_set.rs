//! Security Event Tokens pushed by a Shared Signals transmitter: `ssf::Receiver::receive`
//! for a stream whose keys come from a JWKS file (the fixed IdP keys), at a fixed instant.
//!
//! Input: the pushed body; or `{`-JSON claims signed with the ES256 or RS256 key (by the
//! input's length, `typ` `secevent+jwt`) and then pushed. Checked: an accepted SET's
//! payload (decoded here independently) has our issuer and audience, an `iat` in the
//! window, the `jti` reported, and one reported event per member of `events`.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fuzz_common::{NOW_S, NOW_US, SSF_AUD, SSF_ISS, jwks_json, runtime, scratch, sign_jws};
use libfuzzer_sys::fuzz_target;
use portcullis::signals::ssf::{
    CONTENT_TYPE, Receiver, ReceiverPolicy, SsfFile, SsfRequest, VerifiedSet, validate,
};
use serde_json::Value;
use std::sync::LazyLock;

static RECEIVER: LazyLock<(tokio::runtime::Runtime, Receiver)> = LazyLock::new(|| {
    let dir = scratch("ssf");
    std::fs::write(dir.join("jwks.json"), jwks_json()).expect("write the JWKS");
    let file = SsfFile {
        name: "fuzz".into(),
        issuer: SSF_ISS.into(),
        jwks_url: None,
        jwks_file: Some("jwks.json".into()),
        audience: SSF_AUD.into(),
        authorization_token_file: None,
    };
    let cfg = validate(&[file], &dir).expect("a valid stream").remove(0);
    let rx = Receiver::new(cfg, ReceiverPolicy::default()).expect("a receiver");
    (runtime(), rx)
});

fn check_accepted(body: &str, got: &VerifiedSet) {
    let payload = body.trim().split('.').nth(1).expect("three segments");
    let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64"))
        .expect("JSON claims");
    assert_eq!(c["iss"], SSF_ISS);
    let aud_ok = match &c["aud"] {
        Value::String(a) => a == SSF_AUD,
        Value::Array(a) => a.iter().any(|x| x == SSF_AUD),
        _ => false,
    };
    assert!(aud_ok);
    assert_eq!(c["jti"].as_str(), Some(got.jti.as_str()));
    assert!((NOW_S - 24 * 3600..=NOW_S + 300).contains(&got.iat));
    let events = c["events"].as_object().expect("events");
    assert_eq!(events.len(), got.events.len());
    for e in &got.events {
        assert!(events.contains_key(&e.event_type));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rt, rx) = &*RECEIVER;
    let body = if text.starts_with('{') {
        let Ok(claims) = serde_json::from_str::<Value>(text) else {
            return;
        };
        sign_jws(data.len() % 2, Some("secevent+jwt"), &claims)
    } else {
        text.to_string()
    };
    let req = SsfRequest {
        authorization: None,
        content_type: Some(CONTENT_TYPE),
        body: body.as_bytes(),
    };
    if let Ok(set) = rt.block_on(rx.receive(&req, NOW_US)) {
        check_accepted(&body, &set);
    }
});
