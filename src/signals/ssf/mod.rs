//! Shared Signals Framework receiver (OpenID SSF 1.0, push delivery RFC 8935): verifies
//! one Security Event Token pushed by a transmitter and says what it asks for.
//!
//! Checks, in order: the `Authorization` header when the stream has one (constant-time),
//! the content type `application/secevent+jwt`, the JOSE header (`typ` `secevent+jwt`,
//! `alg` RS256 or ES256 only), the signature against the transmitter's JWKS, then `iss`,
//! `aud`, `iat` within the allowed window, `jti`, `events` and a subject (`sub_id`, or
//! a per-event `subject` from older CAEP drafts). Refusals carry RFC 8935 error codes.
//! The `jti` is returned for the caller's cluster-wide, persistent replay check: a
//! retransmitted SET must be acknowledged (202) and not applied twice.

mod events;
mod keys;

#[cfg(test)]
mod tests;

pub use events::{CAEP, RISC, SsfAction, SsfEvent, SsfSession, SsfUser, Subject, VERIFICATION};
pub use keys::KeyPolicy;

use super::{FieldError, check_name, read_secret, resolve};
use crate::clock::Micros;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use keys::{Key, KeyError, Source};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The media type of a pushed SET (RFC 8935 §2).
pub const CONTENT_TYPE: &str = "application/secevent+jwt";
const MAX_SET_BYTES: usize = 64 * 1024;
const MAX_JTI: usize = 256;

/// `[[signals.ssf]]` as written in gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfFile {
    pub name: String,
    pub issuer: String,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub audience: String,
    pub authorization_token_file: Option<String>,
}

#[derive(Clone)]
pub enum JwksSource {
    Url(String),
    /// Parsed from `jwks_file` at validation.
    Keys(Arc<Vec<Key>>),
}

/// A validated stream.
#[derive(Clone)]
pub struct SsfConfig {
    /// URL segment (`/ssf/<name>/events`) and audit actor `ssf:<name>`.
    pub name: String,
    pub issuer: String,
    pub jwks: JwksSource,
    pub audience: String,
    /// The exact `Authorization` header value the transmitter must send.
    authorization: Option<String>,
}

impl std::fmt::Debug for SsfConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jwks = match &self.jwks {
            JwksSource::Url(u) => u.clone(),
            JwksSource::Keys(k) => format!("{} keys from a file", k.len()),
        };
        f.debug_struct("SsfConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("jwks", &jwks)
            .field("audience", &self.audience)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl SsfConfig {
    /// A stream whose keys come from a URL (tests, programmatic setups).
    pub fn with_jwks_url(name: &str, issuer: &str, audience: &str, jwks_url: &str) -> Self {
        Self {
            name: name.into(),
            issuer: issuer.into(),
            jwks: JwksSource::Url(jwks_url.into()),
            audience: audience.into(),
            authorization: None,
        }
    }

    /// Requires this `Authorization` header: `token` alone means `Bearer <token>`.
    pub fn require_authorization(mut self, token: &str) -> Self {
        let t = token.trim();
        self.authorization = Some(if t.contains(' ') {
            t.to_string()
        } else {
            format!("Bearer {t}")
        });
        self
    }
}

/// Validates the `[[signals.ssf]]` tables; file paths are relative to `base_dir`.
pub fn validate(files: &[SsfFile], base_dir: &Path) -> Result<Vec<SsfConfig>, FieldError> {
    let mut out: Vec<SsfConfig> = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let field = |k: &str| format!("signals.ssf[{i}].{k}");
        let err = |k: &str, r: String| FieldError::new(field(k), r);
        check_name(&f.name).map_err(|r| err("name", r))?;
        if out.iter().any(|c| c.name == f.name) {
            return Err(err("name", format!("{:?} appears twice", f.name)));
        }
        if f.issuer.trim().is_empty() {
            return Err(err("issuer", "must not be empty".into()));
        }
        if f.audience.trim().is_empty() {
            return Err(err("audience", "must not be empty".into()));
        }
        let jwks = match (&f.jwks_url, &f.jwks_file) {
            (Some(u), None) => JwksSource::Url(check_jwks_url(u).map_err(|r| err("jwks_url", r))?),
            (None, Some(p)) => {
                let path = resolve(base_dir, p);
                let bytes = std::fs::read(&path).map_err(|e| {
                    err("jwks_file", format!("cannot read {}: {e}", path.display()))
                })?;
                let keys = keys::parse_jwks(&bytes).map_err(|r| err("jwks_file", r))?;
                if keys.is_empty() {
                    return Err(err(
                        "jwks_file",
                        "holds no RS256 or ES256 signing key".into(),
                    ));
                }
                JwksSource::Keys(Arc::new(keys))
            }
            _ => {
                return Err(FieldError::new(
                    format!("signals.ssf[{i}]"),
                    "set exactly one of jwks_url or jwks_file",
                ));
            }
        };
        let mut cfg = SsfConfig {
            name: f.name.clone(),
            issuer: f.issuer.trim().to_string(),
            jwks,
            audience: f.audience.trim().to_string(),
            authorization: None,
        };
        if let Some(p) = &f.authorization_token_file {
            let token = read_secret(&resolve(base_dir, p))
                .map_err(|r| err("authorization_token_file", r))?;
            cfg = cfg.require_authorization(&token);
        }
        out.push(cfg);
    }
    Ok(out)
}

/// `https://`, or `http://` to a loopback address only (tests, local transmitters).
fn check_jwks_url(u: &str) -> Result<String, String> {
    let url = url::Url::parse(u.trim()).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url.to_string()),
        "http" if loopback => Ok(url.to_string()),
        _ => Err(format!(
            "{u:?} must be an https:// URL (http:// only on loopback)"
        )),
    }
}

/// RFC 8935 §2.4 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetErrorCode {
    InvalidRequest,
    InvalidKey,
    InvalidIssuer,
    InvalidAudience,
    AuthenticationFailed,
    AccessDenied,
}

impl SetErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            SetErrorCode::InvalidRequest => "invalid_request",
            SetErrorCode::InvalidKey => "invalid_key",
            SetErrorCode::InvalidIssuer => "invalid_issuer",
            SetErrorCode::InvalidAudience => "invalid_audience",
            SetErrorCode::AuthenticationFailed => "authentication_failed",
            SetErrorCode::AccessDenied => "access_denied",
        }
    }
}

/// A refused SET: answer `status` with [`SsfError::body`] (`application/json`).
/// 400 for a SET that does not verify; 401 when the `Authorization` header is missing
/// or wrong; 503 when the transmitter's keys cannot be fetched (it will retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({status}): {description}", code.as_str())]
pub struct SsfError {
    pub code: SetErrorCode,
    pub description: String,
    pub status: u16,
}

impl SsfError {
    fn new(code: SetErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            status: 400,
        }
    }
    fn request(d: impl Into<String>) -> Self {
        Self::new(SetErrorCode::InvalidRequest, d)
    }
    pub fn body(&self) -> Value {
        json!({"err": self.code.as_str(), "description": self.description})
    }
}

/// One push delivery, as the listener received it.
#[derive(Debug, Clone, Copy)]
pub struct SsfRequest<'a> {
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// A SET that verified. Apply `events` unless `jti` was seen before on any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSet {
    pub jti: String,
    pub iss: String,
    /// Seconds since the epoch.
    pub iat: i64,
    pub txn: Option<String>,
    pub events: Vec<SsfEvent>,
}

#[derive(Debug, Clone)]
pub struct ReceiverPolicy {
    /// How old `iat` may be. The caller must remember `jti`s at least this long.
    pub max_age: Duration,
    /// How far in the future `iat` may be (clock skew).
    pub max_future: Duration,
    pub keys: KeyPolicy,
}

impl Default for ReceiverPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_future: Duration::from_secs(300),
            keys: KeyPolicy::default(),
        }
    }
}

/// Verifies SETs for one configured stream; keeps the transmitter's keys.
pub struct Receiver {
    cfg: SsfConfig,
    policy: ReceiverPolicy,
    keys: Source,
}

struct JoseHeader {
    alg: Algorithm,
    kid: Option<String>,
}

impl Receiver {
    pub fn new(cfg: SsfConfig, policy: ReceiverPolicy) -> Result<Receiver, String> {
        let keys = match &cfg.jwks {
            JwksSource::Url(u) => Source::url(u.clone(), &policy.keys)?,
            JwksSource::Keys(k) => Source::Fixed(k.clone()),
        };
        Ok(Receiver { cfg, policy, keys })
    }

    pub fn config(&self) -> &SsfConfig {
        &self.cfg
    }

    /// Fetches the transmitter's keys now (at start-up, to report a bad URL early).
    pub async fn refresh_keys(&self, now: Micros) -> Result<usize, String> {
        match self.keys.refresh(now, &self.policy.keys, true).await {
            Ok(k) => Ok(k.len()),
            Err(KeyError::Unavailable(e)) => Err(e),
            Err(KeyError::Unknown) => Err("no keys".into()),
        }
    }

    /// Verifies one pushed SET.
    pub async fn receive(
        &self,
        req: &SsfRequest<'_>,
        now: Micros,
    ) -> Result<VerifiedSet, SsfError> {
        self.check_authorization(req.authorization)?;
        check_content_type(req.content_type)?;
        let token = token_of(req.body)?;
        let header = jose_header(token)?;
        let claims = self.verify_signature(token, &header, now).await?;
        self.check_claims(&claims, now)
    }

    fn check_authorization(&self, got: Option<&str>) -> Result<(), SsfError> {
        let Some(want) = &self.cfg.authorization else {
            return Ok(());
        };
        let ok = got.is_some_and(|g| crate::secrets::ct_eq(g.trim().as_bytes(), want.as_bytes()));
        if ok {
            return Ok(());
        }
        Err(SsfError {
            code: SetErrorCode::AuthenticationFailed,
            description: "missing or wrong Authorization header".into(),
            status: 401,
        })
    }

    async fn verify_signature(
        &self,
        token: &str,
        h: &JoseHeader,
        now: Micros,
    ) -> Result<Value, SsfError> {
        let keys = match self
            .keys
            .find(h.kid.as_deref(), h.alg, now, &self.policy.keys)
            .await
        {
            Ok(k) => k,
            Err(KeyError::Unknown) => {
                let kid = h.kid.as_deref().unwrap_or("(none)");
                return Err(SsfError::new(
                    SetErrorCode::InvalidKey,
                    format!("no {:?} key with kid {kid}", h.alg),
                ));
            }
            Err(KeyError::Unavailable(e)) => {
                return Err(SsfError {
                    code: SetErrorCode::InvalidKey,
                    description: format!("cannot fetch the transmitter's keys: {e}"),
                    status: 503,
                });
            }
        };
        let mut v = Validation::new(h.alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        for k in &keys {
            match jsonwebtoken::decode::<Value>(token, &k.key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                    continue;
                }
                Err(e) => return Err(SsfError::request(format!("cannot decode the SET: {e}"))),
            }
        }
        Err(SsfError::new(
            SetErrorCode::AuthenticationFailed,
            "the signature does not verify",
        ))
    }

    fn check_claims(&self, c: &Value, now: Micros) -> Result<VerifiedSet, SsfError> {
        let iss = c.get("iss").and_then(Value::as_str).unwrap_or_default();
        if iss != self.cfg.issuer {
            return Err(SsfError::new(
                SetErrorCode::InvalidIssuer,
                format!("iss {iss:?} is not {:?}", self.cfg.issuer),
            ));
        }
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => *a == self.cfg.audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(&self.cfg.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(SsfError::new(
                SetErrorCode::InvalidAudience,
                format!("aud does not include {:?}", self.cfg.audience),
            ));
        }
        let iat = self.check_iat(c.get("iat"), now)?;
        let jti = match c.get("jti").and_then(Value::as_str) {
            Some(j) if !j.is_empty() && j.len() <= MAX_JTI && !j.chars().any(char::is_control) => {
                j.to_string()
            }
            _ => return Err(SsfError::request("jti missing or malformed")),
        };
        let events = match c.get("events") {
            Some(Value::Object(m)) if !m.is_empty() => m,
            _ => return Err(SsfError::request("events missing or empty")),
        };
        let top = match c.get("sub_id") {
            None => None,
            Some(v) => Some(
                events::parse_subject(v)
                    .ok_or_else(|| SsfError::request("sub_id is not a subject identifier"))?,
            ),
        };
        if top.is_none()
            && !events
                .values()
                .all(|e| e.get("subject").and_then(events::parse_subject).is_some())
        {
            return Err(SsfError::request("sub_id missing"));
        }
        Ok(VerifiedSet {
            jti,
            iss: iss.to_string(),
            iat,
            txn: c.get("txn").and_then(Value::as_str).map(str::to_string),
            events: events
                .iter()
                .map(|(uri, ev)| events::action(uri, ev, top.as_ref()))
                .collect(),
        })
    }

    fn check_iat(&self, v: Option<&Value>, now: Micros) -> Result<i64, SsfError> {
        let iat = v
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .ok_or_else(|| SsfError::request("iat missing"))?;
        let now_s = now.div_euclid(1_000_000);
        if now_s - iat > self.policy.max_age.as_secs() as i64 {
            return Err(SsfError::request("iat is too far in the past"));
        }
        if iat - now_s > self.policy.max_future.as_secs() as i64 {
            return Err(SsfError::request("iat is in the future"));
        }
        Ok(iat)
    }
}

fn check_content_type(ct: Option<&str>) -> Result<(), SsfError> {
    let essence = ct.unwrap_or("").split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(CONTENT_TYPE) {
        Ok(())
    } else {
        Err(SsfError::request(format!(
            "Content-Type must be {CONTENT_TYPE}"
        )))
    }
}

fn token_of(body: &[u8]) -> Result<&str, SsfError> {
    if body.len() > MAX_SET_BYTES {
        return Err(SsfError::request("the SET is too large"));
    }
    let s = std::str::from_utf8(body)
        .map_err(|_| SsfError::request("the body is not UTF-8"))?
        .trim();
    if s.split('.').count() != 3 {
        return Err(SsfError::request(
            "the body is not a signed JWT (JWE is not supported)",
        ));
    }
    Ok(s)
}

fn jose_header(token: &str) -> Result<JoseHeader, SsfError> {
    let first = token.split('.').next().unwrap_or_default();
    let raw = URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| SsfError::request("the JOSE header is not base64url"))?;
    let h: Value = serde_json::from_slice(&raw)
        .map_err(|_| SsfError::request("the JOSE header is not JSON"))?;
    let typ = h.get("typ").and_then(Value::as_str).unwrap_or_default();
    let typ = typ.strip_prefix("application/").unwrap_or(typ);
    if !typ.eq_ignore_ascii_case("secevent+jwt") {
        return Err(SsfError::request("typ must be secevent+jwt"));
    }
    if h.get("crit").is_some() {
        return Err(SsfError::request(
            "crit header parameters are not supported",
        ));
    }
    let alg = match h.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        Some(other) => {
            return Err(SsfError::request(format!(
                "alg {other} is not accepted (RS256, ES256)"
            )));
        }
        None => return Err(SsfError::request("alg missing")),
    };
    let kid = h.get("kid").and_then(Value::as_str).map(str::to_string);
    Ok(JoseHeader { alg, kid })
}
