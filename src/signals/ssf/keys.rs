//! The transmitter's signing keys: a JWKS from a file (fixed) or from a URL (fetched on
//! first use, again when older than `keys_max_age`, and again when a SET names a `kid`
//! we do not hold, at most once per `refetch_min_interval` so forged `kid`s cannot make
//! us hammer the transmitter). Only RS256 and ES256 keys for signing are kept.

use crate::clock::Micros;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?}, {:?})", self.kid, self.alg)
    }
}

/// Keys usable for SET signatures from a JWKS document; other keys are skipped.
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    Ok(keys.iter().filter_map(key_of).collect())
}

fn key_of(v: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(v.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(p))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub refetch_min_interval: Duration,
    pub keys_max_age: Duration,
    pub fetch_timeout: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            refetch_min_interval: Duration::from_secs(60),
            keys_max_age: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
pub struct State {
    keys: Arc<Vec<Key>>,
    fetched_at: Option<Micros>,
    last_attempt: Option<Micros>,
}

pub enum Source {
    Fixed(Arc<Vec<Key>>),
    Url {
        url: String,
        http: reqwest::Client,
        state: RwLock<State>,
        /// One fetch at a time; others wait and then use its result.
        fetching: tokio::sync::Mutex<()>,
    },
}

/// Why no key could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No key with this kid/alg, even after a refetch (or a refetch was too recent).
    Unknown,
    /// The JWKS could not be fetched and no keys are held.
    Unavailable(String),
}

fn us(d: Duration) -> Micros {
    d.as_micros().min(i64::MAX as u128) as Micros
}

impl Source {
    pub fn url(url: String, policy: &KeyPolicy) -> Result<Source, String> {
        let http = reqwest::Client::builder()
            .timeout(policy.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Source::Url {
            url,
            http,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Keys for a SET header's `kid` (None: every key) and `alg`.
    pub async fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: Micros,
        p: &KeyPolicy,
    ) -> Result<Vec<Key>, KeyError> {
        let select = |keys: &[Key]| -> Vec<Key> {
            keys.iter()
                .filter(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
                .cloned()
                .collect()
        };
        let state = match self {
            Source::Fixed(keys) => {
                let found = select(keys);
                return if found.is_empty() {
                    Err(KeyError::Unknown)
                } else {
                    Ok(found)
                };
            }
            Source::Url { state, .. } => state,
        };
        let (keys, fetched_at) = self.snapshot(state);
        let stale = fetched_at.is_none_or(|t| now - t > us(p.keys_max_age));
        let found = select(&keys);
        if !stale && !found.is_empty() {
            return Ok(found);
        }
        match self.refresh(now, p, stale).await {
            Ok(fresh) => {
                let found = select(&fresh);
                if found.is_empty() {
                    Err(KeyError::Unknown)
                } else {
                    Ok(found)
                }
            }
            // Stale keys still verify while the transmitter cannot be reached.
            Err(_) if !found.is_empty() => Ok(found),
            Err(e) => Err(e),
        }
    }

    fn snapshot(&self, state: &RwLock<State>) -> (Arc<Vec<Key>>, Option<Micros>) {
        state
            .read()
            .map(|s| (s.keys.clone(), s.fetched_at))
            .unwrap_or_default()
    }

    /// Fetches the JWKS unless another fetch happened within `refetch_min_interval`
    /// (a stale cache is refetched regardless of that interval).
    pub async fn refresh(
        &self,
        now: Micros,
        p: &KeyPolicy,
        stale: bool,
    ) -> Result<Arc<Vec<Key>>, KeyError> {
        let (url, http, state, fetching) = match self {
            Source::Fixed(k) => return Ok(k.clone()),
            Source::Url {
                url,
                http,
                state,
                fetching,
            } => (url, http, state, fetching),
        };
        let _one = fetching.lock().await;
        let last = state.read().ok().and_then(|s| s.last_attempt);
        let recent = last.is_some_and(|t| now - t < us(p.refetch_min_interval));
        if recent {
            let (keys, fetched_at) = self.snapshot(state);
            let fresh_enough = fetched_at.is_some_and(|t| now - t <= us(p.keys_max_age));
            if fresh_enough || !stale {
                return if keys.is_empty() {
                    Err(KeyError::Unknown)
                } else {
                    Ok(keys)
                };
            }
        }
        if let Ok(mut s) = state.write() {
            s.last_attempt = Some(now);
        }
        let keys = Arc::new(fetch(http, url).await.map_err(KeyError::Unavailable)?);
        if let Ok(mut s) = state.write() {
            s.keys = keys.clone();
            s.fetched_at = Some(now);
        }
        tracing::info!(url = %url, keys = keys.len(), "fetched the SSF transmitter's JWKS");
        Ok(keys)
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<Key>, String> {
    let mut resp = http
        .get(url)
        .header("accept", "application/jwk-set+json, application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "GET {url}: JWKS larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    parse_jwks(&body).map_err(|e| format!("GET {url}: {e}"))
}
