//! TLS for the data plane (PEM loading, the dev certificate, the rustls acceptor) and
//! for the control port and peer calls (server config with optional client
//! certificates, client config with the cluster's roots and this node's identity).

use crate::config::file::ClientAuth;
use crate::config::{CertKey, Config, ControlTls, PeerTls, certs};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot generate a dev certificate: {0}")]
    Generate(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{0}")]
    Material(String),
}

/// Marks a control-port request that came over a connection whose client certificate
/// chained to `[control] client_ca` (the TLS handshake verified it).
#[derive(Clone, Copy, Debug)]
pub struct VerifiedClientCert;

/// The control port's TLS config: its certificate, and with `client_ca` a verifier
/// that checks every certificate presented; `client_auth = "all"` also refuses
/// connections that present none, `"peers"` lets them through to the route guard.
pub fn control_server_config(t: &ControlTls) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = identity(&t.identity)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &t.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(certs::read_roots(ca).map_err(TlsError::Material)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let v = match t.client_auth {
                ClientAuth::Peers => v.allow_unauthenticated(),
                ClientAuth::All => v,
            };
            builder.with_client_cert_verifier(v.build()?)
        }
    };
    let mut sc = builder.with_single_cert(chain, key)?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

/// The config for calls to `https://` peers: their certificates must chain to
/// `ca_file` (or, without one, to the system's roots, loaded only when a peer is
/// `https://`); this node presents its `client_cert` when asked.
pub fn peer_client_config(t: &PeerTls, https_peers: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &t.ca_file {
        Some(ca) => certs::read_roots(ca).map_err(TlsError::Material)?,
        None if https_peers => system_roots()?,
        None => RootCertStore::empty(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cc = match &t.identity {
        Some(pair) => {
            let (chain, key) = identity(pair)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    cc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cc))
}

fn identity(
    pair: &CertKey,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs::read_certs(&pair.cert).map_err(TlsError::Material)?;
    let key = certs::read_key(&pair.key).map_err(TlsError::Material)?;
    Ok((chain, key))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = "no system root certificates found for https:// peers: set [sync] ca_file";
        return Err(TlsError::Material(why.into()));
    }
    Ok(roots)
}

/// The crypto provider the whole process uses (aws-lc-rs). Installing it once makes
/// rustls' builder calls unambiguous even when another provider is compiled in.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Builds the server TLS config from the configured files, writing a self-signed
/// certificate first when they are missing and the config allows it.
pub fn server_config(config: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = (&config.tls.cert, &config.tls.key);
    let hosts = config.all_hosts();
    if config.tls.generate_self_signed {
        ensure_dev_certificate(cert, key, &hosts)?;
    }
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let mut sc = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        reason: format!("cannot read a private key: {e}"),
    })
}

/// The list of hosts a generated certificate covers, kept beside it so a reload that
/// adds an app host regenerates the dev certificate (and never touches a real one).
fn hosts_marker(cert: &Path) -> std::path::PathBuf {
    cert.with_extension("hosts")
}

fn ensure_dev_certificate(cert: &Path, key: &Path, hosts: &[String]) -> Result<(), TlsError> {
    let marker = hosts_marker(cert);
    let wanted = hosts.join("\n");
    let exists = cert.exists() && key.exists();
    if exists {
        match std::fs::read_to_string(&marker) {
            // A generated certificate that still covers every host.
            Ok(have) if have == wanted => return Ok(()),
            Ok(_) => {}
            // Operator-provided certificate: never overwritten.
            Err(_) => return Ok(()),
        }
    }
    let gen_err = |e: &dyn std::fmt::Display| TlsError::Generate(e.to_string());
    let mut names = hosts.to_vec();
    names.push("localhost".into());
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| gen_err(&e))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Portcullis development certificate",
    );
    let key_pair = rcgen::KeyPair::generate().map_err(|e| gen_err(&e))?;
    let certificate = params.self_signed(&key_pair).map_err(|e| gen_err(&e))?;
    for p in [cert, key] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| gen_err(&e))?;
        }
    }
    write_private(key, key_pair.serialize_pem().as_bytes()).map_err(|e| gen_err(&e))?;
    std::fs::write(cert, certificate.pem()).map_err(|e| gen_err(&e))?;
    std::fs::write(&marker, wanted).map_err(|e| gen_err(&e))?;
    tracing::warn!(cert = %cert.display(), hosts = ?hosts, "generated a self-signed development certificate");
    Ok(())
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
