//! Inputs the fuzz targets in `fuzz/` found, kept as tests of the normal suite so the
//! behaviour they pinned down stays. Each test names its target and what it found.

use portcullis::session::keys::KeyRing;
use portcullis::session::token::{Claims, TokenError, Verifier, sign, verify_signature};

const ISS: &str = "https://auth.fuzz.test";

/// `app_token`: claims with a negative `exp` (the fuzzer's input, trimmed) sign, but
/// are refused as invalid by both the direct check and the caching verifier (to the JWT
/// library a negative `exp` is no NumericDate, so the required claim counts as missing),
/// while the same claims with a real `exp` verify back to themselves. The gateway never
/// mints such a token; a forged one is refused, not a panic, not accepted.
#[test]
fn app_token_with_a_negative_exp_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(dir.path()).unwrap();
    let mut claims = Claims {
        iss: ISS.into(),
        aud: "echo".into(),
        sub: "demo@example.com".into(),
        email: "demeyJ0eXAiOiJZ3VTJWemMybHZia2xrIiwianRpo@example.com".into(),
        groups: vec!["staff".into(), "expops".into()],
        sid: "Qm8vdHN0cmFwU2Vzc2lvbklk".into(),
        jti: "0c2b9c3e1f".into(),
        iat: 1_759_999_990,
        exp: -1_760_003_600,
        nbf: None,
        iat_us: 1_759_999_990_123_456,
        bnd: None,
    };
    let now_us = 1_760_000_000_000_000;
    let token = sign(&ring, &claims).unwrap();
    assert_eq!(
        verify_signature(&ring, &token, ISS).err(),
        Some(TokenError::Invalid)
    );
    let verifier = Verifier::new(64);
    assert_eq!(
        verifier.verify(&ring, &token, "echo", ISS, now_us).err(),
        Some(TokenError::Invalid)
    );

    claims.exp = 1_760_003_600;
    let token = sign(&ring, &claims).unwrap();
    let v = verify_signature(&ring, &token, ISS).unwrap();
    let mut back = v.claims.to_claims();
    back.jti = claims.jti.clone();
    assert_eq!(back, claims);
    assert!(verifier.verify(&ring, &token, "echo", ISS, now_us).is_ok());
}

/// `sync_wire`: a revocation's meta field longer than the wire's 1024 bytes per field
/// was cut at byte 1024, inside a character when it is not ASCII, so the entry its own
/// encoder wrote did not decode: an anti-entropy message (or a journal replay) stopped
/// at it. Fields are now cut on a character boundary, and the entry decodes.
#[test]
fn a_long_non_ascii_meta_field_still_decodes() {
    use portcullis::revocation::{RevocationRecord, Scope};
    use portcullis::sync::wire::{Entries, put_entry};

    let rec = RevocationRecord {
        id: "rev-1".into(),
        scope: Scope::User,
        target: "demo@example.com".into(),
        not_before_us: 1_760_000_000_000_000,
        reason: "offboarding".into(),
        // 3-byte characters: 1024 is not a multiple of 3.
        actor: "€".repeat(400),
        node: "n1".into(),
        external_id: Some("ticket-7".into()),
    };
    let mut buf = Vec::new();
    put_entry(
        &mut buf,
        rec.scope,
        &rec.target,
        rec.not_before_us,
        Some(&rec),
    );
    put_entry(&mut buf, Scope::Session, "s1", 5, None);
    let back: Vec<_> = Entries::new(&buf).collect::<Result<_, _>>().unwrap();
    assert_eq!(back.len(), 2, "the entry after it is read too");
    let got = back[0].record().unwrap();
    assert_eq!(
        got.actor,
        "€".repeat(341),
        "cut to 1023 bytes, whole characters"
    );
    assert_eq!(got.external_id.as_deref(), Some("ticket-7"));
    assert_eq!(
        (got.reason.as_str(), got.node.as_str()),
        ("offboarding", "n1")
    );
}

/// `config`: a table named by the empty string (`[""]`, the fuzzer's input without its
/// comment) was refused with an empty field path, so the error read `gateway.toml: :
/// unknown field`. It now names the top level, as for other unknown top-level keys.
#[test]
fn a_config_error_always_names_its_field() {
    use portcullis::config::{Config, ConfigError, Secrets};
    let path = std::path::Path::new("/nonexistent-portcullis-fuzz/gateway.toml");
    for text in [
        "[\"\"]\n",
        "# =  # =  = [\"devff\"]\n[\"\"]\n",
        "\"\" = 1\n",
    ] {
        match Config::parse(text, path, Secrets::ReadOnly) {
            Err(ConfigError::Field { field, reason, .. }) => {
                assert_eq!(field, "(top level)", "{text:?}");
                assert!(reason.contains("unknown field"), "{reason}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}
