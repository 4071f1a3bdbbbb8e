//! The per-request hot path, piece by piece, without sockets.
//!
//! Each benchmark is named for what it measures:
//! - `cookies/parse_browser_cookie_header`: finding our cookies in a realistic Cookie header.
//! - `token/verify_cache_hit`: `Verifier::verify` answered from the cache.
//! - `token/verify_signature_es256`: the full check of one token (cache miss).
//! - `token/verify_cache_miss_and_insert`: `Verifier::verify` after `forget` (miss + insert).
//! - `token/verify_shared_cache_hit`: `Verifier::verify` of 8,192 tokens in turn: each is
//!   in the node's cache but no longer in this thread's own (which holds 4,096), as for
//!   a gateway with many more active users than a worker thread keeps.
//! - `revocation/check_not_revoked/{1000,1000000}`: `RevocationSet::check` with entries in
//!   every scope, the token (three groups) not revoked, so all six lookups are done.
//! - `revocation/check_not_revoked_one_group/...`: the same for a token with one group
//!   (four map lookups instead of six).
//! - `revocation/check_not_revoked_keys_present/...`: the same, and the token's own sid,
//!   user, app and groups have older entries (every lookup finds its key and compares).
//! - `headers/rewrite_for_origin`: what `proxy::forward` does to a browser request's
//!   headers (framing check, hop-by-hop strip, gateway headers, X-Forwarded-*, cookie
//!   strip, assertion header).
//! - `decision/cookie_parse_check_app_allows`: the whole authenticate + authorize step
//!   (`GatewayCookies::parse` + `Authenticator::check_app` + `App::allows`) on a real node.
//! - `decision/unauthenticated_no_cookie`: the same step for a request with no session.
//! - `origin/parse_response_head`: reading nginx's response head (nine headers) off the
//!   origin connection into a response.
//! - `origin/encode_request_head`: writing a forwarded browser request's head.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use portcullis::clock::{Clock, SystemClock};
use portcullis::config::{Config, Secrets};
use portcullis::proxy::headers::{
    ASSERTION, check_framing, set_forwarded, strip_gateway_headers, strip_hop_by_hop,
};
use portcullis::revocation::Scope;
use portcullis::revocation::set::RevocationSet;
use portcullis::server::Node;
use portcullis::session::cookies::{GatewayCookies, strip_for_origin};
use portcullis::session::keys::KeyRing;
use portcullis::session::token::{Claims, Verifier, binding_claim, sign, verify_signature};
use std::hint::black_box;
use std::sync::Arc;

const ISS: &str = "https://auth.localhost";
const BINDING_SECRET: &str = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";

fn now_s() -> i64 {
    SystemClock.now_us() / 1_000_000
}

/// Claims shaped like the app tokens the gateway mints.
fn app_claims(aud: &str, iss: &str, sid: &str, email: &str, groups: &[&str]) -> Claims {
    let now = now_s();
    Claims {
        iss: iss.into(),
        aud: aud.into(),
        sub: email.into(),
        email: email.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        sid: sid.into(),
        jti: "bq1H2xJm3cKf5tYw".into(),
        iat: now,
        exp: now + 24 * 3600,
        nbf: None,
        iat_us: now * 1_000_000 + 123_456,
        bnd: Some(binding_claim(BINDING_SECRET)),
    }
}

/// The headers a current Chromium sends on a same-origin navigation, plus a client that
/// tries to forge forwarding and gateway headers.
fn browser_headers(app_token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |k: &str, v: &str| {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    };
    add("host", "app.localhost:8443");
    add("connection", "keep-alive");
    add("cache-control", "max-age=0");
    add(
        "sec-ch-ua",
        "\"Chromium\";v=\"128\", \"Not;A=Brand\";v=\"24\", \"Google Chrome\";v=\"128\"",
    );
    add("sec-ch-ua-mobile", "?0");
    add("sec-ch-ua-platform", "\"Linux\"");
    add("upgrade-insecure-requests", "1");
    add(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36",
    );
    add(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    );
    add("sec-fetch-site", "same-origin");
    add("sec-fetch-mode", "navigate");
    add("sec-fetch-user", "?1");
    add("sec-fetch-dest", "document");
    add(
        "referer",
        "https://app.localhost:8443/dashboard?tab=overview",
    );
    add("accept-encoding", "gzip, deflate, br, zstd");
    add("accept-language", "en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7");
    add(
        "cookie",
        &format!(
            "_ga=GA1.1.1234567890.1717171717; _ga_ABCDEF1234=GS1.1.1717171717.3.1.1717171800.0.0.0; \
             theme=dark; locale=en-GB; csrftoken=8f1d3c5e7a9b2d4f6e8a0c2e4b6d8f0a; \
             portcullis_app={app_token}; portcullis_binding={BINDING_SECRET}; sidebar=collapsed"
        ),
    );
    add("x-forwarded-for", "6.6.6.6");
    add("portcullis-jwt-assertion", "forged");
    add("priority", "u=0, i");
    h
}

fn config_text(origin: &str, password_hash: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
auth_domain = "auth.localhost"
state_dir = "state"
node_id = "bench-1"

[session]
global_duration = "24h"
relogin_lockout = "60s"

[control]
listen = "127.0.0.1:0"
[[control.admin]]
name = "ops"
token_file = "state/admin.token"

[log]
access_log = false

[[app]]
name = "app"
hosts = ["app.localhost"]
origin = "{origin}"
binding_cookie = true
allow_emails = ["*@example.com"]

[[user]]
email = "demo@example.com"
password_hash = "{password_hash}"
groups = ["staff"]
"#
    )
}

fn bench_cookies(c: &mut Criterion) {
    let h = browser_headers(&"x".repeat(600).replace('x', "a"));
    c.bench_function("cookies/parse_browser_cookie_header", |b| {
        b.iter(|| {
            let c = GatewayCookies::parse(black_box(&h)).unwrap();
            black_box(c.app.is_some() && c.binding.is_some())
        })
    });
}

fn bench_tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyRing::load_or_create(dir.path()).unwrap();
    let claims = app_claims(
        "app",
        ISS,
        "Qm8t0xKZr1pQ4vLc9sYw2A",
        "demo@example.com",
        &["staff"],
    );
    let token = sign(&keys, &claims).unwrap();
    println!("app token: {} bytes", token.len());
    let now_us = SystemClock.now_us();
    let verifier = Verifier::new(100_000);
    verifier.verify(&keys, &token, "app", ISS, now_us).unwrap();

    let mut g = c.benchmark_group("token");
    g.bench_function("verify_cache_hit", |b| {
        b.iter(|| {
            let (v, hit) = verifier
                .verify(&keys, black_box(&token), "app", ISS, now_us)
                .unwrap();
            debug_assert!(hit);
            black_box(v)
        })
    });
    g.bench_function("verify_signature_es256", |b| {
        b.iter(|| black_box(verify_signature(&keys, black_box(&token), ISS).unwrap()))
    });
    g.bench_function("verify_cache_miss_and_insert", |b| {
        b.iter(|| {
            verifier.forget(&token);
            let (v, hit) = verifier
                .verify(&keys, black_box(&token), "app", ISS, now_us)
                .unwrap();
            debug_assert!(!hit);
            black_box(v)
        })
    });
    let many: Vec<String> = (0..8192)
        .map(|i| {
            let sid = format!("{i:022}");
            sign(
                &keys,
                &app_claims("app", ISS, &sid, "demo@example.com", &["staff"]),
            )
            .unwrap()
        })
        .collect();
    // Signed after the benchmarks above: their own clock reading.
    let now_us = SystemClock.now_us();
    for t in &many {
        verifier.verify(&keys, t, "app", ISS, now_us).unwrap();
    }
    let mut next = 0;
    g.bench_function("verify_shared_cache_hit", |b| {
        b.iter(|| {
            next = (next + 1) % many.len();
            let (v, hit) = verifier
                .verify(&keys, black_box(&many[next]), "app", ISS, now_us)
                .unwrap();
            debug_assert!(hit);
            black_box(v)
        })
    });
    g.bench_function("sign_es256", |b| {
        b.iter(|| black_box(sign(&keys, black_box(&claims)).unwrap()))
    });
    g.finish();
}

/// Fills a set with `n` entries spread over every scope the way a busy deployment would
/// see them: mostly sessions (logouts), then users (offboarding), some groups and apps.
pub fn fill_revocations(set: &RevocationSet, n: usize, base_us: i64) {
    for i in 0..n {
        let nb = base_us + i as i64;
        match i % 20 {
            0..=12 => set.apply(Scope::Session, &format!("sid{i:019}"), nb),
            13..=18 => set.apply(Scope::User, &format!("user{i}@example.com"), nb),
            _ if i % 80 == 19 => set.apply(Scope::Group, &format!("group-{i}"), nb),
            _ if i % 80 == 59 => set.apply(
                Scope::Member,
                &portcullis::revocation::member_target(&format!("user{i}@example.com"), "staff"),
                nb,
            ),
            _ => set.apply(Scope::App, &format!("app-{i}"), nb),
        };
    }
}

fn bench_revocation(c: &mut Criterion) {
    let mut g = c.benchmark_group("revocation");
    let now_us = SystemClock.now_us();
    for n in [1_000usize, 1_000_000] {
        let set = RevocationSet::new();
        // Entries older than the token: none revokes it, every scope has entries.
        fill_revocations(&set, n, now_us - 3_600_000_000);
        let mut claims = app_claims(
            "app",
            ISS,
            "Qm8t0xKZr1pQ4vLc9sYw2A",
            "demo@example.com",
            &["staff", "engineering", "oncall"],
        );
        claims.iat_us = now_us;
        for s in Scope::ALL {
            assert!(set.len_by_scope(s) > 0 || s == Scope::All, "{s:?} empty");
        }
        assert_eq!(set.check(&claims, true), None);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("check_not_revoked", n), &n, |b, _| {
            b.iter(|| black_box(set.check(black_box(&claims), true)))
        });
        // The demo user's shape: one group, so four lookups instead of six.
        let mut one_group = claims.clone();
        one_group.groups.truncate(1);
        g.bench_with_input(
            BenchmarkId::new("check_not_revoked_one_group", n),
            &n,
            |b, _| b.iter(|| black_box(set.check(black_box(&one_group), true))),
        );
        // The token's own keys have older entries: each lookup finds its key and compares.
        set.apply(Scope::Session, &claims.sid, now_us - 10);
        set.apply(Scope::User, &claims.sub, now_us - 10);
        set.apply(Scope::App, &claims.aud, now_us - 10);
        for grp in &claims.groups {
            set.apply(Scope::Group, grp, now_us - 10);
        }
        assert_eq!(set.check(&claims, true), None);
        g.bench_with_input(
            BenchmarkId::new("check_not_revoked_keys_present", n),
            &n,
            |b, _| b.iter(|| black_box(set.check(black_box(&claims), true))),
        );
    }
    g.finish();
}

fn bench_headers(c: &mut Criterion) {
    let token = "e".repeat(620);
    let base = browser_headers(&token);
    let assertion = HeaderValue::from_str(&token).unwrap();
    let peer = HeaderValue::from_static("192.0.2.44");
    c.bench_function("headers/rewrite_for_origin", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| {
                check_framing(h).unwrap();
                let host = h.get(header::HOST).cloned();
                strip_hop_by_hop(h, false);
                strip_gateway_headers(h);
                set_forwarded(h, &peer, false, "https", host.as_ref());
                strip_for_origin(h, false);
                h.insert(ASSERTION, assertion.clone());
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("headers/strip_for_origin_only", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| strip_for_origin(black_box(h), false),
            BatchSize::SmallInput,
        )
    });
}

fn bench_decision(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let hash = portcullis::login::users::hash_password("portcullis-demo").unwrap();
    let text = config_text("http://127.0.0.1:9", &hash);
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&text, &path, Secrets::Create).expect("config");
    let gw: Arc<Node> =
        Node::build(config, Arc::new(SystemClock) as Arc<dyn Clock>).expect("gateway");
    let rt = gw.live.load_full();
    let app = rt.app_for_host("app.localhost").expect("app").clone();
    let claims = app_claims(
        &app.name,
        &rt.config.issuer,
        "Qm8t0xKZr1pQ4vLc9sYw2A",
        "demo@example.com",
        &["staff"],
    );
    let token = sign(&gw.auth.keys(), &claims).unwrap();
    // Some realistic revocation state.
    fill_revocations(&gw.revocations, 10_000, gw.now_us() - 3_600_000_000);
    let headers = browser_headers(&token);
    let bare = {
        let mut h = browser_headers("x");
        h.remove(header::COOKIE);
        h
    };

    let decide = |h: &HeaderMap| -> bool {
        let Ok(cookies) = GatewayCookies::parse(h) else {
            return false;
        };
        match gw.auth.check_app(&rt, &app, &cookies) {
            Ok(v) => app.allows(&v.claims.email, &v.claims.groups),
            Err(_) => false,
        }
    };
    assert!(decide(&headers), "the benchmark token must pass");
    assert!(!decide(&bare));
    let mut g = c.benchmark_group("decision");
    g.bench_function("cookie_parse_check_app_allows", |b| {
        b.iter(|| black_box(decide(black_box(&headers))))
    });
    g.bench_function("unauthenticated_no_cookie", |b| {
        b.iter(|| black_box(decide(black_box(&bare))))
    });
    g.finish();
}

fn bench_origin(c: &mut Criterion) {
    use bytes::BytesMut;
    use portcullis::origin::head::{HeaderNames, encode_request, parse_response};
    let mut g = c.benchmark_group("origin");
    let raw: &[u8] =
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 12:00:00 GMT\r\n\
Content-Type: text/html\r\nContent-Length: 1024\r\nLast-Modified: Sun, 22 Nov 2026 11:00:00 GMT\r\n\
Connection: keep-alive\r\nETag: \"6920a5f0-400\"\r\nAccept-Ranges: bytes\r\n\r\n";
    let mut with_body = raw.to_vec();
    with_body.extend_from_slice(&[b'x'; 1024]);
    // The names carry over from one response to the next, as on a pooled connection.
    let mut names = HeaderNames::default();
    g.bench_function("parse_response_head", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&with_body[..]),
            |buf| black_box(parse_response(buf, &mut names, false)),
            BatchSize::SmallInput,
        )
    });
    let token = "e".repeat(620);
    let mut h = browser_headers(&token);
    h.insert(header::HOST, HeaderValue::from_static("app.example.com"));
    let mut req = http::Request::new(());
    *req.uri_mut() = "/dashboard/reports?week=47".parse().unwrap();
    *req.headers_mut() = h;
    let (parts, ()) = req.into_parts();
    let mut out = Vec::with_capacity(4096);
    g.bench_function("encode_request_head", |b| {
        b.iter(|| {
            out.clear();
            encode_request(black_box(&parts), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_origin,
    bench_cookies,
    bench_tokens,
    bench_revocation,
    bench_headers,
    bench_decision
);
criterion_main!(benches);
