//! ID tokens: `Provider::verify_id_token` for a provider discovered from a local IdP
//! with a fixed JWKS (`fuzz/keys/idp-*.pem`), at a fixed instant.
//!
//! Input: a token; or `{`-JSON claims that are signed with the IdP's ES256 or RS256 key
//! (by the input's length) and then verified, so the claim checks behind the signature
//! are reached. Checked: an accepted token's payload (decoded here independently) has
//! our issuer, our client among its audiences, our nonce and an `exp` not passed; the
//! identity's email is the claim's, lowercased, with an `@`.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fuzz_common::{
    IDP_CLIENT, IDP_ISSUER, IDP_NONCE, NOW_S, NOW_US, idp_provider, pending, runtime, sign_jws,
};
use libfuzzer_sys::fuzz_target;
use portcullis::idp::{PendingAuth, Provider};
use serde_json::Value;
use std::sync::LazyLock;

struct Idp {
    rt: tokio::runtime::Runtime,
    provider: Provider,
    pending: PendingAuth,
}

static IDP: LazyLock<Idp> = LazyLock::new(|| {
    let rt = runtime();
    let provider = idp_provider(&rt);
    Idp {
        rt,
        provider,
        pending: pending(),
    }
});

fn check_accepted(token: &str, email: &str) {
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
    assert_eq!(c["nonce"], IDP_NONCE);
    let exp = c["exp"].as_f64().expect("exp");
    assert!(exp > (NOW_S - 61) as f64, "expired token accepted");
    let claimed = c["email"].as_str().expect("email").trim().to_lowercase();
    assert_eq!(email, claimed);
    assert!(email.contains('@'));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let idp = &*IDP;
    let token = if text.starts_with('{') {
        let Ok(claims) = serde_json::from_str::<Value>(text) else {
            return;
        };
        sign_jws(data.len() % 2, Some("JWT"), &claims)
    } else {
        text.to_string()
    };
    let got = idp.rt.block_on(
        idp.provider
            .verify_id_token(&token, &idp.pending, None, NOW_US),
    );
    if let Ok(identity) = got {
        check_accepted(&token, &identity.email);
    }
});
