//! Signed tokens: the global session (`aud` = the issuer) and the application token
//! (`aud` = the app name). Minting signs with the active key; verification checks the
//! signature once and caches the verified claims keyed by the whole token string.

use super::keys::KeyRing;
use crate::clock::{Micros, secs};
use crate::secrets::ct_eq;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub email: String,
    pub groups: Vec<String>,
    /// The global session this token belongs to.
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issue time in microseconds: revocations compare against this, so a token minted
    /// right after a revocation passes even within the same second.
    pub iat_us: i64,
    /// base64url(SHA-256(binding cookie)), for app tokens with a binding cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bnd: Option<String>,
}

impl Claims {
    pub fn exp_us(&self) -> Micros {
        self.exp.saturating_mul(1_000_000)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token too large")]
    TooLarge,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token")]
    Invalid,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("binding cookie missing or does not match")]
    Binding,
    #[error("cannot sign token")]
    Sign,
}

/// What the cache holds for a verified token.
#[derive(Debug)]
pub struct Verified {
    pub claims: Claims,
    pub binding: Option<[u8; 32]>,
    /// The token itself as a ready header value for `Portcullis-Jwt-Assertion`; also
    /// what a cache hit is compared against, byte for byte.
    pub assertion: http::HeaderValue,
    /// The binding cookie value once it has matched, so later requests compare strings
    /// instead of hashing again.
    bound: std::sync::OnceLock<Box<str>>,
    /// The revocation-set version (plus one) at which this token was last found not
    /// revoked; while the set stays at that version the lookups are skipped.
    pub not_revoked_at: std::sync::atomic::AtomicU64,
    /// This node's registry entry for the token's session, looked up once.
    pub session: std::sync::OnceLock<Option<Arc<crate::session::registry::Session>>>,
}

pub fn binding_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn binding_claim(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(binding_hash(secret))
}

impl Verified {
    /// Does the presented binding cookie match the hash the token carries?
    pub fn binding_matches(&self, cookie: Option<&str>) -> bool {
        let (Some(want), Some(c)) = (&self.binding, cookie) else {
            return false;
        };
        if let Some(seen) = self.bound.get() {
            return ct_eq(seen.as_bytes(), c.as_bytes());
        }
        let ok = ct_eq(want, &binding_hash(c));
        if ok {
            let _ = self.bound.set(c.into());
        }
        ok
    }
}

pub fn sign(keys: &KeyRing, claims: &Claims) -> Result<String, TokenError> {
    jsonwebtoken::encode(keys.header(), claims, keys.encoding()).map_err(|_| TokenError::Sign)
}

struct ExpireAtExp;

/// The cache key: a token's signature segment. ES256 signatures are randomised, so
/// distinct tokens have distinct keys; a hit is still compared with the whole token, so
/// a token that reuses another's signature never gets its claims. Hashing ~86 bytes
/// instead of the whole token keeps the cache hit cheap.
fn cache_key(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

type Key = Box<str>;

impl moka::Expiry<Key, Arc<Verified>> for ExpireAtExp {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // Evict no later than the token's own expiry (by wall time at insertion).
        let now = crate::clock::SystemClock;
        let left = value.claims.exp_us() - crate::clock::Clock::now_us(&now);
        Some(Duration::from_micros(left.max(0) as u64))
    }
}

/// Verifies tokens, caching verified claims keyed by the exact token string so no other
/// token can hit an entry. Bounded in size; entries leave no later than the token's exp,
/// and every hit re-checks exp against the injected clock.
///
/// Two levels: a small cache per worker thread answers the hits, so a hit touches no
/// shared state; the shared cache behind it (moka records every read in a shared queue
/// and now and then takes its housekeeping lock) holds every verified token, so each
/// token's signature is still checked once per node, not once per thread.
pub struct Verifier {
    cache: Cache<Key, Arc<Verified>, foldhash::fast::RandomState>,
    /// Tells the per-thread caches whose entries they hold (tests run several gateways
    /// in one process; one verifier's entries must never answer for another).
    id: u64,
    /// Bumped when entries are dropped (`clear`, `forget`): the per-thread caches start
    /// over when they see a new value.
    epoch: AtomicU64,
}

/// Entries one thread keeps before it starts over.
const LOCAL_CAPACITY: usize = 4096;

/// One worker thread's cache in front of the shared one.
struct Local {
    owner: u64,
    epoch: u64,
    map: HashMap<Key, Arc<Verified>, foldhash::fast::RandomState>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local {
        owner: 0,
        epoch: 0,
        map: HashMap::default(),
    });
}

static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

impl Verifier {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(ExpireAtExp)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn forget(&self, token: &str) {
        self.cache.invalidate(cache_key(token));
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// This thread's cached verification of exactly `token`, if any.
    fn local_get(&self, key: &str, token: &str, epoch: u64) -> Option<Arc<Verified>> {
        LOCAL.with(|l| {
            let mut l = l.try_borrow_mut().ok()?;
            if l.owner != self.id || l.epoch != epoch {
                l.map.clear();
                l.owner = self.id;
                l.epoch = epoch;
                return None;
            }
            l.map
                .get(key)
                .filter(|v| v.assertion.as_bytes() == token.as_bytes())
                .cloned()
        })
    }

    /// Keeps a verified token in this thread's cache, unless entries were dropped since
    /// `epoch` was read (the verification may predate a key leaving the ring).
    fn local_put(&self, key: &str, v: &Arc<Verified>, epoch: u64) {
        LOCAL.with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return;
            };
            if l.owner != self.id || l.epoch != epoch {
                return;
            }
            if l.map.len() >= LOCAL_CAPACITY {
                l.map.clear();
            }
            l.map.insert(key.into(), v.clone());
        });
    }

    /// Verifies `token` for audience `aud`. Returns whether the cache answered.
    pub fn verify(
        &self,
        keys: &KeyRing,
        token: &str,
        aud: &str,
        iss: &str,
        now_us: Micros,
    ) -> Result<(Arc<Verified>, bool), TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let key = cache_key(token);
        let epoch = self.epoch.load(Ordering::Acquire);
        let (v, hit) = match self.local_get(key, token, epoch) {
            Some(v) => (v, true),
            None => match self.cache.get(key) {
                Some(v) if v.assertion.as_bytes() == token.as_bytes() => {
                    self.local_put(key, &v, epoch);
                    (v, true)
                }
                // Same signature segment, different token: verify it from scratch and
                // leave the genuine entry where it is.
                Some(_) => (Arc::new(verify_signature(keys, token, iss)?), false),
                None => {
                    let v = Arc::new(verify_signature(keys, token, iss)?);
                    self.cache.insert(key.into(), v.clone());
                    self.local_put(key, &v, epoch);
                    (v, false)
                }
            },
        };
        check_times(&v.claims, now_us)?;
        if v.claims.aud != aud {
            return Err(TokenError::WrongAudience);
        }
        if v.claims.iss != iss {
            return Err(TokenError::Invalid);
        }
        Ok((v, hit))
    }
}

fn check_times(c: &Claims, now_us: Micros) -> Result<(), TokenError> {
    let now = secs(now_us);
    if now >= c.exp {
        return Err(TokenError::Expired);
    }
    // One minute of leeway for `nbf` and `iat` absorbs clock differences between nodes.
    if c.nbf.is_some_and(|nbf| nbf > now + 60) || c.iat > now + 60 {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// The full check, done once per token: structure, header, key, signature, claims.
pub fn verify_signature(keys: &KeyRing, token: &str, iss: &str) -> Result<Verified, TokenError> {
    // Base64url segments and two dots, nothing else (the cookie parser leaves this
    // check to here for app tokens).
    let token_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    if token.bytes().filter(|&b| b == b'.').count() != 2 || !token.bytes().all(token_byte) {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::ES256 {
        return Err(TokenError::Invalid);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    let key = keys.decoding(&kid).ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::ES256);
    // Times are checked against the injected clock in `check_times`, audience per app.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.set_issuer(&[iss]);
    let data =
        jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|_| TokenError::Invalid)?;
    let claims = data.claims;
    let binding = match &claims.bnd {
        Some(b) => {
            let raw = URL_SAFE_NO_PAD.decode(b).map_err(|_| TokenError::Invalid)?;
            let arr: [u8; 32] = raw.try_into().map_err(|_| TokenError::Invalid)?;
            Some(arr)
        }
        None => None,
    };
    let assertion = http::HeaderValue::from_str(token).map_err(|_| TokenError::Malformed)?;
    Ok(Verified {
        claims,
        binding,
        assertion,
        bound: std::sync::OnceLock::new(),
        not_revoked_at: std::sync::atomic::AtomicU64::new(0),
        session: std::sync::OnceLock::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "https://auth.test".into(),
            aud: "echo".into(),
            sub: "a@example.com".into(),
            email: "a@example.com".into(),
            groups: vec!["staff".into()],
            sid: "sid1".into(),
            jti: "j".into(),
            iat: now,
            exp: now + 60,
            nbf: None,
            iat_us: now * 1_000_000,
            bnd: Some(binding_claim("secret")),
        }
    }

    #[test]
    fn sign_verify_cache_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyRing::load_or_create(dir.path()).unwrap();
        let now = 1_900_000_000i64;
        let tok = sign(&keys, &claims(now)).unwrap();
        let v = Verifier::new(100);
        let us = now * 1_000_000;
        let (ok, hit) = v
            .verify(&keys, &tok, "echo", "https://auth.test", us)
            .unwrap();
        assert!(!hit);
        assert!(ok.binding_matches(Some("secret")));
        assert!(!ok.binding_matches(Some("other")));
        assert!(!ok.binding_matches(None));
        let (_, hit) = v
            .verify(&keys, &tok, "echo", "https://auth.test", us)
            .unwrap();
        assert!(hit);
        assert_eq!(
            v.verify(&keys, &tok, "other", "https://auth.test", us)
                .unwrap_err(),
            TokenError::WrongAudience
        );
        assert_eq!(
            v.verify(&keys, &tok, "echo", "https://auth.test", us + 61_000_000)
                .unwrap_err(),
            TokenError::Expired
        );
        // Tampered payload.
        let mut parts: Vec<String> = tok.split('.').map(String::from).collect();
        let mut c = claims(now);
        c.sub = "evil@example.com".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let forged = parts.join(".");
        assert!(
            v.verify(&keys, &forged, "echo", "https://auth.test", us)
                .is_err()
        );
        assert_eq!(
            v.verify(&keys, "a.b", "echo", "https://auth.test", us)
                .unwrap_err(),
            TokenError::Malformed
        );
        // A genuine token with a byte that base64url does not have, even one the
        // decoder might skip, is refused before any decoding.
        for bad in [" ", "\"", "=", "+", "\u{e9}"] {
            let mut odd = tok.clone();
            odd.insert_str(tok.len() - 4, bad);
            assert_eq!(
                v.verify(&keys, &odd, "echo", "https://auth.test", us)
                    .unwrap_err(),
                TokenError::Malformed,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn thread_caches_belong_to_one_verifier_and_follow_clear() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ka, kb) = (
            KeyRing::load_or_create(da.path()).unwrap(),
            KeyRing::load_or_create(db.path()).unwrap(),
        );
        let now = 1_900_000_000i64;
        let us = now * 1_000_000;
        let tok = sign(&ka, &claims(now)).unwrap();
        let (va, vb) = (Verifier::new(100), Verifier::new(100));
        let check = |v: &Verifier, k: &KeyRing| v.verify(k, &tok, "echo", "https://auth.test", us);
        assert!(!check(&va, &ka).unwrap().1);
        assert!(check(&va, &ka).unwrap().1);
        // Same thread, another gateway with other keys: its own verdict, not va's entry.
        assert_eq!(check(&vb, &kb).unwrap_err(), TokenError::UnknownKey);
        assert!(check(&va, &ka).unwrap().1);
        // Another thread is answered by the shared cache: no second signature check.
        std::thread::scope(|s| {
            s.spawn(|| assert!(check(&va, &ka).unwrap().1));
        });
        va.clear();
        assert!(
            !check(&va, &ka).unwrap().1,
            "clear reaches this thread's cache"
        );
        assert!(check(&va, &ka).unwrap().1);
        va.forget(&tok);
        assert!(
            !check(&va, &ka).unwrap().1,
            "forget reaches this thread's cache"
        );
    }
}
