//! Sessions: login, global and app tokens, cookies, binding, AJAX 401, policy, logout,
//! hostile tokens and redirects.

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const APPS: &str = r#"
[[app]]
name = "app2"
hosts = ["app2.localhost"]
origin = "builtin:echo"
allow_emails = ["*@example.com"]
unauthenticated = "401"

[[app]]
name = "strict"
hosts = ["strict.localhost"]
origin = "builtin:echo"
same_site = "strict"
http_only = false
allow_emails = ["*@example.com"]
unauthenticated = "redirect"

[[app]]
name = "staff"
hosts = ["staff.localhost"]
origin = "builtin:echo"
allow_groups = ["staff"]
session_duration = "5m"

[[app]]
name = "open"
hosts = ["open.localhost"]
origin = "builtin:echo"
binding_cookie = false
same_site = "none"
allow_emails = ["*"]
"#;

async fn gw() -> Gw {
    Gw::start(APPS).await
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn login_form_lands_on_the_page_first_asked_for() {
    let gw = gw().await;
    let c = gw.client();
    let (r, url) = navigate(&c, &gw.url("echo.localhost", "/deep/page?q=1&x=y")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        url.starts_with(&gw.url("auth.localhost", "/login")),
        "{url}"
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains("name=\"email\"")
            && html.contains("name=\"password\"")
            && html.contains("name=\"csrf\"")
    );
    // Wrong password: the form again, with an error, no session.
    let r = login_at(
        &c,
        &gw.url("echo.localhost", "/deep/page?q=1&x=y"),
        DEMO,
        "wrong",
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("Wrong email or password"));
    // Right password: back on the page, query intact.
    let r = login_at(
        &c,
        &gw.url("echo.localhost", "/deep/page?q=1&x=y"),
        DEMO,
        DEMO_PW,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.url().as_str(),
        gw.url("echo.localhost", "/deep/page?q=1&x=y")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("demo@example.com"), "{html}");
}

#[tokio::test]
async fn global_session_serves_a_second_app_without_a_form() {
    let gw = gw().await;
    let c = gw.client();
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    let (r, url) = navigate(&c, &gw.url("staff.localhost", "/two")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(url, gw.url("staff.localhost", "/two"));
    let v: Value = xhr(&c, &gw.url("staff.localhost", "/two"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["identity"]["aud"], "staff");
}

#[tokio::test]
async fn expired_app_token_is_silently_reissued_then_login_after_global_expiry() {
    let gw = gw().await;
    let c = gw.client();
    let r = gw.login(&c, "staff.localhost", "/", DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
    let before: Value = xhr(&c, &gw.url("staff.localhost", "/"))
        .await
        .json()
        .await
        .unwrap();
    gw.advance(Duration::from_secs(6 * 60));
    let r = xhr(&c, &gw.url("staff.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "session_expired");
    // A navigation gets a new token without a form.
    let (r, url) = navigate(&c, &gw.url("staff.localhost", "/again")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(url, gw.url("staff.localhost", "/again"));
    let after: Value = xhr(&c, &gw.url("staff.localhost", "/"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(before["identity"]["jti"], after["identity"]["jti"]);
    assert_eq!(before["identity"]["sid"], after["identity"]["sid"]);
    // Past the global session: the login form.
    gw.advance(Duration::from_secs(25 * 3600));
    let (r, url) = navigate(&c, &gw.url("staff.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(url.contains("/login"), "{url}");
}

#[tokio::test]
async fn app_token_never_outlives_the_global_session() {
    let gw = gw().await;
    let c = gw.client();
    gw.login(&c, "open.localhost", "/", DEMO, DEMO_PW).await;
    gw.advance(Duration::from_secs(23 * 3600));
    navigate(&c, &gw.url("echo.localhost", "/")).await;
    let v: Value = xhr(&c, &gw.url("echo.localhost", "/"))
        .await
        .json()
        .await
        .unwrap();
    let id = &v["identity"];
    let left = id["exp"].as_i64().unwrap() - id["iat"].as_i64().unwrap();
    assert!(
        left <= 3600 + 1,
        "app token lives {left}s, beyond the global session"
    );
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let gw = gw().await;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    navigate(&c, &gw.url("app2.localhost", "/")).await;
    let saved_echo = cookie_header(&jar, &gw.url("echo.localhost", "/"));
    let saved_auth = cookie_header(&jar, &gw.url("auth.localhost", "/"));
    let r = c
        .get(gw.url("echo.localhost", "/.portcullis/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        set_cookies(&r)
            .iter()
            .any(|s| s.starts_with("portcullis_app=;") && s.contains("Max-Age=0"))
    );
    assert!(r.text().await.unwrap().contains("Signed out"));
    // Every app of that session is out, even with the old cookies replayed.
    let raw = client_for(gw.h().https_addr, false);
    let r = raw
        .get(gw.url("echo.localhost", "/"))
        .header("cookie", &saved_echo)
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "session_revoked");
    let r = xhr(&c, &gw.url("app2.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The global session is gone too: the auth domain asks for the form.
    let r = raw
        .get(gw.url("auth.localhost", "/"))
        .header("cookie", &saved_auth)
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r).as_deref(), Some("/login"));
    // POST works as well.
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    let r = c
        .post(gw.url("echo.localhost", "/.portcullis/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        xhr(&c, &gw.url("echo.localhost", "/")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn xhr_gets_401_json_navigation_gets_302() {
    let gw = gw().await;
    let c = gw.client();
    let url = gw.url("echo.localhost", "/api/data");
    let r = c
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(
        location(&r)
            .unwrap()
            .starts_with(&gw.url("auth.localhost", "/authorize?return_to="))
    );
    for req in [
        c.get(&url)
            .header("x-requested-with", "XMLHttpRequest")
            .header("accept", "text/html"),
        c.get(&url).header("accept", "application/json"),
        c.get(&url),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "no_session");
        assert!(v["login_url"].as_str().unwrap().contains("return_to="));
    }
    // Per-app overrides.
    let r = c
        .get(gw.url("app2.localhost", "/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "unauthenticated = \"401\""
    );
    let r = xhr(&c, &gw.url("strict.localhost", "/")).await;
    assert_eq!(
        r.status(),
        StatusCode::FOUND,
        "unauthenticated = \"redirect\""
    );
}

#[tokio::test]
async fn cookie_attributes_follow_each_app() {
    let gw = gw().await;
    let c = gw.client();
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    // Walk the hand-off by hand to see each Set-Cookie.
    async fn callback_cookies(
        gw: &Gw,
        c: &reqwest::Client,
        host: &str,
    ) -> (reqwest::StatusCode, Vec<String>, String) {
        let mut url = gw.url(host, "/p");
        loop {
            let r = c
                .get(&url)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap();
            if url.contains("/.portcullis/callback") {
                let st = r.status();
                let sc = set_cookies(&r);
                return (st, sc, r.text().await.unwrap());
            }
            url = join(&url, &location(&r).expect("redirect"));
        }
    }
    let (_, sc, _) = callback_cookies(&gw, &c, "staff.localhost").await;
    let app = sc
        .iter()
        .find(|s| s.starts_with("portcullis_app="))
        .unwrap();
    assert!(
        app.contains("; Secure") && app.contains("; HttpOnly") && app.contains("SameSite=Lax"),
        "{app}"
    );
    let bind = sc
        .iter()
        .find(|s| s.starts_with("portcullis_binding="))
        .unwrap();
    assert!(
        bind.contains("; Secure") && bind.contains("; HttpOnly"),
        "{bind}"
    );
    // Strict, readable by scripts: and the callback is a 200 page that moves on by itself.
    let (st, sc, body) = callback_cookies(&gw, &c, "strict.localhost").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        body.contains("http-equiv=\"refresh\"") && body.contains("location.replace(\"/p\")"),
        "{body}"
    );
    let app = sc
        .iter()
        .find(|s| s.starts_with("portcullis_app="))
        .unwrap();
    assert!(
        app.contains("; Secure") && !app.contains("HttpOnly") && app.contains("SameSite=Strict"),
        "{app}"
    );
    let bind = sc
        .iter()
        .find(|s| s.starts_with("portcullis_binding="))
        .unwrap();
    assert!(
        bind.contains("HttpOnly") && bind.contains("SameSite=Strict"),
        "{bind}"
    );
    let (_, sc, _) = callback_cookies(&gw, &c, "open.localhost").await;
    let app = sc
        .iter()
        .find(|s| s.starts_with("portcullis_app="))
        .unwrap();
    assert!(
        app.contains("SameSite=None") && app.contains("; Secure"),
        "{app}"
    );
    // The global session cookie.
    let c2 = gw.client();
    let mut url = gw.url("echo.localhost", "/");
    let (r, form_url) = navigate(&c2, &url).await;
    let html = r.text().await.unwrap();
    let r = c2
        .post(join(&form_url, "/login"))
        .form(&[
            ("csrf", extract(&html, "csrf").unwrap().as_str()),
            ("email", DEMO),
            ("password", DEMO_PW),
            ("return_to", extract(&html, "return_to").unwrap().as_str()),
        ])
        .send()
        .await
        .unwrap();
    let s = set_cookies(&r);
    let sess = s
        .iter()
        .find(|s| s.starts_with("portcullis_session="))
        .unwrap();
    assert!(
        sess.contains("; Secure")
            && sess.contains("; HttpOnly")
            && sess.contains("SameSite=Lax")
            && sess.contains("Max-Age=86400"),
        "{sess}"
    );
    url.clear();
}

#[tokio::test]
async fn binding_cookie_is_enforced_and_never_forwarded() {
    let gw = gw().await;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    let url = gw.url("echo.localhost", "/");
    let token = cookie(&jar, &url, "portcullis_app").unwrap();
    let binding = cookie(&jar, &url, "portcullis_binding").unwrap();
    let raw = client_for(gw.h().https_addr, false);
    let send = |cookie: String| {
        raw.get(&url)
            .header("cookie", cookie)
            .header("x-requested-with", "XMLHttpRequest")
            .send()
    };
    let r = send(format!("portcullis_app={token}")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "binding_mismatch"
    );
    let r = send(format!(
        "portcullis_app={token}; portcullis_binding=AAAA{}",
        &binding[4..]
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = send(format!(
        "a=1; portcullis_app={token}; portcullis_binding={binding}; b=2"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let cookies: Vec<&str> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == "cookie")
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert_eq!(cookies, vec!["a=1; b=2"]);
    // Without binding (per app), the token alone is enough.
    navigate(&c, &gw.url("open.localhost", "/")).await;
    let ourl = gw.url("open.localhost", "/");
    let otoken = cookie(&jar, &ourl, "portcullis_app").unwrap();
    let r = raw
        .get(&ourl)
        .header("cookie", format!("portcullis_app={otoken}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn assertion_verifies_with_an_independent_jose_library() {
    use jwt_simple::prelude::*;
    let gw = gw().await;
    let c = gw.client();
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    let v: Value = xhr(&c, &gw.url("echo.localhost", "/"))
        .await
        .json()
        .await
        .unwrap();
    let assertion = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "portcullis-jwt-assertion")
        .unwrap()[1]
        .as_str()
        .unwrap()
        .to_string();
    let jwks: Value = c
        .get(gw.url("echo.localhost", "/.portcullis/certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = Token::decode_metadata(&assertion)
        .unwrap()
        .key_id()
        .unwrap()
        .to_string();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid in JWKS");
    assert_eq!(jwk["alg"], "ES256");
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
    let key = ES256PublicKey::from_bytes(&point).unwrap();
    let opts = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&["https://auth.localhost"])),
        allowed_audiences: Some(HashSet::from_strings(&["echo"])),
        ..Default::default()
    };
    let claims = key
        .verify_token::<Value>(&assertion, Some(opts))
        .expect("independent verification");
    assert_eq!(claims.subject.as_deref(), Some(DEMO));
    assert!(claims.jwt_id.is_some() && claims.issued_at.is_some() && claims.expires_at.is_some());
    for k in ["email", "groups", "sid", "bnd", "iat_us"] {
        assert!(claims.custom.get(k).is_some(), "claim {k} missing");
    }
    assert_eq!(claims.custom["groups"], json!(["staff"]));
    // A wrong audience is refused by the same library.
    let wrong = VerificationOptions {
        allowed_audiences: Some(HashSet::from_strings(&["app2"])),
        ..Default::default()
    };
    assert!(key.verify_token::<Value>(&assertion, Some(wrong)).is_err());
}

#[tokio::test]
async fn policy_refusal_is_a_403_page_not_a_loop() {
    let gw = gw().await;
    let c = gw.client();
    let r = gw.login(&c, "echo.localhost", "/", EVE, EVE_PW).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("not allowed"));
    let c = gw.client();
    let r = gw.login(&c, "staff.localhost", "/", BOB, BOB_PW).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (r, _) = navigate(&c, &gw.url("echo.localhost", "/")).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "bob is allowed on echo by email"
    );
    let c = gw.client();
    assert_eq!(
        gw.login(&c, "staff.localhost", "/", DEMO, DEMO_PW)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn open_redirects_are_refused() {
    let gw = gw().await;
    let c = gw.client();
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    for evil in [
        "https://evil.example/",
        "//evil.example/",
        "https://echo.localhost.evil.example/",
        "https://evil.example@echo.localhost/",
        "javascript:alert(1)",
        "/relative",
        "",
    ] {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", evil)
            .finish();
        let r = c
            .get(gw.url("auth.localhost", &format!("/authorize?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{evil}");
        assert!(location(&r).is_none(), "{evil}");
    }
    // A login that names an outside target lands on the auth domain's own page.
    let c2 = gw.client();
    let (r, form_url) = navigate(
        &c2,
        &gw.url("auth.localhost", "/login?return_to=https://evil.example/"),
    )
    .await;
    let html = r.text().await.unwrap();
    let r = c2
        .post(join(&form_url, "/login"))
        .form(&[
            ("csrf", extract(&html, "csrf").unwrap().as_str()),
            ("email", DEMO),
            ("password", DEMO_PW),
            ("return_to", "https://evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r).as_deref(), Some("/"));
    // A path that looks like a host stays on the app host.
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", &gw.url("echo.localhost", "//evil.example/x"))
        .finish();
    let r = c
        .get(gw.url("auth.localhost", &format!("/authorize?{q}")))
        .send()
        .await
        .unwrap();
    let cb = location(&r).unwrap();
    assert!(
        cb.starts_with(&gw.url("echo.localhost", "/.portcullis/callback?code=")),
        "{cb}"
    );
    let r = c.get(&cb).send().await.unwrap();
    let landing = location(&r).unwrap();
    assert!(
        landing.starts_with('/') && !landing.starts_with("//"),
        "{landing}"
    );
}

#[tokio::test]
async fn login_is_csrf_protected_and_rate_limited() {
    let gw = gw().await;
    let c = gw.client();
    let (r, form_url) = navigate(&c, &gw.url("echo.localhost", "/")).await;
    let html = r.text().await.unwrap();
    let csrf = extract(&html, "csrf").unwrap();
    let post = join(&form_url, "/login");
    // No CSRF cookie (another client), a wrong token, and a cross-site Origin: refused.
    let other = gw.client();
    let r = other
        .post(&post)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", DEMO),
            ("password", DEMO_PW),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(&post)
        .form(&[("csrf", "nope"), ("email", DEMO), ("password", DEMO_PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(&post)
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", DEMO),
            ("password", DEMO_PW),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Five failures lock the account for the window, even for the right password.
    for _ in 0..5 {
        let r = login_at(&c, &gw.url("echo.localhost", "/"), DEMO, "wrong").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login_at(&c, &gw.url("echo.localhost", "/"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().await.unwrap().contains("Too many failed sign-ins"));
    gw.advance(Duration::from_secs(5 * 60 + 1));
    let r = login_at(&c, &gw.url("echo.localhost", "/"), DEMO, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
}

fn forge(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

#[tokio::test]
async fn hostile_tokens_are_refused_never_500() {
    use hmac_sha256::HMAC;
    let gw = gw().await;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    navigate(&c, &gw.url("staff.localhost", "/")).await;
    let url = gw.url("echo.localhost", "/");
    let token = cookie(&jar, &url, "portcullis_app").unwrap();
    let binding = cookie(&jar, &url, "portcullis_binding").unwrap();
    let app2_token = cookie(&jar, &gw.url("staff.localhost", "/"), "portcullis_app").unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    // Tokens signed with the gateway's own key but wrong claims.
    let keys = portcullis::session::keys::KeyRing::load(&gw.dir.join("state/keys")).unwrap();
    let sign = |mutate: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        mutate(&mut c);
        let c: portcullis::session::token::Claims = serde_json::from_value(c).unwrap();
        portcullis::session::token::sign(&keys, &c).unwrap()
    };
    let now = claims["iat"].as_i64().unwrap();
    let mut tampered = token.clone().into_bytes();
    let mid = parts[0].len() + parts[1].len() + 1 + parts[2].len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let jwks = gw.gw().auth.keys().jwks();
    let mut none_header = header.clone();
    none_header["alg"] = json!("none");
    let mut hs_header = header.clone();
    hs_header["alg"] = json!("HS256");
    let hs_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(hs_header.to_string()),
        parts[1]
    );
    let hs_sig = HMAC::mac(hs_input.as_bytes(), &jwks);
    let mut kid_header = header.clone();
    kid_header["kid"] = json!("0000000000000000");
    let cases: Vec<(&str, String)> = vec![
        ("tampered signature", String::from_utf8(tampered).unwrap()),
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(none_header.to_string()),
                parts[1]
            ),
        ),
        (
            "HS256 with the public key",
            format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(hs_sig)),
        ),
        (
            "unknown kid",
            forge(
                &kid_header,
                &claims,
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            ),
        ),
        ("another app's token", app2_token.clone()),
        (
            "wrong iss",
            sign(&|c| c["iss"] = json!("https://evil.example")),
        ),
        ("expired", sign(&|c| c["exp"] = json!(now - 10))),
        ("nbf in the future", sign(&|c| c["nbf"] = json!(now + 3600))),
        ("truncated", token[..token.len() / 2].to_string()),
        ("oversized", format!("{token}{}", "A".repeat(10_000))),
        ("garbage", "not-a-jwt".to_string()),
    ];
    let raw = client_for(gw.h().https_addr, false);
    for (what, bad) in cases {
        let r = raw
            .get(&url)
            .header(
                "cookie",
                format!("portcullis_app={bad}; portcullis_binding={binding}"),
            )
            .header("x-requested-with", "XMLHttpRequest")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let r = raw
            .get(&url)
            .header(
                "cookie",
                format!("portcullis_app={bad}; portcullis_binding={binding}"),
            )
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{what}");
    }
    // Non-UTF-8 and duplicate cookies.
    let mut bytes = b"portcullis_app=".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x80]);
    let api = |cookie: reqwest::header::HeaderValue| {
        raw.get(&url)
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
    };
    let hv = reqwest::header::HeaderValue::from_bytes(&bytes).unwrap();
    assert_eq!(api(hv).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let dup =
        format!("portcullis_app={token}; portcullis_app={token}; portcullis_binding={binding}");
    let r = api(dup.parse().unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The genuine pair still works.
    let genuine = format!("portcullis_app={token}; portcullis_binding={binding}");
    let r = api(genuine.parse().unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn identity_and_jwks_endpoints() {
    let gw = gw().await;
    let c = gw.client();
    let r = xhr(&c, &gw.url("echo.localhost", "/.portcullis/identity")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    let v: Value = xhr(&c, &gw.url("echo.localhost", "/.portcullis/identity"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["email"], DEMO);
    assert_eq!(v["groups"], json!(["staff"]));
    let jwks: Value = c
        .get(gw.url("app2.localhost", "/.portcullis/certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
}

#[tokio::test]
async fn hash_password_prints_an_argon2id_phc_string() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(
        tokio::task::spawn_blocking(move || portcullis::login::users::verify_blocking(
            "s3cret",
            phc.trim()
        ))
        .await
        .unwrap()
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_new_ones() {
    let gw = gw().await;
    let (c, jar) = client_with_jar(gw.h().https_addr);
    gw.login(&c, "echo.localhost", "/", DEMO, DEMO_PW).await;
    let old_kid = gw.gw().auth.keys().active_kid().to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["keys", "rotate", "--config"])
        .arg(&gw.config_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.gw().reload().unwrap();
    let new_kid = gw.gw().auth.keys().active_kid().to_string();
    assert_ne!(old_kid, new_kid);
    // The old token still verifies; a new app token is signed with the new key.
    assert_eq!(
        xhr(&c, &gw.url("echo.localhost", "/")).await.status(),
        StatusCode::OK
    );
    navigate(&c, &gw.url("staff.localhost", "/")).await;
    let token = cookie(&jar, &gw.url("staff.localhost", "/"), "portcullis_app").unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    let jwks: Value = c
        .get(gw.url("echo.localhost", "/.portcullis/certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()));
}
