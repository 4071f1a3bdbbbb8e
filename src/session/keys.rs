//! The signing key ring: ES256 keys as PKCS#8 PEM files in `<state_dir>/keys/`, one of
//! them active for signing (named in `keys/active`), all of them published in the JWKS
//! and accepted for verification. Nodes of one cluster share the folder.

use super::seal::Sealer;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot generate a signing key: {0}")]
    Generate(String),
}

pub struct KeyRing {
    dir: PathBuf,
    active_kid: String,
    encoding: EncodingKey,
    header: Header,
    decoding: HashMap<String, DecodingKey>,
    jwks: Bytes,
    sealer: Sealer,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("active_kid", &self.active_kid)
            .field("kids", &self.decoding.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct LoadedKey {
    kid: String,
    pem: String,
    x: String,
    y: String,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn parse_key(path: &Path, pem: String) -> Result<LoadedKey, KeyError> {
    let kp = rcgen::KeyPair::from_pem(&pem).map_err(|e| file_err(path, e))?;
    if !kp.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
        return Err(file_err(path, "not an ECDSA P-256 key"));
    }
    let raw = kp.public_key_raw();
    // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
    if raw.len() != 65 || raw[0] != 4 {
        return Err(file_err(path, "unexpected public key encoding"));
    }
    let kid = hex::encode(&Sha256::digest(raw)[..8]);
    Ok(LoadedKey {
        kid,
        x: URL_SAFE_NO_PAD.encode(&raw[1..33]),
        y: URL_SAFE_NO_PAD.encode(&raw[33..65]),
        pem,
    })
}

fn generate_key(dir: &Path) -> Result<String, KeyError> {
    crate::secrets::create_private_dir(dir).map_err(|e| file_err(dir, e))?;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let pem = kp.serialize_pem();
    let key = parse_key(dir, pem)?;
    let path = dir.join(format!("{}.pem", key.kid));
    let tmp = dir.join(format!(".{}.pem.tmp", key.kid));
    write_private(&tmp, key.pem.as_bytes()).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| file_err(&path, e))?;
    Ok(key.kid)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn set_active(dir: &Path, kid: &str) -> Result<(), KeyError> {
    let tmp = dir.join(".active.tmp");
    std::fs::write(&tmp, kid).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("active")).map_err(|e| file_err(dir, e))
}

impl KeyRing {
    /// Loads the ring, generating a first key when the folder holds none.
    pub fn load_or_create(dir: &Path) -> Result<KeyRing, KeyError> {
        let has_keys = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".pem"))
            })
            .unwrap_or(false);
        if !has_keys {
            let kid = generate_key(dir)?;
            set_active(dir, &kid)?;
            tracing::info!(dir = %dir.display(), kid, "generated a new signing key");
        }
        Self::load(dir)
    }

    pub fn load(dir: &Path) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::new();
        let rd = std::fs::read_dir(dir).map_err(|e| file_err(dir, e))?;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.ends_with(".pem") || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            crate::secrets::check_private(&path).map_err(|reason| file_err(&path, reason))?;
            let pem = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
            keys.push(parse_key(&path, pem)?);
        }
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let active_path = dir.join("active");
        let active_kid = match std::fs::read_to_string(&active_path) {
            Ok(s) => s.trim().to_string(),
            // One key and no marker: that key is the active one.
            Err(_) if keys.len() == 1 => keys[0].kid.clone(),
            Err(e) => return Err(file_err(&active_path, e)),
        };
        let active = keys.iter().find(|k| k.kid == active_kid).ok_or_else(|| {
            file_err(
                &active_path,
                format!("names key {active_kid:?}, which is not in the folder"),
            )
        })?;
        let encoding = EncodingKey::from_ec_pem(active.pem.as_bytes())
            .map_err(|e| file_err(&active_path, e))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(active.kid.clone());
        let mut decoding = HashMap::new();
        let mut jwks = Vec::new();
        for k in &keys {
            let dk = DecodingKey::from_ec_components(&k.x, &k.y)
                .map_err(|e| file_err(dir, format!("key {}: {e}", k.kid)))?;
            decoding.insert(k.kid.clone(), dk);
            jwks.push(serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": k.x, "y": k.y,
                "kid": k.kid, "alg": "ES256", "use": "sig",
            }));
        }
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": jwks }))
            .map_err(|e| file_err(dir, e))?;
        let sealer = Sealer::new(
            &active.kid,
            keys.iter().map(|k| (k.kid.as_str(), k.pem.as_bytes())),
        );
        Ok(KeyRing {
            dir: dir.to_path_buf(),
            active_kid: active.kid.clone(),
            encoding,
            header,
            decoding,
            jwks: Bytes::from(jwks),
            sealer,
        })
    }

    /// Adds a new key and makes it the signing key; older keys stay for verification.
    pub fn rotate(dir: &Path) -> Result<String, KeyError> {
        let kid = generate_key(dir)?;
        set_active(dir, &kid)?;
        Ok(kid)
    }

    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
    pub fn decoding(&self, kid: &str) -> Option<&DecodingKey> {
        self.decoding.get(kid)
    }
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }
    pub fn kids(&self) -> impl Iterator<Item = &String> {
        self.decoding.keys()
    }
    /// Seals and opens values the browser carries between nodes (see `seal`).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_rotate_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let first = ring.active_kid().to_string();
        let again = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(again.active_kid(), first);
        let second = KeyRing::rotate(dir.path()).unwrap();
        let ring = KeyRing::load(dir.path()).unwrap();
        assert_eq!(ring.active_kid(), second);
        assert!(ring.decoding(&first).is_some());
        let jwks: serde_json::Value = serde_json::from_slice(&ring.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_created_private_and_open_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("state/keys");
        let ring = KeyRing::load_or_create(&keys).unwrap();
        let pem = keys.join(format!("{}.pem", ring.active_kid()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pem), 0o600);
        assert_eq!(mode(&keys), 0o700);
        std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyRing::load(&keys).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
