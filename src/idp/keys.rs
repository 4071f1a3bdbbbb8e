//! The IdP's signing keys (its JWKS), cached, in the two shapes the two verifiers need
//! (openidconnect's for ID tokens, jsonwebtoken's for logout tokens), and refetched
//! when a token names a key we do not have: at most once per `JWKS_REFETCH_INTERVAL`,
//! so a flood of tokens with made-up `kid`s cannot turn us into a JWKS fetch loop.

use super::{JWKS_REFETCH_INTERVAL, micros};
use crate::clock::Micros;
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use openidconnect::JsonWebKeySetUrl;
use openidconnect::core::CoreJsonWebKeySet;
use std::sync::Arc;

/// One version of the key set.
pub(crate) struct Keys {
    pub oidc: CoreJsonWebKeySet,
    /// Signature keys jsonwebtoken can use (encryption and unparseable keys left out).
    pub jwt: Vec<Jwk>,
    /// Bumped on every successful fetch, so concurrent refetches collapse into one.
    generation: u64,
}

impl Keys {
    fn new(oidc: CoreJsonWebKeySet, generation: u64) -> Keys {
        let jwt = oidc
            .keys()
            .iter()
            .filter_map(|k| serde_json::to_value(k).ok())
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .collect();
        Keys {
            oidc,
            jwt,
            generation,
        }
    }

    /// The key for a JWS with this `kid` and `alg`: by `kid` when the token names one,
    /// otherwise the only key of the algorithm's family. `None`: no such key (yet).
    pub fn decoding_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let fits = |k: &&Jwk| {
            k.common
                .key_algorithm
                .is_none_or(|a| a.to_string() == format!("{alg:?}"))
                && family_of(k) == Some(alg.family())
        };
        let mut candidates = self.jwt.iter().filter(fits).filter(|k| match kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid),
            None => true,
        });
        let key = candidates.next()?;
        if kid.is_none() && candidates.next().is_some() {
            return None; // ambiguous without a kid
        }
        DecodingKey::from_jwk(key).ok()
    }
}

fn family_of(k: &Jwk) -> Option<jsonwebtoken::AlgorithmFamily> {
    use jsonwebtoken::AlgorithmFamily as F;
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    match k.algorithm {
        P::RSA(_) => Some(F::Rsa),
        P::EllipticCurve(_) => Some(F::Ec),
        P::OctetKeyPair(_) => Some(F::Ed),
        P::OctetKey(_) => None, // shared secrets are never IdP signing keys here
    }
}

pub(crate) struct KeyCache {
    url: JsonWebKeySetUrl,
    current: ArcSwap<Keys>,
    /// When the last unknown-key refetch ran; the lock also serialises refetches.
    last_refetch: tokio::sync::Mutex<Option<Micros>>,
}

impl KeyCache {
    pub fn new(url: JsonWebKeySetUrl, keys: CoreJsonWebKeySet) -> KeyCache {
        KeyCache {
            url,
            current: ArcSwap::from_pointee(Keys::new(keys, 0)),
            last_refetch: tokio::sync::Mutex::new(None),
        }
    }

    pub fn current(&self) -> Arc<Keys> {
        self.current.load_full()
    }

    /// Fetches the JWKS again because a token named a key that `seen` lacks. Returns
    /// the keys to retry with, or `None` when no newer keys can be had now (fetched
    /// too recently, or the fetch failed).
    pub async fn refetch(
        &self,
        seen: &Keys,
        http: &reqwest::Client,
        now: Micros,
    ) -> Option<Arc<Keys>> {
        let mut last = self.last_refetch.lock().await;
        let cur = self.current();
        if cur.generation != seen.generation {
            return Some(cur); // another request refetched while we waited
        }
        if last.is_some_and(|t| now - t < micros(JWKS_REFETCH_INTERVAL)) {
            tracing::debug!(jwks = %self.url.as_str(), "unknown signing key; JWKS refetched too recently");
            return None;
        }
        *last = Some(now);
        match CoreJsonWebKeySet::fetch_async(&self.url, http).await {
            Ok(set) => {
                let keys = Arc::new(Keys::new(set, cur.generation + 1));
                tracing::info!(jwks = %self.url.as_str(), keys = keys.oidc.keys().len(), "JWKS refetched after an unknown signing key");
                self.current.store(keys.clone());
                Some(keys)
            }
            Err(e) => {
                tracing::warn!(jwks = %self.url.as_str(), error = %e, "JWKS refetch failed");
                None
            }
        }
    }
}
