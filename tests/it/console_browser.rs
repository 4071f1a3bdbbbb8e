//! The admin console in headless Chromium (chromedriver + fantoccini, as `browser.rs`):
//! an admin signs in, searches a user, opens their sessions, revokes one session with
//! the confirmation (that browser's next request is refused, the user's other session
//! still works), revokes the user, uploads a bulk CSV and downloads the result; a
//! non-admin gets 403; a cross-site form post is refused; a user agent containing
//! `<script>` is shown as text. Screenshots of each page are written to
//! `$CARGO_TARGET_TMPDIR/console-shots/` for a person to look at.

use crate::browser::{Browser, Driver, SETTLE, bounded};
use crate::common::*;
use crate::console::{CONSOLE, XSS_UA, client_with_ua};
use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-shots");
    std::fs::create_dir_all(&d).expect("screenshot folder");
    d
}

async fn shot(b: &Browser, name: &str) {
    let png = b.c().screenshot().await.expect("screenshot");
    let path = shots_dir().join(name);
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Waits until the page shows `text` (and, if given, the URL starts with `url`).
async fn wait_for(b: &Browser, url: Option<&str>, text: &str, what: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let at = b.url().await;
        if url.is_none_or(|u| at.starts_with(u)) && b.source().await.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no {text:?} within {SETTLE:?}\n{}",
            b.describe().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(b: &Browser, css: &str) {
    b.c()
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn text_of(b: &Browser, css: &str) -> String {
    b.c()
        .find(Locator::Css(css))
        .await
        .expect(css)
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let started = Instant::now();
    let driver = Driver::start().await;
    let mut gw = Gw::start(CONSOLE).await;
    let downloads = tempfile::tempdir().expect("downloads");
    let bob_browser = driver.session().await;
    let admin = driver.session_with(Some(downloads.path())).await;
    bounded("console", async {
        let bob_api = bob_signs_in_twice(&gw, &bob_browser).await;
        admin_finds_bob(&gw, &admin).await;
        revoke_one_session(&gw, &admin, &bob_browser, &bob_api).await;
        revoke_the_user(&gw, &admin, &bob_api).await;
        cross_site_post_is_refused(&gw, &admin).await;
        bulk_upload_and_download(&gw, &admin, downloads.path()).await;
        phone_sized(&gw, &admin).await;
    })
    .await;
    bob_browser.close().await;
    admin.close().await;
    gw.stop().await;
    drop(driver);
    eprintln!("console browser scenario took {:?}", started.elapsed());
}

/// Bob signs in in a browser and in an API client whose user agent holds a script; the
/// browser, not an admin, is refused the console.
async fn bob_signs_in_twice(gw: &Gw, b: &Browser) -> reqwest::Client {
    b.goto(&gw.url("echo.localhost", "/")).await;
    b.log_in(BOB, BOB_PW).await;
    wait_for(b, Some("https://echo.localhost:"), BOB, "bob on echo").await;
    b.goto(&gw.url("auth.localhost", "/admin/")).await;
    wait_for(b, None, "Not an administrator", "bob at the console").await;
    let api = client_with_ua(gw, XSS_UA);
    gw.login(&api, "echo.localhost", "/", BOB, BOB_PW).await;
    let r = api
        .get(gw.url("auth.localhost", "/admin/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a non-admin gets 403");
    api
}

async fn admin_finds_bob(gw: &Gw, b: &Browser) {
    b.goto(&gw.url("auth.localhost", "/admin/")).await;
    b.log_in(DEMO, DEMO_PW).await;
    let users = gw.url("auth.localhost", "/admin/users");
    wait_for(b, Some(&users), "eve@other.org", "the users page").await;
    shot(b, "users.png").await;
    let q = b
        .c()
        .find(Locator::Css("input[name=\"q\"]"))
        .await
        .expect("search box");
    q.send_keys("bob").await.expect("type");
    click(b, "form[role=\"search\"] button").await;
    wait_for(
        b,
        Some(&format!("{users}?q=bob")),
        "bob@example.com",
        "the search",
    )
    .await;
    assert!(
        !b.source().await.contains("eve@other.org"),
        "the search narrows"
    );
    click(b, "a[href=\"/admin/user?email=bob%40example.com\"]").await;
    wait_for(b, None, "Sessions across the cluster", "bob's page").await;
    let rows = b
        .c()
        .find_all(Locator::Css("#sessions tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2, "bob has two sessions");
    // The script in the user agent is text on the page, and never ran.
    let src = b.source().await;
    assert!(
        src.contains("&lt;script&gt;alert('pwned')&lt;/script&gt;")
            || src.contains("&lt;script&gt;alert(&#39;pwned&#39;)"),
        "{src}"
    );
    let shown = b
        .js("return Array.from(document.querySelectorAll('td.ua')).map(e => e.textContent).join('|');")
        .await;
    assert!(
        shown
            .as_str()
            .unwrap_or("")
            .contains("<script>alert('pwned')</script>"),
        "{shown}"
    );
    let scripts = b
        .js("return document.querySelectorAll('script').length;")
        .await;
    assert_eq!(scripts, 0, "no script element on this page at all");
    assert!(b.c().get_alert_text().await.is_err(), "no alert opened");
    shot(b, "user.png").await;
}

/// Revokes the session of bob's browser (the one whose user agent is not the script).
async fn revoke_one_session(
    gw: &Gw,
    b: &Browser,
    bob_browser: &Browser,
    bob_api: &reqwest::Client,
) {
    let sid = b
        .js("const r = Array.from(document.querySelectorAll('#sessions tbody tr')).find(r => !r.querySelector('td.ua').textContent.includes('pwned')); return r.dataset.sid;")
        .await;
    let sid = sid.as_str().expect("the browser's session").to_string();
    click(b, &format!("tr[data-sid=\"{sid}\"] a.btn")).await;
    wait_for(
        b,
        None,
        "Revoke this session of bob@example.com?",
        "the confirmation",
    )
    .await;
    shot(b, "confirm-session.png").await;
    click(b, "#confirm").await;
    wait_for(b, None, "Done: 1 revocation,", "the result").await;
    shot(b, "revoked.png").await;
    // That browser's next request is refused: back to the sign-in form.
    bob_browser.goto(&gw.url("echo.localhost", "/after")).await;
    wait_for(
        bob_browser,
        Some("https://auth.localhost:"),
        "Sign in",
        "bob's revoked browser",
    )
    .await;
    // The other session still works.
    let r = xhr(bob_api, &gw.url("echo.localhost", "/still")).await;
    assert_eq!(r.status(), StatusCode::OK, "bob's other session lives");
}

async fn revoke_the_user(gw: &Gw, b: &Browser, bob_api: &reqwest::Client) {
    b.goto(&gw.url("auth.localhost", "/admin/user?email=bob%40example.com"))
        .await;
    wait_for(b, None, "Revoke all sessions (1)", "bob's page").await;
    click(b, "a.btn.danger[href^=\"/admin/confirm?scope=user\"]").await;
    wait_for(
        b,
        None,
        "Revoke all sessions of bob@example.com?",
        "the confirmation",
    )
    .await;
    assert!(b.source().await.contains("<b>1 live session</b>"));
    click(b, "#confirm").await;
    wait_for(b, None, "Done: 1 revocation,", "the result").await;
    let r = xhr(bob_api, &gw.url("echo.localhost", "/")).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "bob is out everywhere"
    );
    let (_, v) = gw.admin(Method::GET, "/v1/revocations", None).await;
    let revs = v["revocations"].as_array().unwrap();
    assert!(
        revs.iter()
            .all(|r| r["actor"] == "console:demo@example.com"),
        "{v}"
    );
}

/// A form on another site (the echo app) posting to the console, even with a real
/// token, changes nothing.
async fn cross_site_post_is_refused(gw: &Gw, b: &Browser) {
    b.goto(&gw.url(
        "auth.localhost",
        "/admin/confirm?scope=user&target=eve%40other.org",
    ))
    .await;
    wait_for(
        b,
        None,
        "Revoke all sessions of eve@other.org?",
        "eve's confirmation",
    )
    .await;
    let token = b
        .js("return document.querySelector('input[name=csrf]').value;")
        .await;
    let action = gw.url("auth.localhost", "/admin/revoke");
    b.goto(&gw.url("echo.localhost", "/attacker")).await;
    wait_for(b, Some("https://echo.localhost:"), DEMO, "the other site").await;
    b.js(&format!(
        "const f = document.createElement('form'); f.method = 'post'; f.action = {action};
         for (const [k, v] of [['csrf', {token}], ['scope', 'user'], ['target', 'eve@other.org'], ['reason', 'csrf']]) {{
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }}
         document.body.appendChild(f); f.submit(); return true;",
        action = serde_json::to_string(&action).unwrap(),
        token = token,
    ))
    .await;
    wait_for(
        b,
        Some("https://auth.localhost:"),
        "Refused",
        "the cross-site post",
    )
    .await;
    let (_, v) = gw.admin(Method::GET, "/v1/revocations", None).await;
    assert!(
        !v.to_string().contains("eve@other.org"),
        "nothing was revoked: {v}"
    );
}

async fn bulk_upload_and_download(gw: &Gw, b: &Browser, downloads: &Path) {
    let csv = tempfile::Builder::new()
        .suffix(".csv")
        .tempfile()
        .expect("csv file");
    std::fs::write(
        csv.path(),
        "name,user\nEve,eve@other.org\nGhost,ghost@example.com\n",
    )
    .unwrap();
    b.goto(&gw.url("auth.localhost", "/admin/bulk")).await;
    wait_for(b, None, "Bulk revocation", "the bulk page").await;
    let input = b.c().find(Locator::Css("#file")).await.expect("file input");
    input
        .send_keys(&csv.path().display().to_string())
        .await
        .expect("choose file");
    click(b, "#upload").await;
    wait_for(b, None, "1 revoked, 1 unknown", "the bulk results").await;
    assert_eq!(
        text_of(b, "#results tbody tr:nth-child(2) td:nth-child(2)").await,
        "ghost@example.com"
    );
    shot(b, "bulk.png").await;
    click(b, "#download-results").await;
    let deadline = Instant::now() + SETTLE;
    let file = loop {
        let done = std::fs::read_dir(downloads)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "csv"));
        if let Some(p) = done {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no CSV downloaded to {}",
            downloads.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("bulk-results-"), "{name}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "row,user,status,sessions_revoked,revocation_id,not_before,error"
    );
    assert!(lines[1].starts_with("1,eve@other.org,revoked,"), "{text}");
    assert_eq!(lines[2], "2,ghost@example.com,unknown_user,,,,");
}

/// The same console on a phone-sized window, for the screenshots.
async fn phone_sized(gw: &Gw, b: &Browser) {
    for (path, name) in [
        ("/admin/audit", "audit.png"),
        ("/admin/cluster", "cluster.png"),
        ("/admin/groups", "groups.png"),
        ("/admin/apps", "apps.png"),
        ("/admin/emergency", "emergency.png"),
    ] {
        b.goto(&gw.url("auth.localhost", path)).await;
        wait_for(b, None, "</main>", path).await;
        shot(b, name).await;
    }
    b.c().set_window_size(390, 844).await.expect("phone size");
    b.goto(&gw.url("auth.localhost", "/admin/users")).await;
    wait_for(b, None, "Users", "users on a phone").await;
    shot(b, "users-phone.png").await;
    b.goto(&gw.url("auth.localhost", "/admin/user?email=eve%40other.org"))
        .await;
    wait_for(b, None, "Sessions across the cluster", "a user on a phone").await;
    shot(b, "user-phone.png").await;
}
