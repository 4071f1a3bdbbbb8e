//! App tokens and global-session tokens: `session::token::verify_signature` and the
//! caching `Verifier` against the fixed key ring in `fuzz/keys/app`.
//!
//! Input: a token; or, starting with `{`, claims to sign with the ring and verify back.
//! Checked: a token either verifier accepts is well-formed, ES256 under a key of the
//! ring and carries our issuer; the cached verifier agrees with the direct check (it
//! refuses only for time, audience or size on top); signed claims verify back to
//! themselves unless their binding hash is not 32 bytes of base64url or their `exp` is
//! negative.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fuzz_common::{APP_ISS, NOW_US, app_ring};
use libfuzzer_sys::fuzz_target;
use portcullis::session::token::{Claims, TokenError, Verifier, sign, verify_signature};
use std::sync::LazyLock;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| Verifier::new(4096));

fn round_trip(mut claims: Claims) {
    let ring = app_ring();
    claims.iss = APP_ISS.into();
    let token = sign(ring, &claims).expect("claims always sign");
    let bnd_ok = claims
        .bnd
        .as_ref()
        .is_none_or(|b| URL_SAFE_NO_PAD.decode(b).is_ok_and(|r| r.len() == 32));
    // A negative `exp` is no NumericDate to the JWT library: the claim counts as missing
    // (found by this target; the gateway never mints one, its clock is past 1970).
    let ok = bnd_ok && claims.exp >= 0;
    match verify_signature(ring, &token, APP_ISS) {
        Ok(v) => {
            assert!(ok, "a bad binding hash or a negative exp was accepted");
            let mut back = v.claims.to_claims();
            back.jti = claims.jti.clone();
            back.nbf = claims.nbf;
            assert_eq!(back, claims);
        }
        Err(e) => assert!(!ok, "our own token refused: {e:?}"),
    }
}

/// What an accepted token must be: three base64url segments, an ES256 header naming a
/// key of the ring, claims with our issuer.
fn check_accepted(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64 header"))
            .expect("JSON header");
    assert_eq!(header["alg"], "ES256");
    let kid = header["kid"].as_str().expect("kid");
    assert!(app_ring().decoding(kid).is_some());
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64 claims"))
            .expect("JSON claims");
    assert_eq!(claims["iss"], APP_ISS);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.starts_with('{') {
        if let Ok(claims) = serde_json::from_str::<Claims>(text) {
            round_trip(claims);
        }
        return;
    }
    let ring = app_ring();
    let direct = verify_signature(ring, text, APP_ISS);
    let cached = VERIFIER.verify(ring, text, "echo", APP_ISS, NOW_US);
    match (&direct, &cached) {
        (Ok(d), Ok((c, _))) => {
            check_accepted(text);
            assert_eq!(d.claims.to_claims(), c.claims.to_claims());
            assert_eq!(c.assertion.as_bytes(), text.as_bytes());
        }
        (Ok(_), Err(e)) => {
            check_accepted(text);
            assert!(
                matches!(
                    e,
                    TokenError::Expired
                        | TokenError::NotYetValid
                        | TokenError::WrongAudience
                        | TokenError::TooLarge
                ),
                "verified, then refused with {e:?}"
            );
        }
        (Err(d), Err(c)) => assert!(
            d == c || matches!(c, TokenError::Missing | TokenError::TooLarge),
            "direct {d:?}, cached {c:?}"
        ),
        (Err(d), Ok(_)) => panic!("the cache accepted what the check refuses ({d:?})"),
    }
});
