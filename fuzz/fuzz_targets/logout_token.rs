//! Back-channel logout tokens: `Provider::verify_logout_token` for a provider discovered
//! from a local IdP with a fixed JWKS, at a fixed instant.
//!
//! Input: a token; or `{`-JSON claims signed with the IdP's ES256 or RS256 key (by the
//! input's length, `typ` `logout+jwt`) and then verified. Checked: an accepted token's
//! payload (decoded here independently) has our issuer and client, the back-channel
//! logout event, no nonce, a `jti`, a `sid` or `sub`, and an `iat` within the window;
//! the verified token reports exactly those values.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fuzz_common::{IDP_CLIENT, IDP_ISSUER, NOW_US, idp_provider, runtime, sign_jws};
use libfuzzer_sys::fuzz_target;
use portcullis::idp::{BACKCHANNEL_LOGOUT_EVENT, LogoutToken, Provider};
use serde_json::Value;
use std::sync::LazyLock;

static IDP: LazyLock<(tokio::runtime::Runtime, Provider)> = LazyLock::new(|| {
    let rt = runtime();
    let provider = idp_provider(&rt);
    (rt, provider)
});

fn check_accepted(token: &str, got: &LogoutToken) {
    let payload = token.split('.').nth(1).expect("three segments");
    let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64"))
        .expect("JSON claims");
    assert_eq!(c["iss"], IDP_ISSUER);
    let aud_ok = match &c["aud"] {
        Value::String(a) => a == IDP_CLIENT,
        Value::Array(a) => a.iter().any(|x| x == IDP_CLIENT),
        _ => false,
    };
    assert!(aud_ok, "aud {}", c["aud"]);
    assert!(c["events"][BACKCHANNEL_LOGOUT_EVENT].is_object());
    assert!(c.get("nonce").is_none(), "a nonce was accepted");
    assert_eq!(c["jti"].as_str(), Some(got.jti.as_str()));
    assert!(!got.jti.is_empty());
    assert!(got.sid.is_some() || got.sub.is_some());
    assert_eq!(
        got.sid.as_deref(),
        c["sid"].as_str().filter(|s| !s.is_empty())
    );
    assert_eq!(
        got.sub.as_deref(),
        c["sub"].as_str().filter(|s| !s.is_empty())
    );
    let iat = c["iat"].as_f64().expect("iat");
    assert!(
        iat * 1e6 <= (NOW_US + 60_000_000) as f64,
        "iat in the future"
    );
    assert!(
        got.remember_until >= NOW_US,
        "accepted after it may be forgotten"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rt, provider) = &*IDP;
    let token = if text.starts_with('{') {
        let Ok(claims) = serde_json::from_str::<Value>(text) else {
            return;
        };
        sign_jws(data.len() % 2, Some("logout+jwt"), &claims)
    } else {
        text.to_string()
    };
    if let Ok(got) = rt.block_on(provider.verify_logout_token(&token, NOW_US)) {
        check_accepted(&token, &got);
    }
});
