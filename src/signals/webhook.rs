//! Signed revocation webhooks for SIEM and SOAR tools (`POST /v1/hooks/<name>`).
//!
//! The sender signs `"<t>.<raw body>"` with HMAC-SHA256 under the hook's shared secret
//! and sends `Portcullis-Signature: t=<unix seconds>,v1=<hex>` (Stripe's scheme). Several
//! `v1` values may be sent, one per secret, so a sender can rotate; the hook's
//! `secret_file` may likewise hold several secrets, one a line, so the receiving side can
//! rotate too. A signature older or newer than five minutes is refused, which bounds
//! replays to that window; the caller makes retries idempotent on `event_id`
//! cluster-wide, and this module only verifies and returns it.

use super::{FieldError, check_name, read_secret, resolve};
use crate::clock::Micros;
use crate::revocation::Scope;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::path::Path;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Portcullis-Signature";
/// How far the signed time may be from ours, either way.
pub const TOLERANCE_SECS: i64 = 300;
const MAX_EVENT_ID: usize = 128;
const MAX_TARGET: usize = 512;
const MAX_REASON: usize = 128;
const MAX_HEADER: usize = 4096;

/// `[[signals.webhook]]` as written in gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub name: String,
    pub secret_file: String,
}

/// A validated webhook: its name (audit actor `hook:<name>`) and accepted secrets.
#[derive(Clone)]
pub struct WebhookConfig {
    pub name: String,
    secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl WebhookConfig {
    /// A hook with the given secrets (tests and callers that hold secrets already).
    pub fn new(name: impl Into<String>, secrets: Vec<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            secrets,
        }
    }

    /// Verifies one delivery against this hook's secrets.
    pub fn verify(
        &self,
        signature_header: Option<&str>,
        raw_body: &[u8],
        now: Micros,
    ) -> Result<HookRevocation, HookError> {
        verify(&self.secrets, signature_header, raw_body, now)
    }
}

/// Validates the `[[signals.webhook]]` tables; paths are relative to `base_dir`.
pub fn validate(files: &[WebhookFile], base_dir: &Path) -> Result<Vec<WebhookConfig>, FieldError> {
    let mut out: Vec<WebhookConfig> = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let field = |k: &str| format!("signals.webhook[{i}].{k}");
        check_name(&f.name).map_err(|r| FieldError::new(field("name"), r))?;
        if out.iter().any(|w| w.name == f.name) {
            return Err(FieldError::new(
                field("name"),
                format!("{:?} appears twice", f.name),
            ));
        }
        let text = read_secret(&resolve(base_dir, &f.secret_file))
            .map_err(|r| FieldError::new(field("secret_file"), r))?;
        let secrets: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if let Some(short) = secrets.iter().find(|s| s.len() < 16) {
            return Err(FieldError::new(
                field("secret_file"),
                format!(
                    "a secret of {} bytes is too short: use at least 16",
                    short.len()
                ),
            ));
        }
        out.push(WebhookConfig {
            name: f.name.clone(),
            secrets,
        });
    }
    Ok(out)
}

/// What a verified webhook asks for. The caller applies it once per `event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRevocation {
    pub scope: Scope,
    /// Empty for scope `all`.
    pub target: String,
    pub reason: String,
    pub event_id: String,
}

/// Why a delivery was refused. [`HookError::status`] gives the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("missing Portcullis-Signature header")]
    MissingSignature,
    #[error("malformed Portcullis-Signature header: {0}")]
    MalformedSignature(&'static str),
    #[error("signature timestamp is more than {TOLERANCE_SECS} s old")]
    Stale,
    #[error("signature timestamp is more than {TOLERANCE_SECS} s in the future")]
    Future,
    #[error("no v1 signature matches")]
    BadSignature,
    #[error("invalid body: {0}")]
    BadBody(String),
}

impl HookError {
    /// 401 for every signature problem (the sender is not authenticated), 400 for a
    /// correctly signed body that is not a valid revocation.
    pub fn status(&self) -> u16 {
        match self {
            HookError::BadBody(_) => 400,
            _ => 401,
        }
    }

    /// A short stable code for metrics and the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            HookError::MissingSignature => "missing_signature",
            HookError::MalformedSignature(_) => "malformed_signature",
            HookError::Stale => "stale",
            HookError::Future => "future",
            HookError::BadSignature => "bad_signature",
            HookError::BadBody(_) => "bad_body",
        }
    }
}

/// Verifies `signature_header` over `raw_body` with any of `secrets`, then parses the body.
pub fn verify(
    secrets: &[impl AsRef<[u8]>],
    signature_header: Option<&str>,
    raw_body: &[u8],
    now: Micros,
) -> Result<HookRevocation, HookError> {
    let header = signature_header.ok_or(HookError::MissingSignature)?;
    let (t, sigs) = parse_header(header)?;
    let now_s = now.div_euclid(1_000_000);
    if t < now_s - TOLERANCE_SECS {
        return Err(HookError::Stale);
    }
    if t > now_s + TOLERANCE_SECS {
        return Err(HookError::Future);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = sign(secret.as_ref(), t, raw_body);
        sigs.iter()
            .any(|s| crate::secrets::ct_eq(s.as_slice(), expected.as_slice()))
    });
    if !matched {
        return Err(HookError::BadSignature);
    }
    parse_body(raw_body)
}

/// HMAC-SHA256 of `"<t>.<body>"` under `secret` (what senders compute).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The header value a sender would send for one secret (tests, README examples).
pub fn signature_header(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(sign(secret, t, body)))
}

fn parse_header(h: &str) -> Result<(i64, Vec<Vec<u8>>), HookError> {
    if h.len() > MAX_HEADER {
        return Err(HookError::MalformedSignature("too long"));
    }
    let mut t = None;
    let mut sigs = Vec::new();
    for part in h.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(HookError::MalformedSignature("expected key=value pairs"))?;
        match k.trim() {
            "t" if t.is_some() => return Err(HookError::MalformedSignature("t given twice")),
            "t" => {
                let v = v.trim();
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 12 {
                    return Err(HookError::MalformedSignature("t is not unix seconds"));
                }
                t = v.parse::<i64>().ok();
            }
            "v1" => match hex::decode(v.trim()) {
                Ok(b) if b.len() == 32 => sigs.push(b),
                _ => return Err(HookError::MalformedSignature("v1 is not 64 hex digits")),
            },
            // Other schemes (v0, future versions) are ignored, as Stripe does.
            _ => {}
        }
    }
    let t = t.ok_or(HookError::MalformedSignature("no t"))?;
    if sigs.is_empty() {
        return Err(HookError::MalformedSignature("no v1 signature"));
    }
    Ok((t, sigs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    scope: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    reason: String,
    event_id: String,
}

fn parse_body(raw: &[u8]) -> Result<HookRevocation, HookError> {
    let b: Body = serde_json::from_slice(raw).map_err(|e| HookError::BadBody(e.to_string()))?;
    let bad = |m: &str| Err(HookError::BadBody(m.to_string()));
    let Some(scope) = Scope::parse(b.scope.trim()) else {
        return bad("scope must be user, app, session, group, member or all");
    };
    let event_id = b.event_id.trim().to_string();
    if event_id.is_empty() || event_id.len() > MAX_EVENT_ID {
        return bad("event_id must be 1 to 128 characters");
    }
    if !event_id.bytes().all(|c| c.is_ascii_graphic()) {
        return bad("event_id must be printable ASCII without spaces");
    }
    let target = b.target.trim().to_string();
    if scope != Scope::All && target.is_empty() {
        return bad("target is required for this scope");
    }
    if target.len() > MAX_TARGET || target.chars().any(char::is_control) {
        return bad("target is too long or has control characters");
    }
    let reason = b.reason.trim().to_string();
    if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
        return bad("reason is too long or has control characters");
    }
    Ok(HookRevocation {
        scope,
        target,
        reason,
        event_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_0123456789abcdef";
    const NOW_S: i64 = 1_760_000_000;
    const NOW: Micros = NOW_S * 1_000_000 + 123_456;
    const BODY: &[u8] =
        br#"{"scope":"user","target":"ada@example.com","reason":"siem:impossible-travel","event_id":"alert-42"}"#;

    fn hook() -> WebhookConfig {
        WebhookConfig::new("splunk", vec![SECRET.to_vec()])
    }

    #[test]
    fn a_good_signature_returns_the_revocation_and_event_id() {
        let h = signature_header(SECRET, NOW_S, BODY);
        let r = hook().verify(Some(&h), BODY, NOW).unwrap();
        assert_eq!(r.scope, Scope::User);
        assert_eq!(r.target, "ada@example.com");
        assert_eq!(r.reason, "siem:impossible-travel");
        assert_eq!(r.event_id, "alert-42");
    }

    #[test]
    fn refusals() {
        let good = signature_header(SECRET, NOW_S, BODY);
        let other = signature_header(b"another-secret-of-16+", NOW_S, BODY);
        let stale = signature_header(SECRET, NOW_S - 301, BODY);
        let future = signature_header(SECRET, NOW_S + 301, BODY);
        let tampered: &[u8] =
            br#"{"scope":"user","target":"bob@example.com","reason":"siem:impossible-travel","event_id":"alert-42"}"#;
        let cases: Vec<(&str, Option<&str>, &[u8], HookError)> = vec![
            ("no header", None, BODY, HookError::MissingSignature),
            ("wrong secret", Some(&other), BODY, HookError::BadSignature),
            ("stale", Some(&stale), BODY, HookError::Stale),
            ("future", Some(&future), BODY, HookError::Future),
            (
                "tampered body",
                Some(&good),
                tampered,
                HookError::BadSignature,
            ),
            (
                "empty",
                Some(""),
                BODY,
                HookError::MalformedSignature("expected key=value pairs"),
            ),
            (
                "no t",
                Some("v1=00"),
                BODY,
                HookError::MalformedSignature("v1 is not 64 hex digits"),
            ),
            (
                "t not a number",
                Some("t=12a,v1=00"),
                BODY,
                HookError::MalformedSignature("t is not unix seconds"),
            ),
            (
                "no v1",
                Some("t=1760000000"),
                BODY,
                HookError::MalformedSignature("no v1 signature"),
            ),
            (
                "two t",
                Some("t=1,t=2,v1=00"),
                BODY,
                HookError::MalformedSignature("t given twice"),
            ),
        ];
        for (name, header, body, want) in cases {
            let got = hook().verify(header, body, NOW).unwrap_err();
            assert_eq!(got, want, "{name}");
            assert_eq!(got.status(), 401, "{name}");
        }
    }

    #[test]
    fn the_window_is_five_minutes_either_way_inclusive() {
        for t in [NOW_S - 300, NOW_S + 300] {
            let h = signature_header(SECRET, t, BODY);
            assert!(hook().verify(Some(&h), BODY, NOW).is_ok(), "t={t}");
        }
    }

    #[test]
    fn several_v1_values_and_several_secrets_allow_rotation() {
        let old = b"old-secret-0123456789".to_vec();
        let new = b"new-secret-0123456789".to_vec();
        // Sender in rotation sends both; we hold only the new one.
        let both = format!(
            "t={NOW_S},v1={},v1={}",
            hex::encode(sign(&old, NOW_S, BODY)),
            hex::encode(sign(&new, NOW_S, BODY))
        );
        let ours = WebhookConfig::new("h", vec![new.clone()]);
        assert!(ours.verify(Some(&both), BODY, NOW).is_ok());
        // We hold both; sender still signs with the old one only. Unknown v0 ignored.
        let old_only = format!(
            "v0=zz, t={NOW_S} , v1={}",
            hex::encode(sign(&old, NOW_S, BODY))
        );
        let ours = WebhookConfig::new("h", vec![new, old]);
        assert!(ours.verify(Some(&old_only), BODY, NOW).is_ok());
    }

    #[test]
    fn bodies_must_be_valid_revocations() {
        let cases: [(&[u8], &str); 7] = [
            (b"not json", "expected"),
            (
                br#"{"scope":"user","target":"a@b.c","event_id":"e","extra":1}"#,
                "unknown field",
            ),
            (
                br#"{"scope":"planet","target":"x","event_id":"e"}"#,
                "scope must be",
            ),
            (
                br#"{"scope":"user","target":"a@b.c"}"#,
                "missing field `event_id`",
            ),
            (
                br#"{"scope":"user","target":"a@b.c","event_id":""}"#,
                "event_id must be",
            ),
            (br#"{"scope":"user","event_id":"e"}"#, "target is required"),
            (
                br#"{"scope":"user","target":"a@b.c","event_id":"has space"}"#,
                "printable",
            ),
        ];
        for (body, want) in cases {
            let h = signature_header(SECRET, NOW_S, body);
            let err = hook().verify(Some(&h), body, NOW).unwrap_err();
            assert_eq!(err.status(), 400);
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        }
        let long = format!(r#"{{"scope":"all","event_id":"{}"}}"#, "e".repeat(129));
        let h = signature_header(SECRET, NOW_S, long.as_bytes());
        assert!(hook().verify(Some(&h), long.as_bytes(), NOW).is_err());
        let all = br#"{"scope":"all","event_id":"e-1"}"#;
        let h = signature_header(SECRET, NOW_S, all);
        let r = hook().verify(Some(&h), all, NOW).unwrap();
        assert_eq!((r.scope, r.target.as_str()), (Scope::All, ""));
    }

    #[test]
    fn config_validation_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        crate::secrets::write_private(
            &dir.path().join("s"),
            "first-secret-0123456\n\nsecond-secret-012345\n",
        );
        crate::secrets::write_private(&dir.path().join("short"), "tiny\n");
        let f = |name: &str, file: &str| WebhookFile {
            name: name.into(),
            secret_file: file.into(),
        };
        let ok = validate(&[f("soar", "s")], dir.path()).unwrap();
        assert_eq!(ok[0].secrets.len(), 2);
        assert!(
            !format!("{ok:?}").contains("first-secret"),
            "Debug leaks the secret"
        );
        let e = validate(&[f("soar", "s"), f("soar", "s")], dir.path()).unwrap_err();
        assert_eq!(e.field, "signals.webhook[1].name");
        let e = validate(&[f("Bad Name", "s")], dir.path()).unwrap_err();
        assert_eq!(e.field, "signals.webhook[0].name");
        let e = validate(&[f("a", "missing")], dir.path()).unwrap_err();
        assert_eq!(e.field, "signals.webhook[0].secret_file");
        let e = validate(&[f("a", "short")], dir.path()).unwrap_err();
        assert!(e.reason.contains("too short"));
        let toml_err = toml::from_str::<WebhookFile>("name='a'\nsecret_file='s'\nsecret='x'\n");
        assert!(toml_err.is_err(), "unknown fields must be refused");
    }
}
