//! Revocation signals from outside: SCIM 2.0 provisioning ([`scim`]), Shared Signals
//! (CAEP/RISC) push receiver ([`ssf`]) and signed SIEM/SOAR webhooks ([`webhook`]).
//!
//! Each submodule is protocol logic only: plain data in (method, path, headers, body
//! bytes, the current time), plain data out (a status and a body, or a verified
//! signal and the revocations it asks for). None of them knows HTTP listeners, the
//! revocation engine or the cluster store: the gateway wires them to those, so this
//! module can be tested alone and stays below everything that serves requests.

pub mod scim;
pub mod ssf;
pub mod webhook;

use std::path::{Path, PathBuf};

/// A configuration field that failed validation: its path in gateway.toml (for example
/// `signals.ssf[0].jwks_url`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Longest name accepted for an SSF stream or a webhook (it appears in URL paths).
const MAX_NAME: usize = 64;

/// Checks a name that becomes a URL path segment and an audit actor suffix.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1 to {MAX_NAME} characters of a-z, 0-9, '-' or '_'"
        ))
    }
}

/// Resolves a path from the config file against the directory the file is in.
pub(crate) fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Reads a secret file: trimmed, never empty, readable by its owner only.
pub(crate) fn read_secret(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => {
            crate::secrets::check_private(path)?;
            Ok(s.trim().to_string())
        }
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_safe() {
        assert!(check_name("okta-prod_1").is_ok());
        for bad in ["", "Okta", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn secret_files_are_trimmed_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        crate::secrets::write_private(&p, "  tok\n");
        assert_eq!(read_secret(&p).unwrap(), "tok");
        crate::secrets::write_private(&p, "\n");
        assert!(read_secret(&p).unwrap_err().contains("empty"));
        assert!(read_secret(&dir.path().join("missing")).is_err());
        assert_eq!(resolve(dir.path(), "/abs"), PathBuf::from("/abs"));
        assert_eq!(resolve(dir.path(), "rel"), dir.path().join("rel"));
    }
}
