//! `[[idp]]` tables: their file shape and their validation into [`IdpConfig`]s. Names
//! are unique slugs (they appear in URLs and audit actors), issuers are https (http only
//! on a loopback address, for local IdPs and tests), and each IdP has exactly one
//! client-secret source, present and readable.

use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

/// One validated `[[idp]]` table.
#[derive(Clone, PartialEq, Eq)]
pub struct IdpConfig {
    /// Slug used in URLs (`/oidc/<name>/callback`) and audit actors (`idp:<name>`).
    pub name: String,
    /// Text of the sign-in button.
    pub display_name: String,
    /// The issuer exactly as the IdP writes it in `iss`; discovery is fetched from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for; `openid` is always sent.
    pub scopes: Vec<String>,
    /// The ID token claim holding the user's groups.
    pub groups_claim: String,
    /// Send the browser to the IdP's `end_session_endpoint` on logout.
    pub end_session: bool,
    /// `acr_values` asked for when re-authentication is forced; the ID token's `acr`
    /// must then be one of them.
    pub mfa_acr_values: Vec<String>,
    /// Whether a sign-in after a revocation must be a fresh authentication at the IdP.
    pub reauth: Reauth,
}

/// `reauth` of an `[[idp]]`: what a sign-in after a revocation that covers the user asks
/// of the IdP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reauth {
    /// `prompt=login`, `max_age=0` (and `acr_values`), and an ID token whose
    /// `auth_time` is not older than the revocation.
    #[default]
    Require,
    /// Nothing asked, `auth_time` not checked: for IdPs that honour neither (Google),
    /// where "require" would refuse the user until the revocation is pruned.
    Off,
}

impl std::fmt::Debug for IdpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("end_session", &self.end_session)
            .field("mfa_acr_values", &self.mfa_acr_values)
            .field("reauth", &self.reauth)
            .finish()
    }
}

/// One `[[idp]]` table as written in `gateway.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpFile {
    pub name: String,
    pub display_name: Option<String>,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default = "default_true")]
    pub end_session: bool,
    #[serde(default)]
    pub mfa_acr_values: Vec<String>,
    #[serde(default)]
    pub reauth: Reauth,
}

impl std::fmt::Debug for IdpFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpFile")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .finish_non_exhaustive()
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_true() -> bool {
    true
}

/// A field path (`idp[0].issuer`) and the reason it is refused.
pub type FieldError = (String, String);

/// Validates every `[[idp]]`; relative `client_secret_file` paths are read from `base_dir`
/// (the directory of the config file).
pub fn validate(files: &[IdpFile], base_dir: &Path) -> Result<Vec<IdpConfig>, FieldError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let field = |k: &str| format!("idp[{i}].{k}");
        let err = |k: &str, reason: String| (field(k), reason);
        check_name(&f.name).map_err(|r| err("name", r))?;
        if !names.insert(f.name.as_str()) {
            return Err(err("name", format!("{:?} appears twice", f.name)));
        }
        check_issuer(&f.issuer).map_err(|r| err("issuer", r))?;
        if f.client_id.trim().is_empty() {
            return Err(err("client_id", "must not be empty".into()));
        }
        let client_secret = secret(f, base_dir).map_err(|(k, r)| err(k, r))?;
        check_words(&f.scopes).map_err(|r| err("scopes", r))?;
        if f.groups_claim.trim().is_empty() {
            return Err(err("groups_claim", "must not be empty".into()));
        }
        check_words(&f.mfa_acr_values).map_err(|r| err("mfa_acr_values", r))?;
        let display_name = f.display_name.clone().unwrap_or_else(|| f.name.clone());
        if display_name.trim().is_empty() {
            return Err(err("display_name", "must not be empty".into()));
        }
        out.push(IdpConfig {
            name: f.name.clone(),
            display_name,
            issuer: f.issuer.clone(),
            client_id: f.client_id.clone(),
            client_secret,
            scopes: f.scopes.clone(),
            groups_claim: f.groups_claim.clone(),
            end_session: f.end_session,
            mfa_acr_values: f.mfa_acr_values.clone(),
            reauth: f.reauth,
        });
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let slug = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if slug {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be a slug: lowercase letters, digits and inner dashes"
        ))
    }
}

/// https, or http on a loopback address; no query, fragment or credentials (the issuer
/// must equal the tokens' `iss` byte for byte, and discovery is appended to it).
fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("{issuer:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "{issuer:?}: http is allowed only on a loopback address (127.0.0.0/8, ::1, localhost); use https"
        )),
        _ => Err(format!("{issuer:?} must be an https URL")),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Exactly one of `client_secret` / `client_secret_file`, non-empty, the file readable.
fn secret(f: &IdpFile, base_dir: &Path) -> Result<String, (&'static str, String)> {
    match (&f.client_secret, &f.client_secret_file) {
        (Some(s), None) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        (Some(_), None) => Err(("client_secret", "must not be empty".into())),
        (None, Some(p)) => {
            let path = base_dir.join(p); // an absolute `p` replaces base_dir
            match std::fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Ok(_) => Err(("client_secret_file", format!("{} is empty", path.display()))),
                Err(e) => Err((
                    "client_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                )),
            }
        }
        _ => Err((
            "client_secret",
            "set exactly one of client_secret or client_secret_file".into(),
        )),
    }
}

/// Space-free, non-empty words (scopes and acr values are sent space-separated).
fn check_words(words: &[String]) -> Result<(), String> {
    match words
        .iter()
        .find(|w| w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        Some(w) => Err(format!("{w:?} must be a non-empty word without spaces")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "idp")]
        idps: Vec<IdpFile>,
    }

    fn files(toml_text: &str) -> Vec<IdpFile> {
        toml::from_str::<Doc>(toml_text).expect("parses").idps
    }

    fn check(toml_text: &str) -> Result<Vec<IdpConfig>, FieldError> {
        validate(&files(toml_text), Path::new("/nonexistent"))
    }

    fn field_of(toml_text: &str) -> String {
        check(toml_text).expect_err("refused").0
    }

    const ONE: &str = r#"
[[idp]]
name = "corp"
issuer = "https://login.example.com"
client_id = "portcullis"
client_secret = "s3cret"
"#;

    #[test]
    fn defaults() {
        let c = &check(ONE).unwrap()[0];
        assert_eq!(c.display_name, "corp");
        assert_eq!(c.scopes, ["openid", "email", "profile"]);
        assert_eq!(c.groups_claim, "groups");
        assert!(c.end_session);
        assert!(c.mfa_acr_values.is_empty());
        assert_eq!(c.reauth, Reauth::Require);
        assert_eq!(c.client_secret, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = toml::from_str::<Doc>(&format!("{ONE}clent_secret = \"x\"\n"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("clent_secret"), "{e}");
    }

    #[test]
    fn names_are_unique_slugs() {
        assert_eq!(
            field_of(&ONE.replace("\"corp\"", "\"Corp\"")),
            "idp[0].name"
        );
        assert_eq!(
            field_of(&ONE.replace("\"corp\"", "\"co rp\"")),
            "idp[0].name"
        );
        assert_eq!(field_of(&ONE.replace("\"corp\"", "\"\"")), "idp[0].name");
        assert_eq!(field_of(&format!("{ONE}{ONE}")), "idp[1].name");
        let two = format!("{ONE}{}", ONE.replace("\"corp\"", "\"corp-2\""));
        assert_eq!(check(&two).unwrap().len(), 2);
    }

    #[test]
    fn issuer_rules() {
        let with = |iss: &str| check(&ONE.replace("https://login.example.com", iss));
        for ok in [
            "https://login.example.com/realms/x",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://[::1]:9000/op",
            "http://localhost:5556/dex",
        ] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
            "ftp://127.0.0.1",
            "https://login.example.com/?x=1",
            "https://u:p@login.example.com",
            "login.example.com",
        ] {
            assert_eq!(with(bad).expect_err(bad).0, "idp[0].issuer", "{bad}");
        }
    }

    #[test]
    fn exactly_one_readable_secret() {
        let none = ONE.replace("client_secret = \"s3cret\"\n", "");
        assert_eq!(field_of(&none), "idp[0].client_secret");
        let both = format!("{ONE}client_secret_file = \"x\"\n");
        assert_eq!(field_of(&both), "idp[0].client_secret");
        assert_eq!(
            field_of(&ONE.replace("s3cret", " ")),
            "idp[0].client_secret"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("corp.secret"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("empty.secret"), "\n").unwrap();
        let from = |p: &str| {
            let t = none.clone() + &format!("client_secret_file = \"{p}\"\n");
            validate(&files(&t), dir.path())
        };
        assert_eq!(from("corp.secret").unwrap()[0].client_secret, "from-file");
        let abs = dir.path().join("corp.secret");
        assert_eq!(
            from(abs.to_str().unwrap()).unwrap()[0].client_secret,
            "from-file"
        );
        let (field, reason) = from("missing.secret").unwrap_err();
        assert_eq!(field, "idp[0].client_secret_file");
        assert!(reason.contains("missing.secret"), "{reason}");
        assert_eq!(
            from("empty.secret").unwrap_err().0,
            "idp[0].client_secret_file"
        );
    }

    #[test]
    fn words_and_claims() {
        assert_eq!(
            field_of(&format!("{ONE}scopes = [\"openid\", \"\"]\n")),
            "idp[0].scopes"
        );
        assert_eq!(
            field_of(&format!("{ONE}scopes = [\"openid email\"]\n")),
            "idp[0].scopes"
        );
        assert_eq!(
            field_of(&format!("{ONE}groups_claim = \"\"\n")),
            "idp[0].groups_claim"
        );
        assert_eq!(
            field_of(&format!("{ONE}mfa_acr_values = [\"a b\"]\n")),
            "idp[0].mfa_acr_values"
        );
        assert_eq!(
            field_of(&format!("{ONE}display_name = \" \"\n")),
            "idp[0].display_name"
        );
        let c = check(&format!(
            "{ONE}display_name = \"Corp SSO\"\nend_session = false\nmfa_acr_values = [\"urn:mfa\"]\n"
        ))
        .unwrap();
        assert_eq!(c[0].display_name, "Corp SSO");
        assert!(!c[0].end_session);
        assert_eq!(c[0].mfa_acr_values, ["urn:mfa"]);
    }

    #[test]
    fn reauth_is_require_or_off() {
        let c = check(&format!("{ONE}reauth = \"off\"\n")).unwrap();
        assert_eq!(c[0].reauth, Reauth::Off);
        let c = check(&format!("{ONE}reauth = \"require\"\n")).unwrap();
        assert_eq!(c[0].reauth, Reauth::Require);
        let e = toml::from_str::<Doc>(&format!("{ONE}reauth = \"never\"\n"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("require"), "{e}");
    }
}
