//! The admin console over plain HTTP (reqwest against the in-process gateway): who gets
//! in, the console's own session, CSRF (Origin, per-form tokens, single use), re-auth
//! after `reauth_after`, escaping and security headers, and each page's action through
//! the real revocation engine (checked on the control API and the audit log).

use crate::common::*;
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub const CONSOLE: &str = r#"
[console]
admin_emails = ["demo@example.com"]
admin_groups = ["secops"]
"#;

pub const XSS_UA: &str = "Mozilla/5.0 <script>alert('pwned')</script> \"quoted\" & more";

pub fn auth(gw: &Gw, path: &str) -> String {
    gw.url("auth.localhost", path)
}

pub fn own_origin(gw: &Gw) -> String {
    format!("https://auth.localhost:{}", gw.port())
}

/// A browser-like client signed in to the console as `email`.
pub async fn console_client(gw: &Gw, email: &str, pw: &str) -> Client {
    let c = gw.client();
    let r = login_at(&c, &auth(gw, "/admin/"), email, pw).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.url());
    c
}

pub async fn get(c: &Client, url: &str) -> (StatusCode, HeaderMap, String) {
    let r = c
        .get(url)
        .header("accept", "text/html")
        .send()
        .await
        .expect("get");
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.unwrap_or_default())
}

pub async fn post(
    c: &Client,
    url: &str,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut rb = c.post(url).header("accept", "text/html").form(fields);
    if let Some(o) = origin {
        rb = rb.header("origin", o);
    }
    let r = rb.send().await.expect("post");
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.unwrap_or_default())
}

/// The confirmation page's form for `scope`/`target`: (action path, csrf token).
pub async fn confirm(gw: &Gw, c: &Client, scope: &str, target: &str) -> (String, String) {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("scope", scope)
        .append_pair("target", target)
        .finish();
    let (s, _, html) = get(c, &auth(gw, &format!("/admin/confirm?{q}"))).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let action = between(&html, r#"<form method="post" action=""#, "\"")
        .expect("form action")
        .replace("&amp;", "&");
    (action, extract(&html, "csrf").expect("csrf token"))
}

pub fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// A client that signs in with a given user agent.
pub fn client_with_ua(gw: &Gw, ua: &str) -> Client {
    let addr = gw.h().https_addr;
    Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent(ua)
        .resolve("echo.localhost", addr)
        .resolve("auth.localhost", addr)
        .build()
        .expect("client")
}

async fn revocations(gw: &Gw) -> Vec<Value> {
    let (s, v) = gw.admin(Method::GET, "/v1/revocations", None).await;
    assert_eq!(s, StatusCode::OK);
    v["revocations"].as_array().cloned().unwrap_or_default()
}

async fn sids(gw: &Gw, user: &str) -> Vec<String> {
    let (_, v) = gw
        .admin(Method::GET, &format!("/v1/sessions?user={user}"), None)
        .await;
    v["sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["sid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn console_is_off_without_its_table() {
    let gw = Gw::start("").await;
    let c = gw.client();
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    let (s, _, _) = get(&c, &auth(&gw, "/admin/")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = get(&c, &auth(&gw, "/admin/users")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_signed_in_admins_get_in() {
    let gw = Gw::start(CONSOLE).await;
    // Not signed in: to the form, and back to the console afterwards.
    let c = gw.client();
    let r = c.get(auth(&gw, "/admin/users?q=bob")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        location(&r).as_deref(),
        Some("/login?return_to=%2Fadmin%2Fusers%3Fq%3Dbob")
    );
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    let (s, _, html) = get(&admin, &auth(&gw, "/admin/users?q=bob")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("bob@example.com") && !html.contains("eve@other.org"),
        "{html}"
    );
    // Signed in but not an admin (bob is in neither list): 403, and no console cookie.
    let bob = gw.client();
    let r = login_at(&bob, &auth(&gw, "/admin/"), BOB, BOB_PW).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("Not an administrator"));
    let (s, _, _) = get(&bob, &auth(&gw, "/admin/apps")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Admins by group: bob's `contractors`.
    let gw2 = Gw::start(
        "[console]\nadmin_emails = [\"nobody@example.com\"]\nadmin_groups = [\"contractors\"]\n",
    )
    .await;
    console_client(&gw2, BOB, BOB_PW).await;
    let demo = gw2.client();
    let r = login_at(&demo, &auth(&gw2, "/admin/"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pages_set_strict_headers_and_escape_what_they_show() {
    let gw = Gw::start(CONSOLE).await;
    let bob = client_with_ua(&gw, XSS_UA);
    gw.login(&bob, "echo.localhost", "/", BOB, BOB_PW).await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    let mut nonces = Vec::new();
    for path in [
        "/admin/users",
        "/admin/user?email=bob%40example.com",
        "/admin/apps",
        "/admin/groups",
        "/admin/bulk",
        "/admin/audit",
        "/admin/cluster",
        "/admin/emergency",
    ] {
        let (s, h, html) = get(&admin, &auth(&gw, path)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {html}");
        let csp = h["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        let nonce = between(&csp, "'nonce-", "'").unwrap().to_string();
        assert!(
            html.contains(&format!("<style nonce=\"{nonce}\">")),
            "{path}"
        );
        // Every inline script carries the nonce; no inline handlers.
        assert_eq!(
            html.matches("<script").count(),
            html.matches(&format!("<script nonce=\"{nonce}\">")).count()
        );
        assert!(
            !html.contains(" onclick=") && !html.contains(" style=\""),
            "{path}"
        );
        nonces.push(nonce);
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 8, "a fresh nonce per response");
    // The user agent bob's client sent is shown as text.
    let (_, _, html) = get(&admin, &auth(&gw, "/admin/user?email=bob%40example.com")).await;
    assert!(
        html.contains("Mozilla/5.0 &lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &quot;quoted&quot; &amp; more"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"));
    // And on the confirmation of that session.
    let sid = sids(&gw, BOB).await.remove(0);
    let (_, _, html) = get(
        &admin,
        &auth(&gw, &format!("/admin/confirm?scope=session&target={sid}")),
    )
    .await;
    assert!(html.contains("&lt;script&gt;alert(") && !html.contains("<script>alert"));
}

#[tokio::test]
async fn actions_need_our_origin_the_console_cookie_and_a_fresh_token() {
    let gw = Gw::start(CONSOLE).await;
    let bob = gw.client();
    gw.login(&bob, "echo.localhost", "/", BOB, BOB_PW).await;
    let (admin, jar) = client_with_jar(gw.h().https_addr);
    let r = login_at(&admin, &auth(&gw, "/admin/"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (action, token) = confirm(&gw, &admin, "user", BOB).await;
    assert!(
        action.starts_with("/admin/revoke?back=%2Fadmin%2Fconfirm"),
        "{action}"
    );
    let url = auth(&gw, &action);
    let send = |tok: String, target: &'static str, origin: Option<String>| {
        let (admin, url) = (admin.clone(), url.clone());
        async move {
            let f = [
                ("csrf", tok.as_str()),
                ("scope", "user"),
                ("target", target),
                ("reason", "offboarding"),
            ];
            post(&admin, &url, &f, origin.as_deref()).await
        }
    };
    // Cross-site, no Origin, or `null`: refused before anything else.
    for origin in [
        Some("https://evil.localhost".to_string()),
        None,
        Some("null".to_string()),
    ] {
        let (s, _, html) = send(token.clone(), BOB, origin).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
        assert!(html.contains("cross-site"), "{html}");
    }
    let origin = Some(own_origin(&gw));
    // A forged token, a token for other targets, a token of another form.
    let forged = "k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
    let (s, _, html) = send(forged, BOB, origin.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    let (s, _, html) = send(token.clone(), EVE, origin.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(html.contains("changed after it was made"), "{html}");
    let (_, _, bulk) = get(&admin, &auth(&gw, "/admin/bulk")).await;
    let (s, _, _) = send(extract(&bulk, "csrf").unwrap(), BOB, origin.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The global session alone (no console cookie, as on a request another site starts).
    let session = cookie(&jar, &auth(&gw, "/"), "portcullis_session").expect("session cookie");
    let plain = client_for(gw.h().https_addr, false);
    let r = plain
        .post(&url)
        .header("origin", own_origin(&gw))
        .header("cookie", format!("portcullis_session={session}"))
        .form(&[
            ("csrf", token.as_str()),
            ("scope", "user"),
            ("target", BOB),
            ("reason", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        revocations(&gw).await.is_empty(),
        "nothing was revoked so far"
    );
    assert_eq!(sids(&gw, BOB).await.len(), 1);

    // The real thing.
    let (s, _, html) = send(token.clone(), BOB, origin.clone()).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("Revoked") && html.contains("bob@example.com"),
        "{html}"
    );
    let revs = revocations(&gw).await;
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0]["scope"], "user");
    assert_eq!(revs[0]["target"], BOB);
    assert_eq!(revs[0]["actor"], "console:demo@example.com");
    assert_eq!(revs[0]["reason"], "offboarding");
    // The Users page shows the relogin lockout and when it ends.
    let (_, _, users) = get(&admin, &auth(&gw, "/admin/users?q=bob")).await;
    assert!(
        users.contains("locked out until ") && users.contains(" UTC (1 min more)"),
        "{users}"
    );
    let audit = std::fs::read_to_string(gw.dir.join("state/audit.log")).unwrap();
    assert!(
        audit.contains(r#""actor":"console:demo@example.com""#),
        "{audit}"
    );
    assert!(sids(&gw, BOB).await.is_empty());
    let r = xhr(&bob, &gw.url("echo.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "bob is out");
    // The same form again: single use.
    let (s, _, html) = send(token, BOB, origin).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(html.contains("already submitted"), "{html}");
    assert_eq!(revocations(&gw).await.len(), 1);
}

/// The cookies `jar` holds for the console's pages, by name.
fn console_cookies(
    gw: &Gw,
    jar: &reqwest::cookie::Jar,
) -> std::collections::HashMap<String, String> {
    use reqwest::cookie::CookieStore;
    let url = url::Url::parse(&auth(gw, "/admin/")).unwrap();
    let header = jar.cookies(&url).expect("cookies");
    header
        .to_str()
        .unwrap()
        .split("; ")
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The recent-sign-in check reads the sign-in marker (`portcullis_authn`), not the
/// session's age: a session cookie without its marker, or with another session's, has to
/// sign in again.
#[tokio::test]
async fn without_its_sign_in_marker_a_session_must_sign_in_again() {
    let gw = Gw::start(CONSOLE).await;
    let addr = gw.h().https_addr;
    let (c, jar) = client_with_jar(addr);
    let r = login_at(&c, &auth(&gw, "/admin/"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mine = console_cookies(&gw, &jar);
    let (c2, jar2) = client_with_jar(addr);
    login_at(&c2, &auth(&gw, "/admin/"), DEMO, DEMO_PW).await;
    let other = console_cookies(&gw, &jar2);
    let with = |cookies: String| {
        let url = auth(&gw, "/admin/users");
        async move {
            let r = client_for(addr, false)
                .get(url)
                .header("cookie", cookies)
                .send()
                .await
                .unwrap();
            (r.status(), location(&r).unwrap_or_default())
        }
    };
    let session = format!("portcullis_session={}", mine["portcullis_session"]);
    let (s, _) = with(format!(
        "{session}; portcullis_authn={}",
        mine["portcullis_authn"]
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "session and its marker");
    let reauth = "/login?reauth=1&return_to=%2Fadmin%2Fusers".to_string();
    assert_eq!(
        with(session.clone()).await,
        (StatusCode::FOUND, reauth.clone()),
        "no marker"
    );
    let foreign = format!("{session}; portcullis_authn={}", other["portcullis_authn"]);
    assert_eq!(
        with(foreign).await,
        (StatusCode::FOUND, reauth),
        "another session's marker"
    );
}

#[tokio::test]
async fn the_console_cookie_is_strict_and_ends_with_its_session() {
    let gw = Gw::start(CONSOLE).await;
    let c = gw.client();
    // The login form hands over to the console, which sets its own cookie.
    let (r, _) = navigate(&c, &auth(&gw, "/admin/")).await;
    let html = r.text().await.unwrap();
    let r = c
        .post(auth(&gw, "/login"))
        .form(&[
            ("csrf", extract(&html, "csrf").unwrap().as_str()),
            ("email", DEMO),
            ("password", DEMO_PW),
            ("return_to", "/admin/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r).as_deref(), Some("/admin/"));
    let r = c.get(auth(&gw, "/admin/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("portcullis_console="), "{set}");
    for attr in [
        "; Secure",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Path=/admin",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    // Set once: the next page does not set it again.
    let r = c.get(auth(&gw, "/admin/apps")).send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    let (_, _, page) = get(&c, &auth(&gw, "/admin/emergency")).await;
    let token = extract(&page, "csrf").unwrap();
    // Revoking the admin's own session (from the API) ends console access at once.
    let sid = sids(&gw, DEMO).await.remove(0);
    gw.revoke("session", &sid).await;
    let r = c.get(auth(&gw, "/admin/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(location(&r).unwrap().contains("why=revoked"));
    let (s, _, html) = post(
        &c,
        &auth(&gw, "/admin/emergency"),
        &[("csrf", &token), ("word", "X"), ("reason", "x")],
        Some(&own_origin(&gw)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("Signed out"), "{html}");
}

#[tokio::test]
async fn actions_need_a_recent_sign_in() {
    let gw = Gw::start(CONSOLE).await;
    let bob = gw.client();
    gw.login(&bob, "echo.localhost", "/", BOB, BOB_PW).await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    let (action, token) = confirm(&gw, &admin, "user", BOB).await;
    gw.advance(Duration::from_secs(16 * 60));
    // Reading is fine; confirming and acting are not.
    let (s, _, _) = get(&admin, &auth(&gw, "/admin/users")).await;
    assert_eq!(s, StatusCode::OK);
    let confirm_path = "/admin/confirm?scope=user&target=bob%40example.com";
    let r = admin.get(auth(&gw, confirm_path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let reauth = location(&r).unwrap();
    assert_eq!(
        reauth,
        "/login?reauth=1&return_to=%2Fadmin%2Fconfirm%3Fscope%3Duser%26target%3Dbob%2540example.com"
    );
    let (s, _, html) = post(
        &admin,
        &auth(&gw, &action),
        &[
            ("csrf", &token),
            ("scope", "user"),
            ("target", BOB),
            ("reason", "x"),
        ],
        Some(&own_origin(&gw)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    assert!(
        html.contains("Please sign in again") && html.contains("reauth=1"),
        "{html}"
    );
    assert!(revocations(&gw).await.is_empty());
    // The form shows although the global session is still valid, then comes back here.
    let (s, _, form) = get(&admin, &auth(&gw, &reauth)).await;
    assert_eq!(s, StatusCode::OK, "the form, not a silent redirect");
    assert!(form.contains("sign in again"), "{form}");
    let r = admin
        .post(auth(&gw, "/login"))
        .form(&[
            ("csrf", extract(&form, "csrf").unwrap().as_str()),
            ("email", DEMO),
            ("password", DEMO_PW),
            ("return_to", extract(&form, "return_to").unwrap().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r).as_deref(), Some(confirm_path));
    let (s, _, html) = get(&admin, &auth(&gw, confirm_path)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Revoke all sessions of bob@example.com?"),
        "{html}"
    );
    // A browser without the console cookie, signed in long ago, signs in again first.
    let other = gw.client();
    gw.login(&other, "echo.localhost", "/", DEMO, DEMO_PW).await;
    gw.advance(Duration::from_secs(16 * 60));
    let r = other.get(auth(&gw, "/admin/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(
        location(&r)
            .unwrap()
            .starts_with("/login?reauth=1&return_to=%2Fadmin%2Fusers")
    );
}

#[tokio::test]
async fn return_targets_stay_on_the_console() {
    let gw = Gw::start(CONSOLE).await;
    for (target, want) in [
        ("https://evil.example/admin/", "/"),
        ("//evil.example/admin/", "/"),
        ("/admin/../login", "/"),
        ("/admin/apps", "/admin/apps"),
    ] {
        let c = gw.client();
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", target)
            .finish();
        let (r, _) = navigate(&c, &auth(&gw, &format!("/login?{q}"))).await;
        let html = r.text().await.unwrap();
        let r = c
            .post(auth(&gw, "/login"))
            .form(&[
                ("csrf", extract(&html, "csrf").unwrap().as_str()),
                ("email", DEMO),
                ("password", DEMO_PW),
                ("return_to", target),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(location(&r).as_deref(), Some(want), "{target}");
        // With a session, the form sends console targets on without showing itself.
        let r = c
            .get(auth(&gw, &format!("/login?{q}")))
            .send()
            .await
            .unwrap();
        if want != "/" {
            assert_eq!(location(&r).as_deref(), Some(want));
        } else {
            assert_ne!(r.status(), StatusCode::FOUND, "{target}");
        }
    }
}

fn multipart(fields: &[(&str, &str)], file: &str) -> (String, Vec<u8>) {
    let b = "----portcullis-test-boundary-7d1";
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"leavers.csv\"\r\nContent-Type: text/csv\r\n\r\n{file}\r\n--{b}--\r\n"
    ));
    (
        format!("multipart/form-data; boundary={b}"),
        body.into_bytes(),
    )
}

#[tokio::test]
async fn bulk_upload_gives_a_result_per_row_and_a_csv() {
    let gw = Gw::start(CONSOLE).await;
    let bob = gw.client();
    gw.login(&bob, "echo.localhost", "/", BOB, BOB_PW).await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/bulk")).await;
    let token = extract(&page, "csrf").unwrap();
    let csv = "name,user\r\n\"Bob, B\",Bob@Example.com\r\nGhost,ghost@example.com\r\nEmpty,\r\nEve,=cmd|' /C calc'!A0\r\n";
    let (ctype, body) = multipart(
        &[("csrf", &token), ("reason", "leavers"), ("text", "")],
        csv,
    );
    let r = admin
        .post(auth(&gw, "/admin/bulk"))
        .header("origin", own_origin(&gw))
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("1 revoked, 2 unknown, 1 invalid"), "{html}");
    let revs = revocations(&gw).await;
    assert_eq!(revs.len(), 1);
    assert_eq!(
        (revs[0]["target"].as_str(), revs[0]["reason"].as_str()),
        (Some(BOB), Some("leavers"))
    );
    assert_eq!(revs[0]["actor"], "console:demo@example.com");
    let results = extract(&html, "results").unwrap();
    let (s, h, csv_out) = post(
        &admin,
        &auth(&gw, "/admin/bulk/results.csv"),
        &[
            ("csrf", &extract(&html, "csrf").unwrap()),
            ("results", &results),
        ],
        Some(&own_origin(&gw)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"bulk-results-")
    );
    let mut lines = csv_out.lines();
    assert_eq!(
        lines.next(),
        Some("row,user,status,sessions_revoked,revocation_id,not_before,error")
    );
    let bob_line = lines.next().unwrap();
    assert!(
        bob_line.starts_with("1,bob@example.com,revoked,1,"),
        "{csv_out}"
    );
    assert!(bob_line.contains(revs[0]["id"].as_str().unwrap()));
    assert_eq!(lines.next(), Some("2,ghost@example.com,unknown_user,,,,"));
    assert_eq!(lines.next(), Some("3,,invalid,,,,empty user"));
    // A formula is defused in the download.
    assert!(lines.next().unwrap().starts_with("4,'=cmd|"), "{csv_out}");
    // The same upload again is refused (single use); a file without a `user` column says why.
    let (ctype, body) = multipart(&[("csrf", &token), ("reason", "x"), ("text", "")], csv);
    let r = admin
        .post(auth(&gw, "/admin/bulk"))
        .header("origin", own_origin(&gw))
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/bulk")).await;
    let (ctype, body) = multipart(
        &[
            ("csrf", &extract(&page, "csrf").unwrap()),
            ("reason", ""),
            ("text", ""),
        ],
        "email\nx@example.com\n",
    );
    let r = admin
        .post(auth(&gw, "/admin/bulk"))
        .header("origin", own_origin(&gw))
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("no `user` column"));
    assert_eq!(revocations(&gw).await.len(), 1);
}

#[tokio::test]
async fn a_group_revocation_counts_first_and_reports_after() {
    let gw = Gw::start(CONSOLE).await;
    let (b1, b2) = (gw.client(), gw.client());
    gw.login(&b1, "echo.localhost", "/", BOB, BOB_PW).await;
    gw.login(&b2, "echo.localhost", "/", BOB, BOB_PW).await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    let (_, _, groups) = get(&admin, &auth(&gw, "/admin/groups")).await;
    assert!(
        groups.contains("contractors") && groups.contains("staff"),
        "{groups}"
    );
    let (s, _, html) = get(
        &admin,
        &auth(&gw, "/admin/confirm?scope=group&target=contractors"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("<b>1 member</b> with <b>2 live sessions</b>"),
        "{html}"
    );
    let (action, token) = confirm(&gw, &admin, "group", "contractors").await;
    let r = admin
        .post(auth(&gw, &action))
        .header("origin", own_origin(&gw))
        .form(&[
            ("csrf", token.as_str()),
            ("scope", "group"),
            ("target", "contractors"),
            ("reason", "project closed"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let report = location(&r).unwrap();
    assert!(
        report.starts_with("/admin/groups/report?group=contractors&id="),
        "{report}"
    );
    let (s, _, html) = get(&admin, &auth(&gw, &report)).await;
    assert_eq!(s, StatusCode::OK);
    let revs = revocations(&gw).await;
    let id = revs[0]["id"].as_str().unwrap();
    assert!(
        html.contains(id)
            && html.contains("console:demo@example.com")
            && html.contains("project closed")
    );
    assert!(html.contains("bob@example.com"));
    let (s, h, csv) = get(
        &admin,
        &auth(&gw, &report.replace("/report?", "/report.csv?")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .contains("access-report-contractors")
    );
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "group,revocation_id,revoked_at,member,last_active_session,last_active_at,sessions_ended"
        )
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&format!("contractors,{id},"))
            && row.contains(",bob@example.com,")
            && row.ends_with(",2"),
        "{csv}"
    );
    assert_eq!(lines.next(), None);
    for b in [&b1, &b2] {
        assert_eq!(
            xhr(b, &gw.url("echo.localhost", "/")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn apps_session_and_emergency_actions() {
    let gw = Gw::start(CONSOLE).await;
    let (b1, b2) = (gw.client(), gw.client());
    gw.login(&b1, "echo.localhost", "/", BOB, BOB_PW).await;
    gw.login(&b2, "echo.localhost", "/", BOB, BOB_PW).await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    let origin = own_origin(&gw);
    // One session of two.
    let sid = sids(&gw, BOB).await.remove(0);
    let (action, token) = confirm(&gw, &admin, "session", &sid).await;
    let (s, _, html) = post(
        &admin,
        &auth(&gw, &action),
        &[
            ("csrf", &token),
            ("scope", "session"),
            ("target", &sid),
            ("user", BOB),
            ("reason", "lost laptop"),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let left = sids(&gw, BOB).await;
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], sid);
    // The app page counts live tokens; revoking them lets global sessions re-issue.
    let (_, _, apps) = get(&admin, &auth(&gw, "/admin/apps")).await;
    assert!(
        apps.contains("<code>echo.localhost</code>") && apps.contains("*@example.com"),
        "{apps}"
    );
    let (action, token) = confirm(&gw, &admin, "app", "echo").await;
    let (s, _, _) = post(
        &admin,
        &auth(&gw, &action),
        &[
            ("csrf", &token),
            ("scope", "app"),
            ("target", "echo"),
            ("reason", ""),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let revs = revocations(&gw).await;
    assert!(
        revs.iter()
            .any(|r| r["scope"] == "app" && r["target"] == "echo" && r["reason"] == "console")
    );
    // Emergency: the typed word must match.
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/emergency")).await;

    let (s, _, html) = post(
        &admin,
        &auth(&gw, "/admin/emergency"),
        &[
            ("csrf", &extract(&page, "csrf").unwrap()),
            ("word", "nope"),
            ("reason", "x"),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("does not match"));
    assert!(!revocations(&gw).await.iter().any(|r| r["scope"] == "all"));
    // The page came back with a new word.
    let word = between(&html, r#"id="the-word">"#, "<")
        .unwrap()
        .to_string();
    let (s, _, html) = post(
        &admin,
        &auth(&gw, "/admin/emergency"),
        &[
            ("csrf", &extract(&html, "csrf").unwrap()),
            ("word", &word.to_lowercase()),
            ("reason", "keys leaked"),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        revocations(&gw)
            .await
            .iter()
            .any(|r| r["scope"] == "all" && r["actor"] == "console:demo@example.com")
    );
    // Everyone is out, the admin included.
    let r = admin.get(auth(&gw, "/admin/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(sids(&gw, BOB).await.is_empty());
}

#[tokio::test]
async fn audit_page_filters_and_checks_the_chain_and_cluster_page_runs_the_selftest() {
    let gw = Gw::start(CONSOLE).await;
    gw.revoke("user", "someone@example.com").await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    let (action, token) = confirm(&gw, &admin, "user", BOB).await;
    let (s, _, _) = post(
        &admin,
        &auth(&gw, &action),
        &[
            ("csrf", &token),
            ("scope", "user"),
            ("target", BOB),
            ("reason", "<b>bold</b>"),
        ],
        Some(&own_origin(&gw)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, html) = get(&admin, &auth(&gw, "/admin/audit")).await;
    assert!(
        html.contains("Hash chain verified: all 2 lines are intact"),
        "{html}"
    );
    assert!(html.contains("console:demo@example.com") && html.contains("someone@example.com"));
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;") && !html.contains("<b>bold</b>"));
    let (_, _, only_console) = get(&admin, &auth(&gw, "/admin/audit?trigger=console")).await;
    assert!(
        only_console.contains("bob@example.com") && !only_console.contains("someone@example.com")
    );
    let (_, _, only_api) = get(&admin, &auth(&gw, "/admin/audit?trigger=api&q=SOMEONE")).await;
    assert!(only_api.contains("someone@example.com") && !only_api.contains(">bob@example.com<"));
    // Tampering shows.
    let path = gw.dir.join("state/audit.log");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("someone@", "someone-else@", 1);
    std::fs::write(&path, text).unwrap();
    let (_, _, html) = get(&admin, &auth(&gw, "/admin/audit")).await;
    assert!(html.contains("Hash chain BROKEN at line 2"), "{html}");
    // Cluster page and self-test (a single node: the canary is refused here).
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/cluster")).await;
    assert!(
        page.contains("test-1") && page.contains("No self-test has run"),
        "{page}"
    );
    let (s, _, html) = post(
        &admin,
        &auth(&gw, "/admin/cluster/selftest"),
        &[("csrf", &extract(&page, "csrf").unwrap())],
        Some(&own_origin(&gw)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("The self-test just ran") && html.contains("passed"),
        "{html}"
    );
}

/// Two nodes sharing keys and the peer token, each knowing the other's control port.
async fn two_nodes(tmp: &Path) -> (Gw, Gw) {
    let (pa, pb) = (free_port(), free_port());
    let toml = |me: &str, own: u16, peer: u16| {
        config_text(&format!(
            "{CONSOLE}\n[sync]\npeers = [\"http://127.0.0.1:{peer}\"]\npeer_token_file = \"peer.token\"\nanti_entropy_interval = \"200ms\"\nack = \"all\"\nstartup_sync_timeout = \"300ms\"\n"
        ))
        .replace("[control]\nlisten = \"127.0.0.1:0\"", &format!("[control]\nlisten = \"127.0.0.1:{own}\""))
        .replace("node_id = \"test-1\"", &format!("node_id = \"{me}\""))
    };
    let (da, db) = (tmp.join("a"), tmp.join("b"));
    for d in [&da, &db] {
        std::fs::create_dir_all(d.join("state")).unwrap();
        write_secret(&d.join("peer.token"), "console-two-nodes-peer-token-31c7\n");
    }
    let clock = portcullis::clock::ManualClock::starting_now();
    let a = Gw::start_in(&da, &toml("node-a", pa, pb), clock.clone()).await;
    std::fs::create_dir_all(db.join("state/keys")).unwrap();
    for e in std::fs::read_dir(da.join("state/keys")).unwrap().flatten() {
        std::fs::copy(e.path(), db.join("state/keys").join(e.file_name())).unwrap();
    }
    let b = Gw::start_in(&db, &toml("node-b", pb, pa), clock).await;
    for g in [&a, &b] {
        let url = g.control_url("/readyz");
        let t0 = std::time::Instant::now();
        while Client::new()
            .get(&url)
            .send()
            .await
            .map(|r| r.status())
            .ok()
            != Some(StatusCode::OK)
        {
            assert!(t0.elapsed() < Duration::from_secs(10), "node not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (a, b)
}

#[tokio::test]
async fn the_console_sees_and_revokes_across_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut a, mut b) = two_nodes(tmp.path()).await;
    // Bob signs in twice on node b; the admin works on node a.
    let (bob1, bob2) = (b.client(), b.client());
    b.login(&bob1, "echo.localhost", "/", BOB, BOB_PW).await;
    b.login(&bob2, "echo.localhost", "/", BOB, BOB_PW).await;
    let admin = console_client(&a, DEMO, DEMO_PW).await;
    let (_, _, html) = get(&admin, &auth(&a, "/admin/user?email=bob%40example.com")).await;
    assert_eq!(html.matches("<tr data-sid=").count(), 2, "{html}");
    assert!(
        html.contains(r#"<td data-label="Node" class="node">node-b</td>"#),
        "{html}"
    );
    // Revoke one of them from node a: refused on node b, the other lives.
    let sid = sids(&b, BOB).await.remove(0);
    let (action, token) = confirm(&a, &admin, "session", &sid).await;
    // The nodes share one manual clock: let it move on, as real clocks do.
    a.advance(Duration::from_millis(1));
    let (s, _, html) = post(
        &admin,
        &auth(&a, &action),
        &[
            ("csrf", &token),
            ("scope", "session"),
            ("target", &sid),
            ("user", BOB),
            ("reason", "stolen"),
        ],
        Some(&own_origin(&a)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("1 of 1"), "node b acknowledged: {html}");
    assert!(
        html.contains("1 session ended"),
        "counted on node b: {html}"
    );
    let statuses = [
        xhr(&bob1, &b.url("echo.localhost", "/")).await.status(),
        xhr(&bob2, &b.url("echo.localhost", "/")).await.status(),
    ];
    let mut sorted = statuses.map(|s| s.as_u16());
    sorted.sort();
    assert_eq!(
        sorted,
        [200, 401],
        "exactly the revoked session is refused on node b"
    );
    // The cluster page: node b up and in sync; the self-test measures its propagation.
    let (_, _, page) = get(&admin, &auth(&a, "/admin/cluster")).await;
    assert!(
        page.contains("node-a") && page.contains(">up<") && page.contains("in sync"),
        "{page}"
    );
    let (s, _, html) = post(
        &admin,
        &auth(&a, "/admin/cluster/selftest"),
        &[("csrf", &extract(&page, "csrf").unwrap())],
        Some(&own_origin(&a)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("refused in time") && html.contains(" ms</td>"),
        "{html}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_console_works_on_the_redis_backend() {
    let redis = crate::support::redis::RedisServer::start();
    let extra = format!(
        "{CONSOLE}\n[sync]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    );
    let gw = Gw::start(&extra).await;
    let t0 = std::time::Instant::now();
    while reqwest::get(gw.control_url("/readyz"))
        .await
        .map(|r| r.status())
        .ok()
        != Some(StatusCode::OK)
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "node not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bob = gw.client();
    gw.login(&bob, "echo.localhost", "/", BOB, BOB_PW).await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;
    // The cluster page names the backend and its state.
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/cluster")).await;
    assert!(
        page.contains("redis (every node writes") && page.contains("connected to redis://"),
        "{page}"
    );
    // Sessions come from the Redis session inventory; a revocation's form token is
    // claimed there, and the revocation goes out through it.
    let (_, _, html) = get(&admin, &auth(&gw, "/admin/user?email=bob%40example.com")).await;
    assert_eq!(html.matches("<tr data-sid=").count(), 1, "{html}");
    let sid = sids(&gw, BOB).await.remove(0);
    let (action, token) = confirm(&gw, &admin, "session", &sid).await;
    let fields = [
        ("csrf", token.as_str()),
        ("scope", "session"),
        ("target", sid.as_str()),
        ("user", BOB),
        ("reason", "lost laptop"),
    ];
    let origin = own_origin(&gw);
    let (s, _, html) = post(&admin, &auth(&gw, &action), &fields, Some(&origin)).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert_eq!(
        xhr(&bob, &gw.url("echo.localhost", "/")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (s, _, html) = post(&admin, &auth(&gw, &action), &fields, Some(&origin)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "used once: {html}");
    assert!(html.contains("already submitted"), "{html}");
}

/// What the SCIM directory says shows on the Users and User pages (provisioned before a
/// first sign-in, deactivated), and the directory's revocation shows in Audit with its
/// trigger and the SCIM user id, filterable by trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_status_shows_on_users_and_its_trigger_in_audit() {
    use crate::support::signals::{ENTRA_EMAIL, OKTA_EMAIL, OKTA_USER, ScimClient, fixture};
    let extra = format!(
        "{CONSOLE}\n[scim]\nname = \"okta\"\ntoken_file = \"scim.token\"\n\n[[app]]\nname = \"okta\"\nhosts = [\"other.localhost\"]\norigin = \"builtin:echo\"\nallow_emails = [\"*@okta.local\"]\n\n[[user]]\nemail = \"{OKTA_EMAIL}\"\npassword_hash = \"{}\"\n",
        hashes()[0]
    );
    let gw = Gw::start(&extra).await;
    let token = std::fs::read_to_string(gw.dir.join("scim.token")).unwrap();
    let mut scim = ScimClient::new(gw.h().https_addr, gw.port(), token.trim());
    let r = scim.send(&fixture("okta_create_user")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    scim.map(OKTA_USER, &id);
    let r = scim.send(&fixture("entra_create_user")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let user = gw.client();
    gw.login(&user, "other.localhost", "/", OKTA_EMAIL, DEMO_PW)
        .await;
    let admin = console_client(&gw, DEMO, DEMO_PW).await;

    // Provisioned but never signed in: listed all the same.
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/users")).await;
    assert!(page.contains(&format!(">{ENTRA_EMAIL}</a>")), "{page}");
    let row = |page: &str, email: &str| {
        let i = page.find(&format!(">{email}</a>")).expect("the user's row");
        page[i..i + page[i..].find("</tr>").unwrap()].to_string()
    };
    assert!(row(&page, OKTA_EMAIL).contains(">active<"), "{page}");

    // Okta deactivates the user: inactive on Users and on the user's page.
    let r = scim.send(&fixture("okta_deactivate_user")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/users")).await;
    assert!(
        row(&page, OKTA_EMAIL).contains("inactive: deactivated in SCIM"),
        "{page}"
    );
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("email", OKTA_EMAIL)
        .finish();
    let (_, _, page) = get(&admin, &auth(&gw, &format!("/admin/user?{q}"))).await;
    assert!(page.contains("inactive: deactivated in SCIM"), "{page}");

    // Audit: the line of the SCIM trigger, with its badge and the SCIM user id; an
    // operator's line is filtered out.
    gw.revoke("user", "someone@example.com").await;
    let (_, _, all) = get(&admin, &auth(&gw, "/admin/audit")).await;
    assert!(all.contains("someone@example.com"), "{all}");
    let (_, _, page) = get(&admin, &auth(&gw, "/admin/audit?trigger=scim")).await;
    assert!(
        page.contains("scim:okta")
            && page.contains(r#"<span class="badge b-warn">scim</span>"#)
            && page.contains("scim_deactivate")
            && page.contains(&format!("ref <code>{id}</code>")),
        "{page}"
    );
    assert!(!page.contains("someone@example.com"), "{page}");
    let (_, _, page) = get(&admin, &auth(&gw, &format!("/admin/audit?q={id}"))).await;
    assert!(page.contains("scim:okta"), "found by the SCIM id: {page}");
}
