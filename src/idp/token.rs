//! ID token checks and the identity they yield. The JWS and the standard claims are
//! checked by openidconnect's `IdTokenVerifier` (signature against the cached JWKS,
//! `iss`, `aud`, `exp`, `iat`, `nonce`); here we add what it leaves to the client:
//! `azp`, clock skew, `iat` age, and the checks that make a sign-in usable (email,
//! groups) and fresh enough (`auth_time`, `acr`).

use super::pending::PendingAuth;
use super::provider::{Provider, error_chain};
use super::{CLOCK_SKEW, ID_TOKEN_MAX_AGE, IdpConfig, IdpError, micros};
use crate::clock::Micros;
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenClaims, IdTokenVerifier,
    IssuerUrl, Nonce, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who signed in, as the IdP vouched for it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdpIdentity {
    /// The `[[idp]]` name.
    pub idp: String,
    /// The verified email, lowercased.
    pub email: String,
    pub groups: Vec<String>,
    /// The IdP's subject identifier (stable per user and IdP).
    pub sub: String,
    /// The IdP's session id (`sid` claim): the key back-channel logout tokens use.
    pub sid: Option<String>,
    /// When the user last authenticated at the IdP (µs), if it said.
    pub auth_time: Option<Micros>,
    pub acr: Option<String>,
    /// The raw ID token, for `id_token_hint` at RP-initiated logout.
    pub id_token: String,
}

impl std::fmt::Debug for IdpIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpIdentity")
            .field("idp", &self.idp)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("sub", &self.sub)
            .field("sid", &self.sid)
            .field("auth_time", &self.auth_time)
            .field("acr", &self.acr)
            .finish_non_exhaustive()
    }
}

/// The claims openidconnect does not model (`sid`, the groups claim, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Extra(Map<String, Value>);
impl AdditionalClaims for Extra {}

type Claims = IdTokenClaims<Extra, CoreGenderClaim>;
type Token =
    IdToken<Extra, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// Asymmetric algorithms only: HS* would make the client secret a signing key.
const ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

fn at(us: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Signature and standard claims, refetching the JWKS once when the key is unknown.
pub(crate) async fn verify(
    p: &Provider,
    raw: &str,
    nonce: &str,
    now: Micros,
) -> Result<Claims, IdpError> {
    let token: Token = raw
        .parse()
        .map_err(|e| IdpError::TokenRefused(format!("not a signed JWT: {e}")))?;
    let keys = p.keys.current();
    let first = check(p.config(), &token, &keys.oidc, nonce, now);
    let result = match first {
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => match p.keys.refetch(&keys, p.http(), now).await {
            Some(newer) => check(p.config(), &token, &newer.oidc, nonce, now),
            None => first,
        },
        other => other,
    };
    let claims = result.map_err(refusal)?;
    check_azp(&claims, &p.config().client_id)?;
    Ok(claims)
}

fn check(
    cfg: &IdpConfig,
    token: &Token,
    keys: &openidconnect::core::CoreJsonWebKeySet,
    nonce: &str,
    now: Micros,
) -> Result<Claims, ClaimsVerificationError> {
    let issuer = IssuerUrl::new(cfg.issuer.clone())
        .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
    let skew = micros(CLOCK_SKEW);
    let verifier = IdTokenVerifier::new_public_client(
        ClientId::new(cfg.client_id.clone()),
        issuer,
        keys.clone(),
    )
    .set_allowed_algs(ALGS)
    // `exp` is compared with this instant: giving it `now - skew` allows the skew.
    .set_time_fn(move || at(now - skew))
    .set_issue_time_verifier_fn(move |iat| {
        let iat = iat.timestamp_micros();
        if iat > now + skew {
            Err(format!("issued in the future (iat {})", iat / 1_000_000))
        } else if iat < now - micros(ID_TOKEN_MAX_AGE) - skew {
            Err(format!("issued too long ago (iat {})", iat / 1_000_000))
        } else {
            Ok(())
        }
    });
    token
        .claims(&verifier, &Nonce::new(nonce.to_string()))
        .cloned()
}

fn refusal(e: ClaimsVerificationError) -> IdpError {
    let reason = match &e {
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => "signed with a key the identity provider does not publish".to_string(),
        _ => error_chain(&e),
    };
    IdpError::TokenRefused(reason)
}

/// OpenID Connect Core §3.1.3.7 steps 4–5: with several audiences an `azp` is required,
/// and an `azp` must be us.
fn check_azp(claims: &Claims, client_id: &str) -> Result<(), IdpError> {
    match claims.authorized_party() {
        Some(azp) if azp.as_str() != client_id => Err(IdpError::TokenRefused(format!(
            "issued to another client (azp {})",
            azp.as_str()
        ))),
        None if claims.audiences().len() > 1 => Err(IdpError::TokenRefused(
            "several audiences and no azp".into(),
        )),
        _ => Ok(()),
    }
}

/// The identity an accepted ID token names.
pub(crate) fn identity(
    cfg: &IdpConfig,
    claims: &Claims,
    raw: &str,
) -> Result<IdpIdentity, IdpError> {
    let email = claims
        .email()
        .map(|e| e.as_str().trim().to_lowercase())
        .filter(|e| e.contains('@'))
        .ok_or_else(|| IdpError::IdentityRefused("the ID token has no email claim".into()))?;
    if claims.email_verified() == Some(false) {
        return Err(IdpError::IdentityRefused(format!(
            "the email {email} is not verified at the identity provider"
        )));
    }
    let extra = &claims.additional_claims().0;
    let groups = match extra.get(&cfg.groups_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| g.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad_groups(cfg))?,
        Some(_) => return Err(bad_groups(cfg)),
    };
    let sid = extra.get("sid").and_then(Value::as_str).map(str::to_string);
    Ok(IdpIdentity {
        idp: cfg.name.clone(),
        email,
        groups,
        sub: claims.subject().as_str().to_string(),
        sid,
        auth_time: claims.auth_time().map(|t| t.timestamp_micros()),
        acr: claims.auth_context_ref().map(|a| a.as_str().to_string()),
        id_token: raw.to_string(),
    })
}

fn bad_groups(cfg: &IdpConfig) -> IdpError {
    IdpError::IdentityRefused(format!(
        "the {} claim is not a list of strings",
        cfg.groups_claim
    ))
}

impl IdpIdentity {
    /// Re-authentication checks: `auth_time` must not be before `reauth_after`, and
    /// `acr` must be one of the values `pending` asked for. `auth_time` has whole
    /// seconds, so it is compared with the second `reauth_after` falls in. No clock
    /// skew is allowed here: it would be a window for an IdP session from just before
    /// the revocation. An IdP whose clock is behind ours refuses a re-login made within
    /// that lag once; the retry passes.
    ///
    /// [`Provider::exchange`] runs it with the `reauth_after` it is given; call it
    /// again once the identity is known if the instant depends on who signed in.
    pub fn check_fresh(
        &self,
        pending: &PendingAuth,
        reauth_after: Option<Micros>,
    ) -> Result<(), IdpError> {
        if let Some(required) = reauth_after {
            let floor = required.div_euclid(1_000_000) * 1_000_000;
            if self.auth_time.is_none_or(|t| t < floor) {
                return Err(IdpError::ReauthRequired {
                    auth_time: self.auth_time,
                    required,
                });
            }
        }
        let asked = &pending.acr_values;
        if !asked.is_empty() && !self.acr.as_ref().is_some_and(|a| asked.contains(a)) {
            return Err(IdpError::AcrNotSatisfied {
                acr: self.acr.clone(),
                wanted: asked.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(auth_time: Option<Micros>, acr: Option<&str>) -> IdpIdentity {
        IdpIdentity {
            idp: "corp".into(),
            email: "a@example.com".into(),
            groups: vec![],
            sub: "s".into(),
            sid: None,
            auth_time,
            acr: acr.map(str::to_string),
            id_token: String::new(),
        }
    }

    fn pending(acr: &[&str]) -> PendingAuth {
        PendingAuth {
            idp: "corp".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            created: 0,
            force_reauth: !acr.is_empty(),
            acr_values: acr.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn auth_time_is_compared_in_whole_seconds() {
        let revoked = 1_000_500_000; // 1000.5 s
        let p = pending(&[]);
        let fresh = |t: Micros| ident(Some(t), None).check_fresh(&p, Some(revoked));
        assert_eq!(fresh(1_000_000_000), Ok(()), "same second");
        assert_eq!(fresh(1_001_000_000), Ok(()));
        assert_eq!(
            fresh(999_000_000),
            Err(IdpError::ReauthRequired {
                auth_time: Some(999_000_000),
                required: revoked
            })
        );
        assert!(matches!(
            ident(None, None).check_fresh(&p, Some(revoked)),
            Err(IdpError::ReauthRequired {
                auth_time: None,
                ..
            })
        ));
        assert_eq!(ident(None, None).check_fresh(&p, None), Ok(()));
    }

    #[test]
    fn acr_must_be_one_asked_for() {
        let p = pending(&["urn:mfa"]);
        assert_eq!(ident(None, Some("urn:mfa")).check_fresh(&p, None), Ok(()));
        assert!(matches!(
            ident(None, Some("urn:pwd")).check_fresh(&p, None),
            Err(IdpError::AcrNotSatisfied { .. })
        ));
        assert!(matches!(
            ident(None, None).check_fresh(&p, None),
            Err(IdpError::AcrNotSatisfied { .. })
        ));
        assert_eq!(ident(None, None).check_fresh(&pending(&[]), None), Ok(()));
    }
}
