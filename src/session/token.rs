//! Signed tokens: the global session (`aud` = the issuer) and the application token
//! (`aud` = the app name). Minting signs with the active key; verification checks the
//! signature once per token and node and caches what the per-request decision needs
//! (about 200 bytes a token), keyed by the token's SHA-256.

use super::keys::KeyRing;
use crate::clock::{Micros, secs};
use crate::secrets::ct_eq;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use compact_str::CompactString;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// What the revocation set looks at in a token: the minted [`Claims`] and the cached
/// [`CachedClaims`] both have it.
pub trait Subject {
    fn iat_us(&self) -> Micros;
    fn sid(&self) -> &str;
    fn sub(&self) -> &str;
    fn aud(&self) -> &str;
    fn groups(&self) -> &[String];
}

impl Subject for Claims {
    fn iat_us(&self) -> Micros {
        self.iat_us
    }
    fn sid(&self) -> &str {
        &self.sid
    }
    fn sub(&self) -> &str {
        &self.sub
    }
    fn aud(&self) -> &str {
        &self.aud
    }
    fn groups(&self) -> &[String] {
        &self.groups
    }
}

impl<T: Subject + ?Sized> Subject for Arc<T> {
    fn iat_us(&self) -> Micros {
        (**self).iat_us()
    }
    fn sid(&self) -> &str {
        (**self).sid()
    }
    fn sub(&self) -> &str {
        (**self).sub()
    }
    fn aud(&self) -> &str {
        (**self).aud()
    }
    fn groups(&self) -> &[String] {
        (**self).groups()
    }
}

/// What the cache keeps of a verified token: what the per-request decision reads, in
/// about 180 bytes. Issuer, audience and group list are shared between the tokens that
/// carry the same ones; ids and emails up to 24 bytes are stored inline. The token's
/// own `jti` is not kept.
#[derive(Debug)]
pub struct CachedClaims {
    pub iss: Arc<String>,
    pub aud: Arc<String>,
    pub groups: Arc<Vec<String>>,
    pub sub: CompactString,
    pub email: CompactString,
    /// The global session this token belongs to.
    pub sid: CompactString,
    pub iat: i64,
    pub exp: i64,
    pub iat_us: i64,
    /// The later of `iat` and `nbf`: before it (less a minute's leeway) the token is not
    /// valid yet.
    not_before: i64,
    /// SHA-256 of the binding cookie, for app tokens with one.
    binding: Option<[u8; 32]>,
}

impl CachedClaims {
    pub fn exp_us(&self) -> Micros {
        self.exp.saturating_mul(1_000_000)
    }

    /// The claims back as minting takes them (to issue app tokens from a session).
    /// `jti` is empty (it named the cached token, not a new one) and `nbf` is not kept.
    pub fn to_claims(&self) -> Claims {
        Claims {
            iss: self.iss.to_string(),
            aud: self.aud.to_string(),
            sub: self.sub.to_string(),
            email: self.email.to_string(),
            groups: self.groups.to_vec(),
            sid: self.sid.to_string(),
            jti: String::new(),
            iat: self.iat,
            exp: self.exp,
            nbf: None,
            iat_us: self.iat_us,
            bnd: self.binding.map(|b| URL_SAFE_NO_PAD.encode(b)),
        }
    }
}

impl Subject for CachedClaims {
    fn iat_us(&self) -> Micros {
        self.iat_us
    }
    fn sid(&self) -> &str {
        &self.sid
    }
    fn sub(&self) -> &str {
        &self.sub
    }
    fn aud(&self) -> &str {
        &self.aud
    }
    fn groups(&self) -> &[String] {
        &self.groups
    }
}

/// A verified token as one worker thread holds it: the shared cached claims, the token
/// itself as a ready `Portcullis-Jwt-Assertion` value (also what a hit is compared
/// against, byte for byte), and per-thread memos of the checks done on it.
#[derive(Debug)]
pub struct Verified {
    pub claims: Arc<CachedClaims>,
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
    fn new(claims: Arc<CachedClaims>, token: &str) -> Result<Self, TokenError> {
        Ok(Self {
            claims,
            assertion: http::HeaderValue::from_str(token).map_err(|_| TokenError::Malformed)?,
            bound: std::sync::OnceLock::new(),
            not_revoked_at: std::sync::atomic::AtomicU64::new(0),
            session: std::sync::OnceLock::new(),
        })
    }

    /// Does the presented binding cookie match the hash the token carries?
    pub fn binding_matches(&self, cookie: Option<&str>) -> bool {
        let (Some(want), Some(c)) = (&self.claims.binding, cookie) else {
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

/// The shared cache's key: the first 16 bytes of the token's SHA-256. Equal keys mean
/// the same token (a forged token would need a SHA-256 collision), so the cache holds no
/// token text; it is hashed only when this thread's cache does not know the token.
type Digest = [u8; 16];

fn digest(token: &str) -> Digest {
    let full = Sha256::digest(token.as_bytes());
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// Shares the strings many tokens carry (issuer, audiences, group lists). Bounded: past
/// `INTERN_MAX` distinct values it starts over (values in use stay alive in their
/// entries; only the sharing of new copies is lost).
#[derive(Default)]
struct Interner {
    strings: Mutex<HashSet<Arc<String>>>,
    groups: Mutex<HashSet<Arc<Vec<String>>>>,
}

const INTERN_MAX: usize = 4096;

fn intern<T: Eq + std::hash::Hash>(set: &Mutex<HashSet<Arc<T>>>, v: T) -> Arc<T> {
    let mut set = set.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = set.get(&v) {
        return a.clone();
    }
    if set.len() >= INTERN_MAX {
        set.clear();
    }
    let a = Arc::new(v);
    set.insert(a.clone());
    a
}

impl Interner {
    fn compact(&self, c: Claims, binding: Option<[u8; 32]>) -> CachedClaims {
        CachedClaims {
            iss: intern(&self.strings, c.iss),
            aud: intern(&self.strings, c.aud),
            groups: intern(&self.groups, c.groups),
            sub: c.sub.into(),
            email: c.email.into(),
            sid: c.sid.into(),
            iat: c.iat,
            exp: c.exp,
            iat_us: c.iat_us,
            not_before: c.nbf.map_or(c.iat, |nbf| nbf.max(c.iat)),
            binding,
        }
    }
}

/// Verifies tokens, caching what the decision needs, keyed so that no other token can
/// hit an entry. Bounded in size (quick_cache's S3-FIFO evicts the least useful
/// entries); every hit re-checks exp against the injected clock, so an expired entry is
/// never honoured, only kept until evicted.
///
/// Two levels: a small cache per worker thread answers the hits, keyed by the token's
/// signature segment and compared with the whole token, so a hit touches no shared state
/// and hashes ~86 bytes; the shared cache behind it holds every verified token once, so
/// each token's signature is still checked once per node, not once per thread.
pub struct Verifier {
    cache: quick_cache::sync::Cache<
        Digest,
        Arc<CachedClaims>,
        quick_cache::UnitWeighter,
        foldhash::fast::RandomState,
    >,
    interner: Interner,
    /// Tells the per-thread caches whose entries they hold (tests run several gateways
    /// in one process; one verifier's entries must never answer for another).
    id: u64,
    /// Seeds the per-thread caches' keys.
    local_seed: foldhash::fast::RandomState,
    /// Bumped when entries are dropped (`clear`, `forget`): the per-thread caches start
    /// over when they see a new value.
    epoch: AtomicU64,
}

/// Entries one thread keeps before it starts over.
const LOCAL_CAPACITY: usize = 4096;

/// One worker thread's cache in front of the shared one, keyed by a hash of the token's
/// signature segment (a hit is compared with the whole token).
struct Local {
    owner: u64,
    epoch: u64,
    map: HashMap<u64, Arc<Verified>, foldhash::fast::RandomState>,
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
        let capacity = capacity.max(1);
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(capacity as usize)
            .weight_capacity(capacity)
            // Remembering evicted keys helps workloads that cycle through more items
            // than fit; a token cache sized for its users rarely does, so keep few.
            .ghost_allocation(0.05)
            .build();
        let cache: quick_cache::sync::Cache<_, _, _, _> = match options {
            Ok(o) => quick_cache::sync::Cache::with_options(
                o,
                quick_cache::UnitWeighter,
                foldhash::fast::RandomState::default(),
                Default::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with(
                capacity as usize,
                capacity,
                quick_cache::UnitWeighter,
                foldhash::fast::RandomState::default(),
                Default::default(),
            ),
        };
        // Room for every entry up front: no slab doubling (and copying under a shard's
        // lock) while the cache fills, and no half-empty doubled slab once full.
        cache.reserve(capacity as usize);
        Self {
            cache,
            interner: Interner::default(),
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
            local_seed: foldhash::fast::RandomState::default(),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.len() as u64
    }

    pub fn clear(&self) {
        self.cache.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn forget(&self, token: &str) {
        self.cache.remove(&digest(token));
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn local_key(&self, token: &str) -> u64 {
        use std::hash::BuildHasher;
        // The signature segment: ES256 signatures are randomised, so distinct tokens
        // have distinct keys (equal keys only cost a comparison).
        self.local_seed
            .hash_one(token.rsplit('.').next().unwrap_or(token))
    }

    /// This thread's cached verification of exactly `token`, if any.
    fn local_get(&self, key: u64, token: &str, epoch: u64) -> Option<Arc<Verified>> {
        LOCAL.with(|l| {
            let mut l = l.try_borrow_mut().ok()?;
            if l.owner != self.id || l.epoch != epoch {
                l.map.clear();
                l.owner = self.id;
                l.epoch = epoch;
                return None;
            }
            l.map
                .get(&key)
                .filter(|v| v.assertion.as_bytes() == token.as_bytes())
                .cloned()
        })
    }

    /// Keeps a verified token in this thread's cache, unless entries were dropped since
    /// `epoch` was read (the verification may predate a key leaving the ring).
    fn local_put(&self, key: u64, v: &Arc<Verified>, epoch: u64) {
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
            l.map.insert(key, v.clone());
        });
    }

    /// Verifies `token` for audience `aud`. Returns whether a cache answered.
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
        let key = self.local_key(token);
        let epoch = self.epoch.load(Ordering::Acquire);
        let (v, hit) = match self.local_get(key, token, epoch) {
            Some(v) => (v, true),
            None => {
                let (v, hit) = self.shared_verify(keys, token, iss, epoch)?;
                self.local_put(key, &v, epoch);
                (v, hit)
            }
        };
        let c = &v.claims;
        check_times(c.not_before, c.exp, now_us)?;
        if *c.aud != aud {
            return Err(TokenError::WrongAudience);
        }
        if *c.iss != iss {
            return Err(TokenError::Invalid);
        }
        Ok((v, hit))
    }

    /// The shared cache's verdict on `token`, or a full verification kept there.
    fn shared_verify(
        &self,
        keys: &KeyRing,
        token: &str,
        iss: &str,
        epoch: u64,
    ) -> Result<(Arc<Verified>, bool), TokenError> {
        let d = digest(token);
        if let Some(c) = self.cache.get(&d) {
            return Ok((Arc::new(Verified::new(c, token)?), true));
        }
        let (claims, binding) = check_signature(keys, token, iss)?;
        let c = Arc::new(self.interner.compact(claims, binding));
        // A verification that raced with `clear` (a key leaving the ring) answers this
        // request but is not kept.
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.cache.insert(d, c.clone());
        }
        Ok((Arc::new(Verified::new(c, token)?), false))
    }
}

/// `not_before` is the later of `iat` and `nbf`.
fn check_times(not_before: i64, exp: i64, now_us: Micros) -> Result<(), TokenError> {
    let now = secs(now_us);
    if now >= exp {
        return Err(TokenError::Expired);
    }
    // One minute of leeway for `nbf` and `iat` absorbs clock differences between nodes.
    if not_before > now + 60 {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// The full check, done once per token: structure, header, key, signature, claims.
/// Returns the claims as a cache entry of their own (not shared with other tokens).
pub fn verify_signature(keys: &KeyRing, token: &str, iss: &str) -> Result<Verified, TokenError> {
    let (claims, binding) = check_signature(keys, token, iss)?;
    let c = Interner::default().compact(claims, binding);
    Verified::new(Arc::new(c), token)
}

/// Structure, header, key, signature and claims; the binding hash decoded.
fn check_signature(
    keys: &KeyRing,
    token: &str,
    iss: &str,
) -> Result<(Claims, Option<[u8; 32]>), TokenError> {
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
    Ok((claims, binding))
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
    fn cache_entries_share_strings_keep_no_token_and_refuse_a_borrowed_signature() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyRing::load_or_create(dir.path()).unwrap();
        let now = 1_900_000_000i64;
        let us = now * 1_000_000;
        let v = Verifier::new(100);
        let (a, b) = (
            claims(now),
            Claims {
                sub: "b@example.com".into(),
                email: "b@example.com".into(),
                sid: "sid2".into(),
                ..claims(now)
            },
        );
        let (ta, tb) = (sign(&keys, &a).unwrap(), sign(&keys, &b).unwrap());
        let check = |t: &str| v.verify(&keys, t, "echo", "https://auth.test", us);
        let (va, vb) = (check(&ta).unwrap().0, check(&tb).unwrap().0);
        assert!(Arc::ptr_eq(&va.claims.groups, &vb.claims.groups));
        assert!(Arc::ptr_eq(&va.claims.iss, &vb.claims.iss));
        assert!(Arc::ptr_eq(&va.claims.aud, &vb.claims.aud));
        assert_eq!(va.claims.email, "a@example.com");
        assert_eq!(&*vb.claims.sid, "sid2");
        assert_eq!(va.assertion.as_bytes(), ta.as_bytes());
        // What the cache stores is small: the claims inline, no token text.
        assert!(std::mem::size_of::<CachedClaims>() <= 168);
        // A's payload under B's signature: not B's entry, in this thread or another
        // (which has no per-thread entry and asks the shared cache).
        let pa = ta.split('.').nth(1).unwrap();
        let mut parts: Vec<&str> = tb.split('.').collect();
        parts[1] = pa;
        let forged = parts.join(".");
        assert_eq!(check(&forged).unwrap_err(), TokenError::Invalid);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(check(&forged).unwrap_err(), TokenError::Invalid);
                let (again, hit) = check(&tb).unwrap();
                assert!(hit, "answered by the shared cache");
                assert_eq!(again.assertion.as_bytes(), tb.as_bytes());
                assert_eq!(again.claims.email, "b@example.com");
            });
        });
        // Back to the claims minting takes, for a session's app tokens.
        let back = va.claims.to_claims();
        assert_eq!(
            (back.sub, back.groups, back.iat_us),
            (a.sub, a.groups, a.iat_us)
        );
        assert_eq!(back.bnd, a.bnd);
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
