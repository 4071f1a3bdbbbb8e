//! What the fuzz targets and the seed generator share: a fixed clock, the fixed keys in
//! `fuzz/keys/` (test keys, used for nothing else), token signing, a local OpenID
//! Provider for discovery, and scratch folders on tmpfs.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::idp::{IdpConfig, PendingAuth, Provider};
use portcullis::session::keys::KeyRing;
use portcullis::session::seal::Sealer;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The instant every target runs at (2025-10-09), in seconds and microseconds.
pub const NOW_S: i64 = 1_760_000_000;
pub const NOW_US: i64 = NOW_S * 1_000_000;

/// The issuer of app tokens.
pub const APP_ISS: &str = "https://auth.fuzz.test";
/// The local IdP: its host name resolves to a server on 127.0.0.1 for our client only.
pub const IDP_HOST: &str = "idp.fuzz.invalid";
pub const IDP_ISSUER: &str = "http://idp.fuzz.invalid";
pub const IDP_CLIENT: &str = "portcullis-fuzz";
pub const IDP_NONCE: &str = "fuzz-nonce-0123456789";
/// The Shared Signals transmitter (its keys are the IdP's).
pub const SSF_ISS: &str = "https://transmitter.fuzz.test/";
pub const SSF_AUD: &str = "https://auth.fuzz.test/ssf/fuzz";

pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys")
}

/// The app-token key ring (`fuzz/keys/app`).
pub fn app_ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::load(&private_copy("app")).expect("fuzz/keys/app"))
}

/// A copy of `fuzz/keys/<name>` readable by its owner only: the key ring refuses a secret
/// open to others, and git checks files out 0644.
fn private_copy(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch(&format!("keys-{name}"));
    let entries = std::fs::read_dir(keys_dir().join(name)).expect("fuzz/keys folder");
    for entry in entries {
        let from = entry.expect("fuzz/keys entry").path();
        let to = dir.join(from.file_name().expect("file name"));
        std::fs::copy(&from, &to).expect("copy a fuzz key");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
            .expect("chmod a fuzz key");
    }
    dir
}

/// Seals under a fixed secret: `k1` active.
pub fn sealer() -> &'static Sealer {
    static S: OnceLock<Sealer> = OnceLock::new();
    S.get_or_init(|| Sealer::new("k1", [("k1", SEAL_SECRET_1.as_slice())]))
}

/// The same cluster after a rotation: `k2` active, `k1` still known.
pub fn rotated_sealer() -> &'static Sealer {
    static S: OnceLock<Sealer> = OnceLock::new();
    S.get_or_init(|| {
        Sealer::new(
            "k2",
            [
                ("k1", SEAL_SECRET_1.as_slice()),
                ("k2", b"fuzz seal secret two".as_slice()),
            ],
        )
    })
}

/// Another cluster that also calls its key `k1`.
pub fn foreign_sealer() -> &'static Sealer {
    static S: OnceLock<Sealer> = OnceLock::new();
    S.get_or_init(|| Sealer::new("k1", [("k1", b"another cluster's secret".as_slice())]))
}

const SEAL_SECRET_1: &[u8; 20] = b"fuzz seal secret one";

/// One of the IdP's (and the SSF transmitter's) signing keys.
pub struct SigningKey {
    pub kid: &'static str,
    pub alg: Algorithm,
    pub enc: EncodingKey,
    pub jwk: Jwk,
}

/// `es-1` (ES256) and `rs-1` (RS256), from `fuzz/keys/idp-*.pem`.
pub fn idp_keys() -> &'static [SigningKey; 2] {
    static KEYS: OnceLock<[SigningKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let load = |kid: &'static str, alg: Algorithm, file: &str| {
            let pem = std::fs::read(keys_dir().join(file)).expect("fuzz/keys");
            let enc = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_rsa_pem(&pem),
            }
            .expect("a PEM key");
            let mut jwk = Jwk::from_encoding_key(&enc, alg).expect("a JWK");
            jwk.common.key_id = Some(kid.into());
            SigningKey { kid, alg, enc, jwk }
        };
        [
            load("es-1", Algorithm::ES256, "idp-es256.pem"),
            load("rs-1", Algorithm::RS256, "idp-rs256.pem"),
        ]
    })
}

/// The IdP's JWKS document.
pub fn jwks_json() -> String {
    let keys: Vec<&Jwk> = idp_keys().iter().map(|k| &k.jwk).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// Signs `payload` with the IdP key `key` (0: ES256, 1: RS256) and header `typ`.
pub fn sign_jws(key: usize, typ: Option<&str>, payload: &serde_json::Value) -> String {
    let k = &idp_keys()[key % 2];
    let mut h = Header::new(k.alg);
    h.kid = Some(k.kid.into());
    h.typ = typ.map(str::to_string);
    jsonwebtoken::encode(&h, payload, &k.enc).expect("signing")
}

/// The sign-in a fuzzed ID token answers.
pub fn pending() -> PendingAuth {
    PendingAuth {
        idp: "fuzz".into(),
        state: "fuzz-state".into(),
        nonce: IDP_NONCE.into(),
        pkce_verifier: "fuzz-verifier".into(),
        created: NOW_US - 10_000_000,
        force_reauth: false,
        acr_values: Vec::new(),
    }
}

/// A single-threaded runtime to drive the async entry points.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A discovered [`Provider`] for the local IdP: a thread serving the discovery document
/// and the JWKS on 127.0.0.1, which only our client resolves `idp.fuzz.invalid` to.
pub fn idp_provider(rt: &tokio::runtime::Runtime) -> Provider {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || serve_idp(listener));
    // Installs the process's rustls provider, which reqwest needs.
    let _ = portcullis::idp::http_client();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(IDP_HOST, addr)
        .build()
        .expect("client");
    let cfg = IdpConfig {
        name: "fuzz".into(),
        display_name: "Fuzz".into(),
        issuer: IDP_ISSUER.into(),
        client_id: IDP_CLIENT.into(),
        client_secret: "secret".into(),
        scopes: vec!["openid".into(), "email".into()],
        groups_claim: "groups".into(),
        end_session: false,
        mfa_acr_values: Vec::new(),
        reauth: portcullis::idp::Reauth::Require,
    };
    rt.block_on(Provider::discover(cfg, &http))
        .expect("discovery against the local IdP")
}

fn serve_idp(listener: TcpListener) {
    let discovery = serde_json::json!({
        "issuer": IDP_ISSUER,
        "authorization_endpoint": format!("{IDP_ISSUER}/authorize"),
        "token_endpoint": format!("{IDP_ISSUER}/token"),
        "jwks_uri": format!("{IDP_ISSUER}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
    })
    .to_string();
    let jwks = jwks_json();
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&req);
        let body = if text.starts_with("GET /.well-known/openid-configuration") {
            &discovery
        } else {
            &jwks
        };
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// A folder of this process for `name`, emptied: on tmpfs when there is one, so the
/// targets that write files (and fsync them) stay fast.
pub fn scratch(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("portcullis-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// SCIM user ids the store starts with (the ids of the fixtures in tests/fixtures/scim).
pub const SCIM_USERS: [&str; 5] = [
    "23a35c27-23d3-4c03-b4c5-6443c09e7173",
    "89bb1940-b905-4575-9e7f-6f887cfb368e",
    "5171a35d82074e068ce2",
    "6764549bef60420686bc",
    "7f4bc1a3-285e-48ae-8202-5accb43efb0e",
];
/// SCIM group ids the store starts with.
pub const SCIM_GROUPS: [&str; 5] = [
    "abf4dd94-a4c0-4f67-89c9-76b03340cb9b",
    "a99962b9f99d4c4fac67",
    "40734ae655284ad3abcc",
    "cdb1ce18f65944079d37",
    "fa2ce26709934589afc5",
];

/// A SCIM store holding those users (varied names, emails, states) and groups.
pub fn scim_store() -> portcullis::signals::scim::MemoryStore {
    use portcullis::signals::scim::{Email, GroupRecord, MemoryStore, Name, ScimStore, UserRecord};
    let store = MemoryStore::new();
    for (i, id) in SCIM_USERS.iter().enumerate() {
        let user = UserRecord {
            id: id.to_string(),
            user_name: format!("user{i}@example.com"),
            external_id: (i % 2 == 0).then(|| format!("ext-{i}")),
            active: i != 3,
            display_name: (i != 1).then(|| format!("User Number {i}")),
            name: Name {
                given_name: Some(["Ann", "Bob", "Cy", "Di", "Ed"][i].into()),
                family_name: (i != 4).then(|| "Doe".into()),
                ..Name::default()
            },
            emails: vec![Email {
                value: format!("User{i}@Example.com"),
                kind: Some(if i % 2 == 0 { "work" } else { "home" }.into()),
                primary: true,
                display: None,
            }],
            created: NOW_US - 1_000_000_000,
            version: NOW_US - 1_000_000 + i as i64,
            deleted: false,
        };
        store.put_user(user, None).expect("a fresh store");
    }
    for (i, id) in SCIM_GROUPS.iter().enumerate() {
        let group = GroupRecord {
            id: id.to_string(),
            display_name: format!("Group {i}"),
            external_id: None,
            members: SCIM_USERS[..i].iter().map(|s| s.to_string()).collect(),
            created: NOW_US - 1_000_000_000,
            version: NOW_US - 1_000_000 + i as i64,
            deleted: false,
        };
        store.put_group(group, None).expect("a fresh store");
    }
    store
}
