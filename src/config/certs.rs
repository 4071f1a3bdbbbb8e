//! TLS material for the control port and for calls to peers: the validated settings
//! (`[control] tls_cert`/`tls_key`/`client_ca`/`client_auth`, `[sync] ca_file`/
//! `client_cert`/`client_key`) and the PEM reading the TLS module builds from. The
//! files are read and checked while validating, so `portcullis check` and a reload name
//! a bad certificate, key or CA file (file, field and reason) before anything uses it.

use super::file::{ClientAuth, ControlFile, SyncFile};
use super::{ConfigError, Validator};
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// A certificate chain and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS on the control port.
#[derive(Debug, Clone)]
pub struct ControlTls {
    pub identity: CertKey,
    /// Client certificates must chain to these CA certificates.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: who must present one (the peer API, or every connection).
    pub client_auth: ClientAuth,
}

impl ControlTls {
    /// Whether peer API calls must come over a connection with a verified client
    /// certificate.
    pub fn peers_need_certificate(&self) -> bool {
        self.client_ca.is_some()
    }
}

/// TLS towards `https://` peers.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    /// The CA certificates peers' control ports chain to; none: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// What this node presents when a peer asks for a client certificate.
    pub identity: Option<CertKey>,
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {}", pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {}", pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!("{}: no PRIVATE KEY block in the file", path.display()),
        e => format!("{}: {}", path.display(), pem_reason(&e)),
    })
}

/// The CA certificates of a PEM file as trust anchors.
pub fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "{}: certificate {} is not usable as a CA: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(roots)
}

/// Checks that the key can sign and belongs to the chain's first certificate.
fn check_pair(pair: &CertKey) -> Result<(), String> {
    let certs = read_certs(&pair.cert)?;
    let key = read_key(&pair.key)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{} is not the key of the certificate in {}",
                pair.key.display(),
                pair.cert.display()
            ),
            e => format!("{}: unusable private key: {e}", pair.key.display()),
        })
}

fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        e => format!("not valid PEM: {e}"),
    }
}

impl Validator {
    /// A cert/key pair from two optional fields: both or neither.
    fn cert_key(
        &self,
        table: &str,
        (cert_field, cert): (&str, &Option<String>),
        (key_field, key): (&str, &Option<String>),
    ) -> Result<Option<CertKey>, ConfigError> {
        let pair = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => CertKey {
                cert: self.path(c),
                key: self.path(k),
            },
            (Some(_), None) => {
                let why = format!("set it together with {table}.{cert_field}");
                return Err(self.err(format!("{table}.{key_field}"), why));
            }
            (None, Some(_)) => {
                let why = format!("set it together with {table}.{key_field}");
                return Err(self.err(format!("{table}.{cert_field}"), why));
            }
        };
        read_certs(&pair.cert).map_err(|r| self.err(format!("{table}.{cert_field}"), r))?;
        check_pair(&pair).map_err(|r| self.err(format!("{table}.{key_field}"), r))?;
        Ok(Some(pair))
    }

    pub(super) fn control_tls(&self, c: &ControlFile) -> Result<Option<ControlTls>, ConfigError> {
        let identity = self.cert_key(
            "control",
            ("tls_cert", &c.tls_cert),
            ("tls_key", &c.tls_key),
        )?;
        let client_ca = match &c.client_ca {
            Some(p) => {
                let path = self.path(p);
                read_roots(&path).map_err(|r| self.err("control.client_ca", r))?;
                Some(path)
            }
            None => None,
        };
        if client_ca.is_none() && c.client_auth.is_some() {
            let why = "says who must present a client certificate: set client_ca too";
            return Err(self.err("control.client_auth", why));
        }
        let Some(identity) = identity else {
            if client_ca.is_some() {
                let why = "client certificates need TLS: set tls_cert and tls_key too";
                return Err(self.err("control.client_ca", why));
            }
            return Ok(None);
        };
        Ok(Some(ControlTls {
            identity,
            client_ca,
            client_auth: c.client_auth.unwrap_or_default(),
        }))
    }

    /// `https_peers`: whether any peer URL is `https://`. When this node's control port
    /// asks peers for client certificates, so do its peers (one cluster, one policy):
    /// then calling an `https://` peer without one would only be refused.
    pub(super) fn peer_tls(
        &self,
        s: &SyncFile,
        https_peers: bool,
        control: Option<&ControlTls>,
    ) -> Result<PeerTls, ConfigError> {
        let ca_file = match &s.ca_file {
            Some(p) => {
                let path = self.path(p);
                read_roots(&path).map_err(|r| self.err("sync.ca_file", r))?;
                Some(path)
            }
            None => None,
        };
        let identity = self.cert_key(
            "sync",
            ("client_cert", &s.client_cert),
            ("client_key", &s.client_key),
        )?;
        let asks = control.is_some_and(ControlTls::peers_need_certificate);
        if https_peers && asks && identity.is_none() {
            let why = "control.client_ca makes peers present a client certificate: set \
                       sync.client_cert and sync.client_key (this node's certificate from that CA)";
            return Err(self.err("sync.client_cert", why));
        }
        Ok(PeerTls { ca_file, identity })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, Secrets};
    use std::path::Path;

    const BASE: &str = r#"
[gateway]
listen = "127.0.0.1:0"
auth_domain = "auth.localhost"
[control]
listen = "127.0.0.1:0"
CONTROL
[sync]
peers = ["https://10.0.0.2:9443", "http://10.0.0.3:9443"]
peer_token_file = "peer.token"
SYNC
"#;

    /// A folder with a self-signed `node.crt`/`node.key` and a peer token.
    fn folder() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        std::fs::write(d.path().join("node.crt"), ck.cert.pem()).unwrap();
        std::fs::write(d.path().join("node.key"), ck.signing_key.serialize_pem()).unwrap();
        let token = d.path().join("peer.token");
        std::fs::write(&token, "t").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        d
    }

    fn parse(dir: &Path, control: &str, sync: &str) -> Result<Config, ConfigError> {
        let text = BASE.replace("CONTROL", control).replace("SYNC", sync);
        Config::parse(&text, &dir.join("gateway.toml"), Secrets::ReadOnly)
    }

    #[test]
    fn https_peers_and_a_tls_control_port_parse() {
        let d = folder();
        let c = parse(
            d.path(),
            "tls_cert = \"node.crt\"\ntls_key = \"node.key\"\nclient_ca = \"node.crt\"",
            "ca_file = \"node.crt\"\nclient_cert = \"node.crt\"\nclient_key = \"node.key\"",
        )
        .unwrap();
        assert_eq!(c.sync.peers[0], "https://10.0.0.2:9443");
        let tls = c.control.tls.unwrap();
        assert_eq!(tls.identity.cert, d.path().join("node.crt"));
        assert!(tls.peers_need_certificate());
        assert_eq!(tls.client_auth, super::ClientAuth::Peers);
        assert_eq!(c.sync.tls.ca_file, Some(d.path().join("node.crt")));
        // No TLS at all is still fine (peers checked against the system's roots).
        let c = parse(d.path(), "", "").unwrap();
        assert!(c.control.tls.is_none() && c.sync.tls.identity.is_none());
    }

    #[test]
    fn half_settings_name_the_missing_field() {
        let d = folder();
        let field = |control: &str, sync: &str| {
            parse(d.path(), control, sync)
                .unwrap_err()
                .field()
                .map(str::to_string)
        };
        let f = field("tls_key = \"node.key\"", "");
        assert_eq!(f.as_deref(), Some("control.tls_cert"));
        let f = field("client_auth = \"all\"", "");
        assert_eq!(f.as_deref(), Some("control.client_auth"));
        let f = field("", "client_cert = \"node.crt\"");
        assert_eq!(f.as_deref(), Some("sync.client_key"));
        let f = field("client_auth = \"some\"", "");
        assert_eq!(f.as_deref(), Some("control.client_auth"));
        // A key file that holds a certificate only.
        let f = field("tls_cert = \"node.crt\"\ntls_key = \"node.crt\"", "");
        assert_eq!(f.as_deref(), Some("control.tls_key"));
    }
}
