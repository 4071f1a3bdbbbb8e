//! OpenID Connect Back-Channel Logout 1.0 §2.6: verifying a `logout_token` the IdP
//! POSTs to us. openidconnect has no type for it, so the JWS is checked with
//! `jsonwebtoken` against the same cached JWKS as ID tokens. Replay (`jti` seen before)
//! is cluster-wide state and the caller's job: the verified token returns the `jti` and
//! how long to remember it.

use super::provider::Provider;
use super::{CLOCK_SKEW, IdpError, micros};
use crate::clock::Micros;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// The event a logout token's `events` claim must contain.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token's `iat` may be at most this old (plus `CLOCK_SKEW`).
pub const LOGOUT_TOKEN_MAX_AGE: Duration = Duration::from_secs(120);

/// A verified logout token: end the sessions of IdP session `sid` (or, with only a
/// `sub`, of that user at this IdP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    pub sub: Option<String>,
    pub sid: Option<String>,
    /// Refuse a second token with this `jti` until `remember_until`.
    pub jti: String,
    /// `iat` (µs).
    pub iat: Micros,
    /// After this instant (µs) the token is too old to pass anyway: the `jti` can be forgotten.
    pub remember_until: Micros,
}

#[derive(Deserialize)]
struct RawClaims {
    iat: Option<Value>,
    exp: Option<Value>,
    jti: Option<String>,
    sub: Option<String>,
    sid: Option<String>,
    events: Option<Map<String, Value>>,
    nonce: Option<Value>,
}

const ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn refused(reason: impl Into<String>) -> IdpError {
    IdpError::LogoutTokenRefused(reason.into())
}

impl Provider {
    /// Verifies a back-channel `logout_token`: a JWS (not `none`, not HMAC) signed by
    /// a key of the IdP's JWKS (refetched once on an unknown `kid`), `typ` `logout+jwt`
    /// (or the generic `JWT`) when present, `iss` = the issuer, `aud` containing our
    /// client id, `iat` within `LOGOUT_TOKEN_MAX_AGE` (and `exp`, when present, not
    /// passed), the back-channel logout event in `events`, a `sid` or `sub`, a `jti`,
    /// and no `nonce`.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        now: Micros,
    ) -> Result<LogoutToken, IdpError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("not a signed JWT with a supported alg: {e}")))?;
        check_typ(header.typ.as_deref())?;
        if !ALGS.contains(&header.alg) {
            return Err(refused(format!("alg {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.as_deref();
        let keys = self.keys.current();
        let key = match keys.decoding_key(kid, header.alg) {
            Some(k) => k,
            None => self
                .keys
                .refetch(&keys, self.http(), now)
                .await
                .and_then(|k| k.decoding_key(kid, header.alg))
                .ok_or_else(|| {
                    refused("signed with a key the identity provider does not publish")
                })?,
        };
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.config().issuer]);
        v.set_audience(&[&self.config().client_id]);
        v.set_required_spec_claims(&["iss", "aud"]);
        v.validate_exp = false; // times are checked below against the injected clock
        v.validate_nbf = false;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<RawClaims>(token, &key, &v)
            .map_err(|e| refused(format!("{e}")))?;
        check_claims(data.claims, now)
    }
}

fn check_typ(typ: Option<&str>) -> Result<(), IdpError> {
    let Some(typ) = typ else { return Ok(()) };
    let t = typ.to_ascii_lowercase();
    let t = t.strip_prefix("application/").unwrap_or(&t);
    // `JWT` is what Keycloak before 25, Duende and older Authentik send; cross-JWT
    // confusion is still ruled out by the required `events` and the refused `nonce`
    // (Back-Channel Logout 1.0 §4.1). Any other explicit type (`at+jwt`, ...) is refused.
    if t == "logout+jwt" || t == "jwt" {
        Ok(())
    } else {
        Err(refused(format!("typ {typ:?} is not logout+jwt")))
    }
}

fn seconds(v: &Option<Value>, name: &str) -> Result<Option<Micros>, IdpError> {
    match v {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Some((s * 1e6) as Micros))
            .ok_or_else(|| refused(format!("{name} is not a number of seconds"))),
    }
}

fn check_claims(c: RawClaims, now: Micros) -> Result<LogoutToken, IdpError> {
    let skew = micros(CLOCK_SKEW);
    let iat = seconds(&c.iat, "iat")?.ok_or_else(|| refused("no iat"))?;
    if iat > now + skew {
        return Err(refused("issued in the future (iat)"));
    }
    let remember_until = iat + micros(LOGOUT_TOKEN_MAX_AGE) + skew;
    if now > remember_until {
        return Err(refused("too old (iat)"));
    }
    if seconds(&c.exp, "exp")?.is_some_and(|exp| now - skew >= exp) {
        return Err(refused("expired (exp)"));
    }
    let has_event = c
        .events
        .as_ref()
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return Err(refused("events has no back-channel logout event"));
    }
    if c.nonce.is_some() {
        return Err(refused("a logout token must not carry a nonce"));
    }
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let (sub, sid) = (nonempty(c.sub), nonempty(c.sid));
    if sub.is_none() && sid.is_none() {
        return Err(refused("neither sid nor sub"));
    }
    let jti = nonempty(c.jti).ok_or_else(|| refused("no jti"))?;
    Ok(LogoutToken {
        sub,
        sid,
        jti,
        iat,
        remember_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Micros = 1_700_000_000_000_000;

    fn raw(v: Value) -> RawClaims {
        serde_json::from_value(v).unwrap()
    }

    fn good() -> Value {
        json!({"iat": NOW / 1_000_000, "jti": "j1", "sid": "s1",
               "events": {BACKCHANNEL_LOGOUT_EVENT: {}}})
    }

    fn with(k: &str, v: Value) -> RawClaims {
        let mut g = good();
        g[k] = v;
        raw(g)
    }

    #[test]
    fn claims_rules() {
        let ok = check_claims(raw(good()), NOW).unwrap();
        assert_eq!((ok.sid.as_deref(), ok.jti.as_str()), (Some("s1"), "j1"));
        assert_eq!(
            ok.remember_until,
            NOW + micros(LOGOUT_TOKEN_MAX_AGE) + micros(CLOCK_SKEW)
        );
        let refuse = |c: RawClaims| check_claims(c, NOW).is_err();
        assert!(refuse(with("nonce", json!("n"))));
        assert!(refuse(with("events", json!({}))));
        assert!(refuse(with(
            "events",
            json!({BACKCHANNEL_LOGOUT_EVENT: "x"})
        )));
        assert!(refuse(with("sid", Value::Null)));
        assert!(!refuse({
            let mut g = good();
            g["sid"] = Value::Null;
            g["sub"] = json!("u1");
            raw(g)
        }));
        assert!(refuse(with("jti", Value::Null)));
        assert!(refuse(with("iat", json!(NOW / 1_000_000 + 61))));
        assert!(refuse(with("iat", json!(NOW / 1_000_000 - 181))));
        assert!(!refuse(with("iat", json!(NOW / 1_000_000 - 179))));
        assert!(refuse(with("exp", json!(NOW / 1_000_000 - 61))));
        assert!(refuse(with("iat", json!("yesterday"))));
    }

    #[test]
    fn typ_rules() {
        assert!(check_typ(None).is_ok());
        assert!(check_typ(Some("logout+jwt")).is_ok());
        assert!(check_typ(Some("application/logout+JWT")).is_ok());
        assert!(check_typ(Some("JWT")).is_ok());
        assert!(check_typ(Some("at+jwt")).is_err());
        assert!(check_typ(Some("secevent+jwt")).is_err());
    }
}
