//! `[scim]`, `[[signals.ssf]]` and `[[signals.webhook]]`: the revocation signals a
//! gateway accepts from outside. The SSF and webhook tables are validated by the
//! `signals` module's own functions; this file turns their errors into config errors
//! naming the file and field, and validates the SCIM table's name and bearer token.

use super::Validator;
use super::file::{ScimFile, SignalsFile};
use crate::config::ConfigError;
use crate::signals::ssf::{self, SsfConfig};
use crate::signals::webhook::{self, WebhookConfig};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// A validated `[scim]` table.
#[derive(Clone)]
pub struct ScimConfig {
    /// The audit actor is `scim:<name>`.
    pub name: String,
    /// SHA-256 of the bearer token the identity provider sends (compared in constant time).
    pub token_sha256: [u8; 32],
    /// Where the token lives, when the config names a file.
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for ScimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimConfig")
            .field("name", &self.name)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// The validated `[[signals.*]]` tables.
#[derive(Debug, Clone, Default)]
pub struct SignalsConfig {
    pub ssf: Vec<SsfConfig>,
    pub webhooks: Vec<WebhookConfig>,
}

impl Validator {
    pub(super) fn scim(&self, f: Option<&ScimFile>) -> Result<Option<ScimConfig>, ConfigError> {
        let Some(f) = f else { return Ok(None) };
        crate::signals::check_name(&f.name).map_err(|r| self.err("scim.name", r))?;
        let (token_sha256, token_file) = match (&f.token_sha256, &f.token_file) {
            (Some(h), None) => {
                let bytes = hex::decode(h.trim()).ok().filter(|b| b.len() == 32);
                let Some(bytes) = bytes else {
                    return Err(self.err(
                        "scim.token_sha256",
                        "must be 64 hex digits (sha256 of the token)",
                    ));
                };
                let mut out = [0u8; 32];
                out.copy_from_slice(&bytes);
                (out, None)
            }
            (None, Some(p)) => {
                let path = self.path(p);
                let token = self
                    .secret_file(&path)
                    .map_err(|r| self.err("scim.token_file", r))?;
                (Sha256::digest(token.as_bytes()).into(), Some(path))
            }
            _ => {
                return Err(self.err("scim", "set exactly one of token_sha256 or token_file"));
            }
        };
        Ok(Some(ScimConfig {
            name: f.name.clone(),
            token_sha256,
            token_file,
        }))
    }

    pub(super) fn signals(&self, f: &SignalsFile) -> Result<SignalsConfig, ConfigError> {
        let ssf = ssf::validate(&f.ssf, &self.base).map_err(|e| self.err(e.field, e.reason))?;
        let webhooks =
            webhook::validate(&f.webhook, &self.base).map_err(|e| self.err(e.field, e.reason))?;
        Ok(SignalsConfig { ssf, webhooks })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Secrets};
    use std::path::Path;

    const BASE: &str = r#"
[gateway]
listen = "127.0.0.1:0"
auth_domain = "auth.localhost"
[control]
listen = "127.0.0.1:0"
"#;

    fn parse(dir: &Path, extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            &format!("{BASE}{extra}"),
            &dir.join("gateway.toml"),
            Secrets::ReadOnly,
        )
    }

    #[test]
    fn signal_tables_validate_and_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        crate::secrets::write_private(&dir.path().join("hook.secret"), "0123456789abcdef0123\n");
        crate::secrets::write_private(&dir.path().join("scim.token"), "scim-token\n");
        let ok = parse(
            dir.path(),
            r#"
[scim]
name = "okta"
token_file = "scim.token"
[[signals.ssf]]
name = "okta"
issuer = "https://okta.example.com"
jwks_url = "https://okta.example.com/jwks"
audience = "https://auth.localhost/ssf/okta"
[[signals.webhook]]
name = "splunk"
secret_file = "hook.secret"
"#,
        )
        .unwrap();
        let scim = ok.scim.unwrap();
        assert_eq!(scim.name, "okta");
        use sha2::Digest;
        assert_eq!(
            scim.token_sha256,
            <[u8; 32]>::from(sha2::Sha256::digest(b"scim-token"))
        );
        assert_eq!(ok.signals.ssf[0].name, "okta");
        assert_eq!(ok.signals.webhooks[0].name, "splunk");
        for (extra, field) in [
            (
                "[scim]\nname = \"Okta\"\ntoken_sha256 = \"00\"\n",
                "scim.name",
            ),
            (
                "[scim]\nname = \"okta\"\ntoken_sha256 = \"00\"\n",
                "scim.token_sha256",
            ),
            ("[scim]\nname = \"okta\"\n", "scim"),
            (
                "[[signals.webhook]]\nname = \"x\"\nsecret_file = \"missing\"\n",
                "signals.webhook[0].secret_file",
            ),
            (
                "[[signals.ssf]]\nname = \"x\"\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"http://evil.example/jwks\"\n",
                "signals.ssf[0].jwks_url",
            ),
            ("[signals]\ntypo = 1\n", "signals.typo"),
        ] {
            let e = parse(dir.path(), extra).unwrap_err();
            assert_eq!(e.field(), Some(field), "{extra}: {e}");
        }
    }
}
