//! The built-in identity provider: `[[user]]` entries with argon2id password hashes.
//! Hashing is slow by design, so it runs on the blocking pool, never on the executor.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::OnceLock;

/// An argon2id PHC string for `password` with the library's recommended parameters.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    let salt = SaltString::encode_b64(&raw)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user is unknown or disabled, so the answer takes
/// as long as for a real user and does not reveal which accounts exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never matches").unwrap_or_default())
}

/// Checks `password` against `phc` (or the decoy when `phc` is None) off the executor.
pub async fn verify(password: String, phc: Option<String>) -> bool {
    let real = phc.is_some();
    let res = tokio::task::spawn_blocking(move || {
        let hash = phc.unwrap_or_else(|| decoy_hash().to_string());
        verify_blocking(&password, &hash)
    })
    .await;
    real && res.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret".into(), Some(h.clone())).await);
        assert!(!verify("nope".into(), Some(h)).await);
        assert!(!verify("s3cret".into(), None).await);
    }
}
