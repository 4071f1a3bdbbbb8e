//! Sealed values: small secrets the browser carries from one node to another (hand-off
//! codes, sign-in state), encrypted and authenticated (AES-256-GCM) under a key every
//! node of the cluster derives the same way from the shared signing keys, so any node
//! can open what another sealed and nobody else can read or forge it.
//!
//! Each signing key gives a sealing key per purpose (HKDF-SHA256 over the key's PKCS#8
//! PEM, with the purpose as info). Values are sealed under the active key and name it,
//! so after a rotation values sealed a moment earlier still open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use std::collections::HashMap;

/// What a sealed value is for; values of one purpose never open as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// One-time hand-off codes from the auth domain to an app host.
    Handoff,
    /// State that travels through an identity provider's sign-in page.
    SignInState,
    /// The admin console's own session cookie (tied to a global session).
    ConsoleSession,
    /// The admin console's per-form CSRF tokens.
    ConsoleForm,
    /// When a global session's holder last authenticated (`session::authn`).
    SignInTime,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::Handoff => b"portcullis handoff code v1",
            Purpose::SignInState => b"portcullis sign-in state v1",
            Purpose::ConsoleSession => b"portcullis console session v1",
            Purpose::ConsoleForm => b"portcullis console form v1",
            Purpose::SignInTime => b"portcullis sign-in time v1",
        }
    }
    const ALL: [Purpose; 5] = [
        Purpose::Handoff,
        Purpose::SignInState,
        Purpose::ConsoleSession,
        Purpose::ConsoleForm,
        Purpose::SignInTime,
    ];
}

struct Len32;

impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn derive(secret: &[u8], purpose: Purpose) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, b"portcullis seal").extract(secret);
    let info = [purpose.info()];
    let okm = prk.expand(&info, Len32).ok()?;
    let mut key = [0u8; 32];
    okm.fill(&mut key).ok()?;
    Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).ok()?))
}

/// The sealing keys of one key ring.
pub struct Sealer {
    active: String,
    keys: HashMap<(String, Purpose), LessSafeKey>,
}

impl Sealer {
    /// `secrets`: each signing key's id and secret material; `active`: the one to seal with.
    pub fn new<'a>(active: &str, secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut keys = HashMap::new();
        for (kid, secret) in secrets {
            for p in Purpose::ALL {
                if let Some(k) = derive(secret, p) {
                    keys.insert((kid.to_string(), p), k);
                }
            }
        }
        Sealer {
            active: active.to_string(),
            keys,
        }
    }

    /// `<kid>.<base64url(nonce || ciphertext || tag)>`.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> Option<String> {
        let key = self.keys.get(&(self.active.clone(), purpose))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(self.active.as_bytes()),
            &mut buf,
        )
        .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Some(format!("{}.{}", self.active, URL_SAFE_NO_PAD.encode(out)))
    }

    /// The plaintext of a value this cluster sealed for `purpose`; None for anything
    /// else (forged, altered, another purpose, a key no longer in the ring).
    pub fn open(&self, purpose: Purpose, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > 16 * 1024 {
            return None;
        }
        let (kid, body) = sealed.split_once('.')?;
        let key = self.keys.get(&(kid.to_string(), purpose))?;
        let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_tampering() {
        let s = Sealer::new("k1", [("k1", b"secret one".as_slice())]);
        let v = s.seal(Purpose::Handoff, b"hello").unwrap();
        assert_eq!(s.open(Purpose::Handoff, &v).unwrap(), b"hello");
        assert!(s.open(Purpose::SignInState, &v).is_none(), "other purpose");
        // Any flipped character fails.
        let mut bad = v.clone().into_bytes();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert!(
            s.open(Purpose::Handoff, std::str::from_utf8(&bad).unwrap())
                .is_none()
        );
        assert!(s.open(Purpose::Handoff, "k1.").is_none());
        assert!(s.open(Purpose::Handoff, "garbage").is_none());
        assert!(s.open(Purpose::Handoff, "k2.AAAA").is_none());
        // Another cluster's key cannot open it.
        let other = Sealer::new("k1", [("k1", b"secret two".as_slice())]);
        assert!(other.open(Purpose::Handoff, &v).is_none());
        // After a rotation, values sealed under the old key still open.
        let rotated = Sealer::new(
            "k2",
            [
                ("k1", b"secret one".as_slice()),
                ("k2", b"secret 2".as_slice()),
            ],
        );
        assert_eq!(rotated.open(Purpose::Handoff, &v).unwrap(), b"hello");
        assert!(
            rotated
                .seal(Purpose::Handoff, b"x")
                .unwrap()
                .starts_with("k2.")
        );
    }
}
