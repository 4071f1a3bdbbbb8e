//! An administrator who signs in through an identity provider (the real test OP of
//! `oidc_login.rs`), admin by a group the IdP reports: the console lets them in after the
//! IdP sign-in (and refuses a signed-in non-admin); once their authentication is older
//! than `reauth_after`, the console's "sign in again" makes the IdP authenticate them
//! again (`prompt=login`, `max_age=0`, the MFA `acr_values`), and the IdP's session alone
//! (a silent sign-in, a stolen IdP cookie) never counts as a recent sign-in.

use crate::console::{confirm, own_origin, post};
use crate::idp::{ALICE, ALICE_PW, creds};
use crate::oidc_login::{CAROL, Rig, catch_up, mfa, walk, with_op_cookies_of};
use reqwest::{Method, StatusCode};
use std::time::Duration;

const CONSOLE_IDP: &str = r#"
[console]
admin_groups = ["eng"]
reauth_after = "10s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_admin_must_authenticate_at_the_idp_again_before_acting() {
    let rig = Rig::start(&["corp"], false, CONSOLE_IDP).await;
    let (c, jar) = rig.browser();

    // Not signed in: /admin/ -> /login -> the only IdP -> its login page -> the console.
    let home = rig.auth("/admin/");
    let t = walk(&c, &home, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.url.as_str(), t.op_logins),
        (StatusCode::OK, rig.auth("/admin/users").as_str(), 1),
        "{t:#?}"
    );
    assert!(
        t.body.contains("alice@example.com") && t.body.contains("signed in"),
        "{}",
        t.body
    );
    let attacker = with_op_cookies_of(&rig, &jar);

    // Admin by a group the IdP reports (alice is in `eng`); carol (only `staff`) is not.
    let (carol, _) = rig.browser();
    let t = walk(&carol, &home, Some(creds(CAROL, "pw")), None).await;
    assert_eq!(t.status, StatusCode::FORBIDDEN, "{t:#?}");
    assert!(
        t.body.contains("may not use the admin console"),
        "{}",
        t.body
    );

    // The authentication ages past `reauth_after`, by the OP's (real) clock too.
    tokio::time::sleep(Duration::from_secs(11)).await;
    catch_up(&rig.gw);

    // Someone holding only the IdP's session: the IdP signs them in silently (a brand-new
    // global session), but its auth_time is the old one, so the console asks for a fresh
    // sign-in and the IdP is told to authenticate: stuck at the OP's login page.
    let t = walk(&attacker, &home, None, None).await;
    assert!(t.on_op_login_page(), "{t:#?}");
    let reqs = t.auth_requests();
    assert_eq!(reqs.len(), 2, "{t:#?}");
    assert!(
        !reqs[0].contains_key("prompt"),
        "the first sign-in is silent"
    );
    assert_eq!(
        (reqs[1]["prompt"].as_str(), reqs[1]["max_age"].as_str()),
        ("login", "0")
    );
    assert!(
        t.visited.iter().any(|u| u.contains("/login?reauth=1")),
        "the console asked for it: {t:#?}"
    );

    // The admin's own browser: a confirmation page needs a recent sign-in -> the IdP
    // authenticates again (with the second factor) -> back on the page, then the action.
    let page = rig.auth("/admin/confirm?scope=user&target=pat%40example.com");
    let t = walk(&c, &page, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.url.as_str(), t.op_logins),
        (StatusCode::OK, page.as_str(), 1),
        "{t:#?}"
    );
    let reqs = t.auth_requests();
    assert_eq!(reqs.len(), 1, "{t:#?}");
    assert_eq!(
        (reqs[0]["prompt"].as_str(), reqs[0]["max_age"].as_str()),
        ("login", "0")
    );
    let (action, token) = confirm(&rig.gw, &c, "user", "pat@example.com").await;
    let (s, _, html) = post(
        &c,
        &rig.auth(&action),
        &[
            ("csrf", &token),
            ("scope", "user"),
            ("target", "pat@example.com"),
            ("reason", "contract ended"),
        ],
        Some(&own_origin(&rig.gw)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let (_, v) = rig.gw.admin(Method::GET, "/v1/revocations", None).await;
    let revs = v["revocations"].as_array().cloned().unwrap_or_default();
    assert!(
        revs.iter()
            .any(|r| r["target"] == "pat@example.com" && r["actor"] == "console:alice@example.com"),
        "{revs:#?}"
    );
}
