//! Writes the seed corpora under `fuzz/corpus/<target>/` with the real encoders and the
//! fixed keys of `fuzz/keys/`: small, meaningful inputs (real cookies, tokens, heads,
//! bodies, journals, the SCIM fixtures, the shipped gateway.toml...) that the fuzzer
//! mutates from. Run it again after a format change:
//! `cargo run --manifest-path fuzz/Cargo.toml -p seedgen`.

use fuzz_common::*;
use portcullis::fuzzing::{Framing, LogSync, RecordLog};
use portcullis::idp::BACKCHANNEL_LOGOUT_EVENT;
use portcullis::revocation::meta::MetaIndex;
use portcullis::revocation::set::RevocationSet;
use portcullis::revocation::{RevocationRecord, Scope};
use portcullis::session::seal::Purpose;
use portcullis::session::token::{Claims, binding_claim, sign};
use portcullis::signals::ssf::CAEP;
use portcullis::sync::wire::{encode_buckets, encode_set, put_entry};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// Replaces the seeds of `target` with `seeds` (name, bytes).
fn write<N: AsRef<str>>(target: &str, seeds: Vec<(N, Vec<u8>)>) {
    let dir = corpus().join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name.as_ref()), bytes).expect("seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

fn with(ctl: &[u8], rest: &[u8]) -> Vec<u8> {
    [ctl, rest].concat()
}

fn app_claims(aud: &str) -> Claims {
    Claims {
        iss: APP_ISS.into(),
        aud: aud.into(),
        sub: "demo@example.com".into(),
        email: "demo@example.com".into(),
        groups: vec!["staff".into(), "ops".into()],
        sid: "Qm9vdHN0cmFwU2Vzc2lvbklk".into(),
        jti: "7c2b9c3e1f".into(),
        iat: NOW_S - 10,
        exp: NOW_S + 3600,
        nbf: None,
        iat_us: (NOW_S - 10) * 1_000_000 + 123_456,
        bnd: Some(binding_claim("binding-secret")),
    }
}

fn app_token(c: &Claims) -> String {
    sign(app_ring(), c).expect("sign")
}

fn cookies() {
    let tok = app_token(&app_claims("echo"));
    let session = app_token(&app_claims(APP_ISS));
    write(
        "cookies",
        vec![
            ("browser", format!("_ga=GA1.1.1234.5678; portcullis_app={tok}; portcullis_binding=YmluZGluZy1zZWNyZXQ; theme=dark").into_bytes()),
            ("auth-domain", format!("portcullis_session={session}; portcullis_csrf=Q1NSRl90b2tlbl8x").into_bytes()),
            ("http2-split", format!("a=1\0portcullis_app={tok}\0portcullis_binding=bnd\0b=2").into_bytes()),
            ("duplicate", b"portcullis_app=a.b.c; x=1; portcullis_app=d.e.f".to_vec()),
            ("malformed", b"portcullis_binding=a\"b; portcullis_csrf=\xc3\xa9".to_vec()),
            ("odd-pairs", b" ; =v; name ;portcullis_x=1;portcullis_session = s.t.u ;;  a = b=c ".to_vec()),
            ("none-of-ours", b"sessionid=abc123; csrftoken=xyz".to_vec()),
        ],
    );
}

fn app_tokens() {
    let good = app_claims("echo");
    let mut no_bnd = good.clone();
    no_bnd.bnd = None;
    let mut expired = good.clone();
    expired.exp = NOW_S - 1;
    let mut future = good.clone();
    future.nbf = Some(NOW_S + 3600);
    let alg_none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        app_token(&good).split('.').nth(1).unwrap_or_default()
    );
    let hs = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
    write(
        "app_token",
        vec![
            ("app", app_token(&good).into_bytes()),
            ("session", app_token(&app_claims(APP_ISS)).into_bytes()),
            ("no-binding", app_token(&no_bnd).into_bytes()),
            ("expired", app_token(&expired).into_bytes()),
            ("not-yet", app_token(&future).into_bytes()),
            ("other-aud", app_token(&app_claims("other")).into_bytes()),
            ("alg-none", alg_none.into_bytes()),
            ("hs256", hs.as_bytes().to_vec()),
            ("claims", serde_json::to_vec(&good).expect("json")),
            (
                "claims-bad-bnd",
                serde_json::to_vec(&Claims {
                    bnd: Some("short".into()),
                    ..good
                })
                .expect("json"),
            ),
        ],
    );
}

fn id_claims() -> Value {
    json!({
        "iss": IDP_ISSUER, "aud": IDP_CLIENT, "sub": "248289761001",
        "email": "Alice@Example.com", "email_verified": true, "nonce": IDP_NONCE,
        "iat": NOW_S - 5, "exp": NOW_S + 300, "auth_time": NOW_S - 30,
        "groups": ["staff", "admins"], "sid": "08a5019c-17e1-4977-8f42-65a12843ea02",
        "acr": "urn:mfa", "name": "Alice",
    })
}

fn id_tokens() {
    let c = id_claims();
    let mut multi = c.clone();
    multi["aud"] = json!([IDP_CLIENT, "other"]);
    multi["azp"] = json!(IDP_CLIENT);
    let mut unverified = c.clone();
    unverified["email_verified"] = json!(false);
    let mut stale = c.clone();
    stale["iat"] = json!(NOW_S - 3600);
    let mut bad_groups = c.clone();
    bad_groups["groups"] = json!("staff");
    write(
        "id_token",
        vec![
            ("es256", sign_jws(0, Some("JWT"), &c).into_bytes()),
            ("rs256", sign_jws(1, None, &c).into_bytes()),
            ("multi-aud", sign_jws(0, Some("JWT"), &multi).into_bytes()),
            (
                "unverified",
                sign_jws(0, Some("JWT"), &unverified).into_bytes(),
            ),
            ("claims", c.to_string().into_bytes()),
            ("claims-multi-aud", multi.to_string().into_bytes()),
            ("claims-stale", stale.to_string().into_bytes()),
            ("claims-bad-groups", bad_groups.to_string().into_bytes()),
        ],
    );
}

fn logout_tokens() {
    let c = json!({
        "iss": IDP_ISSUER, "aud": IDP_CLIENT, "iat": NOW_S - 5, "exp": NOW_S + 120,
        "jti": "bWJq", "sid": "08a5019c-17e1-4977-8f42-65a12843ea02", "sub": "248289761001",
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    });
    let mut sub_only = c.clone();
    sub_only.as_object_mut().expect("object").remove("sid");
    let mut nonce = c.clone();
    nonce["nonce"] = json!("n-0S6_WzA2Mj");
    write(
        "logout_token",
        vec![
            ("es256", sign_jws(0, Some("logout+jwt"), &c).into_bytes()),
            ("rs256-jwt-typ", sign_jws(1, Some("JWT"), &c).into_bytes()),
            (
                "sub-only",
                sign_jws(0, Some("logout+jwt"), &sub_only).into_bytes(),
            ),
            ("claims", c.to_string().into_bytes()),
            ("claims-nonce", nonce.to_string().into_bytes()),
            ("claims-sub-only", sub_only.to_string().into_bytes()),
        ],
    );
}

fn ssf_sets() {
    let set = |event: &str, body: Value, sub: Value| {
        json!({
            "iss": SSF_ISS, "aud": SSF_AUD, "iat": NOW_S - 5, "jti": "4d3559ec67504aaba65d40b0363faad8",
            "sub_id": sub, "events": { event: body },
        })
    };
    let email = json!({"format": "email", "email": "alice@example.com"});
    let revoked = set(
        &format!("{CAEP}session-revoked"),
        json!({"event_timestamp": NOW_S - 6, "reason_admin": {"en": "Landspeed Policy Violation"}}),
        json!({"format": "complex", "user": email, "session": {"format": "opaque", "id": "dMTlD|1600802906337.16|16008.16"}}),
    );
    let disabled = set(
        "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
        json!({"reason": "hijacking"}),
        json!({"format": "iss_sub", "iss": "https://idp.example.com/", "sub": "7375626A656374"}),
    );
    let verify = set(
        "https://schemas.openid.net/secevent/ssf/event-type/verification",
        json!({"state": "VGhpcyBpcyBhbiBleGFtcGxlIHN0YXRlIHZhbHVlLgo="}),
        json!({"format": "opaque", "id": "f67e39a0a4d34d56b3aa1bc4cff0069f"}),
    );
    let credential = set(
        &format!("{CAEP}credential-change"),
        json!({"credential_type": "password", "change_type": "update"}),
        email.clone(),
    );
    write(
        "ssf_set",
        vec![
            (
                "session-revoked",
                sign_jws(0, Some("secevent+jwt"), &revoked).into_bytes(),
            ),
            (
                "account-disabled-rs256",
                sign_jws(1, Some("secevent+jwt"), &disabled).into_bytes(),
            ),
            (
                "verification",
                sign_jws(0, Some("secevent+jwt"), &verify).into_bytes(),
            ),
            ("claims-session-revoked", revoked.to_string().into_bytes()),
            (
                "claims-credential-change",
                credential.to_string().into_bytes(),
            ),
            ("claims-disabled", disabled.to_string().into_bytes()),
        ],
    );
}

fn framing_guard() {
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
    let post_cl =
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world".as_slice();
    let chunked = b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=val\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n".as_slice();
    let ctl = [0x00u8, 0x07];
    write(
        "framing_guard",
        vec![
            ("keep-alive", with(&ctl, &[get, post_cl, chunked, get].concat())),
            ("cl-and-te", with(&ctl, b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
            ("duplicate-cl", with(&ctl, &[get, b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello".as_slice()].concat())),
            ("te-gzip", with(&ctl, b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
            ("upgrade", with(&ctl, &[b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".as_slice(), post_cl].concat())),
            ("connect", with(&ctl, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01")),
            ("h2-preface", with(&ctl, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00")),
            ("bare-lf", with(&[0x81, 0x02], b"\r\n\r\nGET / HTTP/1.1\nHost: a\n\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab")),
            ("obs-fold", with(&ctl, b"GET / HTTP/1.1\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n")),
        ],
    );
}

fn origin_head() {
    let c = [0x0cu8];
    write(
        "origin_head",
        vec![
            ("length", with(&c, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")),
            ("chunked", with(&c, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Hop\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
            ("interim", with(&c, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")),
            ("http10", with(&c, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")),
            ("te-and-cl", with(&c, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")),
            ("conflicting", with(&c, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")),
            ("until-close", with(&c, b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nnot here")),
            ("head", with(&[0x01], b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n")),
            ("bare-lf", with(&c, b"HTTP/1.1 200 OK\nContent-Length: 0\n\n")),
            ("switch", with(&c, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")),
        ],
    );
}

fn chunked_body() {
    write(
        "chunked_body",
        vec![
            ("simple", with(&[0x10], b"5\r\nhello\r\n0\r\n\r\n")),
            ("many", with(&[0x04], b"1\r\na\r\nA\r\n0123456789\r\n1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n")),
            ("extensions", with(&[0x20], b"5 ; name=\"quo\\\"ted\" ; flag\r\nhello\r\n0;last\r\n\r\n")),
            ("trailers", with(&[0x08], b"3\r\nabc\r\n0\r\nX-Checksum: 99\r\nServer-Timing: db;dur=53\r\n\r\n")),
            ("partial", with(&[0x00], b"10\r\nonly some of it")),
            ("bad-crlf", with(&[0x00], b"3\r\nabcX\r\n0\r\n\r\n")),
            ("length", with(&[0xff], b"exactly this body and then some more")),
        ],
    );
}

fn record(scope: Scope, target: &str, nb: i64) -> RevocationRecord {
    RevocationRecord {
        id: format!("rev-{nb}"),
        scope,
        target: target.into(),
        not_before_us: nb,
        reason: "offboarding".into(),
        actor: "ops".into(),
        node: "gw-1".into(),
        external_id: (nb % 2 == 0).then(|| format!("INC-{nb}")),
    }
}

fn sample_set() -> (RevocationSet, MetaIndex) {
    let set = RevocationSet::new();
    let meta = MetaIndex::default();
    for (scope, target, nb) in [
        (Scope::User, "alice@example.com", NOW_US - 5),
        (Scope::Session, "Qm9vdHN0cmFwU2Vzc2lvbklk", NOW_US - 50),
        (Scope::Group, "contractors", NOW_US - 500),
        (Scope::App, "echo", NOW_US - 5000),
        (Scope::All, "*", NOW_US - 50_000),
    ] {
        set.apply(scope, target, nb);
        meta.insert(record(scope, target, nb));
    }
    set.apply(Scope::Session, "no-meta-session", NOW_US);
    (set, meta)
}

fn sync_wire() {
    let (set, meta) = sample_set();
    let mut entries = Vec::new();
    put_entry(
        &mut entries,
        Scope::User,
        "bob@example.com",
        NOW_US,
        Some(&record(Scope::User, "bob@example.com", NOW_US)),
    );
    put_entry(&mut entries, Scope::Group, "ünïcode", 7, None);
    write(
        "sync_wire",
        vec![
            ("set-with-meta", encode_set(&set, &meta, None)),
            (
                "set-without-meta",
                encode_set(&set, &MetaIndex::default(), None),
            ),
            ("entries", entries),
            ("buckets", encode_buckets(&set)[..64].to_vec()),
        ],
    );
}

/// The bytes a record log of `framing` holds after appending `payloads`.
fn log_bytes(framing: Framing, payloads: &[Vec<u8>]) -> Vec<u8> {
    let dir = scratch("seedgen");
    let path = dir.join("log");
    let (log, _) = RecordLog::open(&path, framing).expect("open");
    log.append(payloads, LogSync::Buffered).expect("append");
    drop(log);
    std::fs::read(&path).expect("read")
}

fn sync_journal() {
    let (set, meta) = sample_set();
    let snapshot = encode_set(&set, &meta, None)[12..].to_vec();
    let mut batch = Vec::new();
    put_entry(&mut batch, Scope::Session, "pulled-1", NOW_US + 1, None);
    put_entry(
        &mut batch,
        Scope::User,
        "carol@example.com",
        NOW_US + 2,
        None,
    );
    let journal = log_bytes(Framing::Frames(b"PCJ2"), &[snapshot, batch]);
    // The earlier format: [scope][len u16][target][nb i64], no meta.
    let mut old = Vec::new();
    for (t, nb) in [("old-1", 10i64), ("old-2", NOW_US)] {
        old.push(Scope::Session as u8);
        old.extend_from_slice(&(t.len() as u16).to_le_bytes());
        old.extend_from_slice(t.as_bytes());
        old.extend_from_slice(&nb.to_le_bytes());
    }
    let old = log_bytes(Framing::Frames(b"PCJ1"), &[old]);
    let input = |old: &[u8], new: &[u8], horizon: u8| {
        let mut v = (old.len() as u16).to_le_bytes().to_vec();
        v.push(horizon);
        v.extend_from_slice(old);
        v.extend_from_slice(new);
        v
    };
    let torn = &journal[..journal.len() - 7];
    write(
        "sync_journal",
        vec![
            ("journal", input(&[], &journal, 0)),
            ("journal-torn", input(&[], torn, 0)),
            ("migrate", input(&old, &journal, 0)),
            ("horizon", input(&old, &journal, 0x7f)),
        ],
    );
}

fn record_log() {
    let lines: Vec<Vec<u8>> = [
        r#"{"id":"r1","scope":"user","target":"alice@example.com","not_before_us":1760000000000000,"reason":"hr","actor":"ops","node":"gw-1"}"#,
        r#"{"id":"r2","scope":"all","target":"*","not_before_us":1760000000000001,"reason":"incident","actor":"ops","node":"gw-2"}"#,
        "",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    let mut seeds = Vec::new();
    for (ctl, name, framing) in [
        (0u8, "lines", Framing::Lines),
        (1, "checked", Framing::CheckedLines),
        (2, "frames", Framing::Frames(b"FUZZ")),
    ] {
        let bytes = log_bytes(framing, &lines);
        seeds.push((name, with(&[ctl], &bytes)));
        let torn = [bytes.as_slice(), &bytes[..bytes.len() / 2]].concat();
        seeds.push(match ctl {
            0 => ("lines-torn", with(&[0x90], &torn)),
            1 => ("checked-torn", with(&[0x91], &torn)),
            _ => ("frames-torn", with(&[0x92], &torn)),
        });
    }
    let mut damaged = log_bytes(Framing::CheckedLines, &lines);
    damaged[12] ^= 0x20;
    seeds.push(("checked-damaged", with(&[0x01], &damaged)));
    write("record_log", seeds);
}

fn bulk_rows() {
    write(
        "bulk_rows",
        vec![
            ("csv", with(&[0], b"name,user,team\n\"Doe, Jane\",jane@example.com,ops\r\nBob,BOB@example.com,\n\n,,\n")),
            ("json-list", with(&[1], br#"["a@example.com", {"user": "b@example.com"}, 7, {"name": "x"}]"#)),
            ("json-object", with(&[3], br#"{"users": ["a@example.com", {"user": "b@example.com"}], "reason": "offboarding"}"#)),
            ("csv-quoted", with(&[2], b"User\n\"multi\nline\"@example.com\n\"a\"\"quote\"\n")),
            ("csv-no-user", with(&[0], b"email\nx@example.com\n")),
        ],
    );
}

fn scim_request() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scim");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/scim")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut seeds = Vec::new();
    for p in &names {
        let v: Value = serde_json::from_slice(&std::fs::read(p).expect("fixture")).expect("JSON");
        let mut line = format!(
            "{} {}",
            v["method"].as_str().unwrap_or("GET"),
            v["path"].as_str().unwrap_or("/")
        );
        if let Some(q) = v["query"].as_str() {
            line.push('?');
            line.push_str(q);
        }
        line.push('\n');
        if let Some(b) = v.get("body") {
            line.push_str(&serde_json::to_string_pretty(b).expect("JSON"));
        }
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("fixture")
            .to_string();
        seeds.push((name, line.into_bytes()));
    }
    seeds.push(("discovery".into(), b"GET /ServiceProviderConfig\n".to_vec()));
    seeds.push((
        "schemas".into(),
        b"GET /Schemas/urn:ietf:params:scim:schemas:core:2.0:User\n".to_vec(),
    ));
    write("scim_request", seeds);
}

fn scim_filter() {
    let filters = [
        r#"userName eq "user0@example.com""#,
        r#"externalId eq "ext-2""#,
        r#"emails[type eq "work" and value co "example"]"#,
        r#"name.familyName sw "D" and not (active eq false)"#,
        r#"displayName pr or (name.givenName ew "n")"#,
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        r#"members[value eq "23a35c27-23d3-4c03-b4c5-6443c09e7173"]"#,
        r#"displayName eq "Group 3""#,
        r#"emails[type eq "work"].value"#,
        "name.givenName",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        r#"userName Eq "USER1@EXAMPLE.COM" oR id ne "x""#,
    ];
    write(
        "scim_filter",
        filters
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("filter-{i}"), f.as_bytes().to_vec()))
            .collect(),
    );
}

fn config() {
    let shipped = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml"))
        .expect("gateway.toml");
    let full = br#"
[gateway]
listen = "127.0.0.1:8443"
http_listen = "127.0.0.1:8080"
public_port = 443
auth_domain = "auth.example.com"
state_dir = "/var/lib/portcullis"
node_id = "gw-2"
trusted_proxies = ["10.0.0.0/8", "::1"]
max_header_bytes = 32768
origin_timeout = "30s"
workers = 2
[session]
global_duration = "8h 30m"
relogin_lockout = "90s"
token_cache_capacity = 1000
[login]
max_failures_per_user = 3
failure_window = "10m"
[control]
listen = "127.0.0.1:9443"
[[control.admin]]
name = "ops"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
[sync]
peers = ["http://10.0.0.2:9443", "http://10.0.0.3:9443"]
ack = "quorum"
max_staleness = "30s"
on_stale = "refuse"
[log]
format = "json"
level = "info,portcullis=debug"
[[app]]
name = "wiki"
hosts = ["wiki.example.com", "docs.example.com"]
origin = "http://127.0.0.1:3000/base"
same_site = "strict"
allow_groups = ["staff"]
unauthenticated = "401"
[[user]]
email = "Ann@Example.com"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$1JPLF/PygSO1EI/ZH5NP/Q$OQnekTkz+JjYtgMGYILdrKJUhf/U6QaXqE7C9TOkV1U"
groups = ["staff"]
disabled = true
"#;
    let redis = String::from_utf8_lossy(&shipped).replace(
        "peers = []",
        "backend = \"redis\"\nredis_url = \"rediss://:pw@redis.internal:6380/2\"\nredis_prefix = \"edge\"",
    );
    write(
        "config",
        vec![
            ("shipped", shipped.clone()),
            ("full", full.to_vec()),
            ("redis", redis.into_bytes()),
            ("syntax-error", b"[gateway\nlisten=".to_vec()),
        ],
    );
}

fn seal() {
    let s = sealer();
    let code = s
        .seal(Purpose::Handoff, b"code:4f9c2a;app=echo;exp=1760000060")
        .expect("seal");
    let state = s
        .seal(
            Purpose::SignInState,
            br#"{"idp":"corp","state":"af0ifjsldkj","nonce":"n-0S6_WzA2Mj"}"#,
        )
        .expect("seal");
    write(
        "seal",
        vec![
            ("handoff", with(&[0x00], code.as_bytes())),
            ("sign-in-state", with(&[0x01], state.as_bytes())),
            ("wrong-purpose", with(&[0x01], code.as_bytes())),
            ("plain", with(&[0x06], b"any plaintext at all")),
        ],
    );
}

fn main() {
    cookies();
    app_tokens();
    id_tokens();
    logout_tokens();
    ssf_sets();
    framing_guard();
    origin_head();
    chunked_body();
    sync_wire();
    sync_journal();
    record_log();
    bulk_rows();
    scim_request();
    scim_filter();
    config();
    seal();
}
