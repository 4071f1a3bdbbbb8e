//! Signing in with an OpenID Connect IdP, end to end: the real gateway (in-process, on
//! a port chosen first so the OP can know its redirect URIs) in front of the builtin
//! echo origin, and a real OpenID Provider (`oidc-provider`, see `idp.rs`) whose own
//! login page the tests fill in. Covers the sign-in and its `return_to`, policy,
//! refused callbacks, re-authentication after a revocation, RP-initiated and
//! back-channel logout (across a three-node cluster), two IdPs side by side, an IdP
//! that is unreachable at start, the directory (SCIM) refusing a deactivated user and
//! setting the groups of an IdP sign-in, and a headless Chromium run through the OP's
//! page.

use crate::browser::{Driver, bounded};
use crate::common::*;
use crate::idp::{
    ALICE, ALICE_OTP, ALICE_PW, Creds, MFA_ACR, OpKey, PWD_ACR, RP_SECRET, TestOp, claims_of,
    creds, forge, form_action, op_logout,
};
use fantoccini::Locator;
use portcullis::clock::ManualClock;
use portcullis::idp::BACKCHANNEL_LOGOUT_EVENT;
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

const CLIENT: &str = "portcullis";
pub(crate) const ALICE_EMAIL: &str = "alice@example.com";
pub(crate) const CAROL: &str = "carol@other.org";
const NOGROUPS: &str = "nogroups@example.com";
const PAT: &str = "pat@example.com";

/// A staff-only app beside the default echo app (which allows `*@example.com`).
const APPS: &str = r#"
[[app]]
name = "staff"
hosts = ["staff.localhost"]
origin = "builtin:echo"
allow_groups = ["staff"]
"#;

pub(crate) fn mfa<'a>(email: &'a str, password: &'a str) -> Creds<'a> {
    Creds {
        otp: Some(ALICE_OTP),
        ..creds(email, password)
    }
}

// ---- the OP and the gateway ---------------------------------------------------------

fn op_users() -> Value {
    json!([
        {"email": ALICE, "password": ALICE_PW, "groups": ["staff", "eng"], "otp": ALICE_OTP},
        {"email": CAROL, "password": "pw", "groups": ["staff"]},
        {"email": NOGROUPS, "password": "pw"},
        {"email": PAT, "password": "pw", "groups": ["partners"]},
    ])
}

/// The OP's registration of the gateway as client `portcullis` of IdP `name`, for
/// gateway nodes on `ports` (back-channel logout to the first), trusting the gateway's
/// dev certificate `ca_file` (read when the OP calls, so it may appear later).
fn op_config(name: &str, ports: &[u16], ca_file: &Path) -> Value {
    let on = |path: &str| -> Vec<String> {
        ports
            .iter()
            .map(|p| format!("https://auth.localhost:{p}{path}"))
            .collect()
    };
    let bc = ports[0];
    let callbacks = on(&format!("/oidc/{name}/callback"));
    json!({
        "clients": [{
            "client_id": CLIENT,
            "client_secret": RP_SECRET,
            "redirect_uris": callbacks,
            "post_logout_redirect_uris": on("/signed-out"),
            "backchannel_logout_uri": format!("https://auth.localhost:{bc}/oidc/{name}/backchannel-logout"),
        }, {
            // Another client of the same OP, registered with the same redirect URIs.
            "client_id": "other",
            "client_secret": RP_SECRET,
            "redirect_uris": callbacks,
        }],
        "users": op_users(),
        "acr_values": [PWD_ACR, MFA_ACR],
        "expose_signing_keys": true,
        "backchannel": {
            "resolve": {format!("auth.localhost:{bc}"): format!("127.0.0.1:{bc}")},
            "ca_file": ca_file,
        },
    })
}

fn display_name(name: &str) -> String {
    let mut c = name.chars();
    let first = c.next().map(|f| f.to_uppercase().to_string());
    format!("{}{} SSO", first.unwrap_or_default(), c.as_str())
}

fn idp_toml(name: &str, issuer: &str, idp_extra: &str) -> String {
    format!(
        r#"
[[idp]]
name = "{name}"
display_name = "{display}"
issuer = "{issuer}"
client_id = "{CLIENT}"
client_secret = "{RP_SECRET}"
mfa_acr_values = ["{MFA_ACR}"]
{idp_extra}
"#,
        display = display_name(name)
    )
}

/// The test gateway's config on `port`, with `extra` tables, with or without the
/// built-in users.
fn gateway_toml(port: u16, extra: &str, users: bool) -> String {
    let mut s = config_text(extra).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    if !users && let Some(i) = s.find("\n[[user]]") {
        s.truncate(i);
    }
    s
}

async fn wait_discovered(gw: &Gw, name: &str) {
    let t0 = Instant::now();
    while gw.gw().idps.get(name).is_none_or(|s| s.provider().is_err()) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "IdP {name} not discovered within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway with one OP per IdP name.
pub(crate) struct Rig {
    pub(crate) gw: Gw,
    pub(crate) ops: Vec<TestOp>,
    port: u16,
    _tmp: tempfile::TempDir,
}

impl Rig {
    pub(crate) async fn start(names: &[&str], users: bool, extra: &str) -> Rig {
        Rig::start_with(names, users, extra, "").await
    }

    /// As [`Rig::start`], with `idp_extra` lines in every `[[idp]]` table.
    pub(crate) async fn start_with(
        names: &[&str],
        users: bool,
        extra: &str,
        idp_extra: &str,
    ) -> Rig {
        let tmp = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let ca = tmp.path().join("certs/gateway.crt");
        let mut ops = Vec::new();
        let mut toml = String::from(APPS);
        for name in names {
            let op = TestOp::start(op_config(name, &[port], &ca)).await;
            toml.push_str(&idp_toml(name, &op.issuer, idp_extra));
            ops.push(op);
        }
        toml.push_str(extra);
        let text = gateway_toml(port, &toml, users);
        let gw = Gw::start_in(tmp.path(), &text, ManualClock::starting_now()).await;
        assert!(ca.exists(), "the OP trusts the dev certificate at {ca:?}");
        for name in names {
            wait_discovered(&gw, name).await;
        }
        Rig {
            gw,
            ops,
            port,
            _tmp: tmp,
        }
    }

    pub(crate) fn browser(&self) -> (Client, Arc<reqwest::cookie::Jar>) {
        client_with_jar(self.gw.h().https_addr)
    }

    pub(crate) fn auth(&self, path: &str) -> String {
        self.gw.url("auth.localhost", path)
    }

    pub(crate) fn callback(&self, idp: &str) -> String {
        self.auth(&format!("/oidc/{idp}/callback"))
    }

    fn echo(&self, path: &str) -> String {
        self.gw.url("echo.localhost", path)
    }
}

// ---- a browser-like walk through the gateway and the OP ---------------------------

/// Where a walk ended.
#[derive(Debug)]
pub(crate) struct Trip {
    pub(crate) status: StatusCode,
    pub(crate) url: String,
    pub(crate) body: String,
    pub(crate) headers: HeaderMap,
    /// Every URL requested, in order.
    pub(crate) visited: Vec<String>,
    /// How often the OP's login page was filled in.
    pub(crate) op_logins: usize,
}

impl Trip {
    /// The authorization requests sent to the OPs, in order, as query maps.
    pub(crate) fn auth_requests(&self) -> Vec<HashMap<String, String>> {
        self.visited
            .iter()
            .filter(|u| u.starts_with("http://127.0.0.1") && u.contains("/auth?"))
            .map(|u| query_of(u))
            .collect()
    }

    pub(crate) fn on_op_login_page(&self) -> bool {
        self.status == StatusCode::OK
            && self.url.starts_with("http://127.0.0.1")
            && self.body.contains("<form id=\"login\"")
    }
}

fn query_of(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// Navigates from `start` like a browser: follows redirects (between the gateway and
/// the OP), fills in the OP's login page with `who` (at most three times; without
/// `who` it stops there), and stops before a redirect to a URL starting with `stop_at`.
pub(crate) async fn walk(
    c: &Client,
    start: &str,
    who: Option<Creds<'_>>,
    stop_at: Option<&str>,
) -> Trip {
    let mut url = start.to_string();
    let mut form: Option<Vec<(&str, String)>> = None;
    let mut visited = Vec::new();
    let mut op_logins = 0;
    for _ in 0..30 {
        visited.push(url.clone());
        let req = match form.take() {
            Some(f) => c.post(&url).form(&f),
            None => c.get(&url),
        };
        let r = req
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let (status, headers) = (r.status(), r.headers().clone());
        if let Some(loc) = location(&r).filter(|_| status.is_redirection()) {
            let next = join(&url, &loc);
            if stop_at.is_some_and(|p| next.starts_with(p)) {
                let body = String::new();
                return Trip {
                    status,
                    url: next,
                    body,
                    headers,
                    visited,
                    op_logins,
                };
            }
            url = next;
            continue;
        }
        let body = r.text().await.unwrap_or_default();
        let trip = Trip {
            status,
            url: url.clone(),
            body,
            headers,
            visited,
            op_logins,
        };
        let Some(w) = who.filter(|_| trip.on_op_login_page() && op_logins < 3) else {
            return trip;
        };
        let id = if w.cancel { "abort" } else { "login" };
        let action = form_action(&trip.body, id).expect("the OP's login form");
        (visited, op_logins) = (trip.visited, trip.op_logins + 1);
        url = join(&url, &action);
        form = Some(if w.cancel {
            vec![]
        } else {
            vec![
                ("email", w.email.to_string()),
                ("password", w.password.to_string()),
                ("otp", w.otp.unwrap_or("").to_string()),
            ]
        });
    }
    panic!("no end after 30 steps from {start}: {visited:#?}");
}

/// The identity the echo origin received for an XHR to `url` (and the status).
async fn whoami(c: &Client, url: &str) -> (StatusCode, Value) {
    let r = xhr(c, url).await;
    let s = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (s, v["identity"].clone())
}

/// A gateway page that refuses a sign-in cleanly: the status, a page saying `text`
/// with a way to start again, no redirect.
fn assert_refused(t: &Trip, status: StatusCode, text: &str) {
    assert_eq!(t.status, status, "{t:#?}");
    assert!(
        t.url.starts_with("https://auth.localhost:"),
        "answered by the gateway: {}",
        t.url
    );
    assert!(!t.headers.contains_key("location"), "no redirect: {t:#?}");
    assert!(
        t.headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html")),
        "a page: {t:#?}"
    );
    assert!(t.body.contains(text), "page says {text:?}: {}", t.body);
    assert!(
        t.body.contains("id=\"start-again\""),
        "a way to start again: {}",
        t.body
    );
}

fn start_again_href(body: &str) -> String {
    let i = body
        .find("id=\"start-again\" href=\"")
        .expect("start-again link")
        + 23;
    body[i..i + body[i..].find('"').expect("end")].replace("&amp;", "&")
}

fn idp_session(gw: &Gw, email: &str) -> portcullis::session::registry::SessionInfo {
    let live = gw.gw().sessions.list(Some(email), gw.gw().now_us());
    assert_eq!(live.len(), 1, "one live session of {email}: {live:#?}");
    live[0].info.clone()
}

// ---- sign-in ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_op_reaches_the_origin_with_its_email_and_groups() {
    let rig = Rig::start(&["corp"], false, "").await;
    let (c, jar) = rig.browser();
    let want = rig.echo("/welcome?x=1&y=two");
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.url.as_str()), (StatusCode::OK, want.as_str()));
    assert_eq!(t.op_logins, 1, "{t:#?}");
    // One IdP and no [[user]]: /login went straight to the IdP.
    let i = t
        .visited
        .iter()
        .position(|u| u.contains("auth.localhost") && u.contains("/login?"))
        .expect("the login page was asked for");
    assert!(t.visited[i + 1].contains("/oidc/corp/start?"), "{t:#?}");
    let reqs = t.auth_requests();
    assert_eq!(reqs.len(), 1);
    let q = &reqs[0];
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["redirect_uri"], rig.callback("corp"));
    assert!(!q["state"].is_empty() && !q["nonce"].is_empty());
    assert!(!q.contains_key("prompt") && !q.contains_key("max_age"));

    // The origin gets the OP's email and groups in the signed assertion.
    let (s, id) = whoami(&c, &want).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(id["email"], ALICE_EMAIL);
    assert_eq!(id["groups"], json!(["staff", "eng"]));
    // Group policy from the IdP's groups: the staff app lets her in, silently.
    let t = walk(&c, &rig.gw.url("staff.localhost", "/"), None, None).await;
    assert_eq!(t.status, StatusCode::OK, "{t:#?}");
    assert_eq!(t.op_logins, 0);

    // The session records the IdP, its sub and sid; the inventory shows the IdP.
    let info = idp_session(&rig.gw, ALICE_EMAIL);
    assert_eq!(
        (info.idp.as_str(), info.idp_sub.as_str()),
        ("corp", "user-1")
    );
    assert!(!info.idp_sid.is_empty(), "{info:?}");
    let (_, v) = rig
        .gw
        .admin(
            reqwest::Method::GET,
            "/v1/sessions?user=alice@example.com",
            None,
        )
        .await;
    assert_eq!(v["sessions"][0]["idp"], "corp", "{v}");
    let pending = cookie(&jar, &rig.callback("corp"), "portcullis_oidc");
    assert!(
        pending.is_none_or(|v| v.is_empty()),
        "the pending cookie is gone"
    );

    // Logout from the app ends the session and continues at the OP (RP-initiated).
    let op = &rig.ops[0];
    let t = walk(
        &c,
        &rig.echo("/.portcullis/logout"),
        None,
        Some(&op.url("/session/end")),
    )
    .await;
    let end = Url::parse(&t.url).expect("end-session URL");
    let q = query_of(&t.url);
    assert_eq!(q["post_logout_redirect_uri"], rig.auth("/signed-out"));
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(claims_of(&q["id_token_hint"])["sid"], info.idp_sid);
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);
    let back = op_logout(&c, &end).await;
    assert_eq!(back, rig.auth("/signed-out"));
    let r = c.get(&back).send().await.expect("signed-out page");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap_or_default().contains("Signed out"));
    // The OP's session ended too: the next sign-in asks for the password again.
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.op_logins), (StatusCode::OK, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_policy_gets_403() {
    let rig = Rig::start(&["corp"], false, "").await;
    // carol@other.org: not an @example.com address, but in the staff group.
    let (c, _) = rig.browser();
    let t = walk(&c, &rig.echo("/"), Some(creds(CAROL, "pw")), None).await;
    assert_eq!(t.status, StatusCode::FORBIDDEN, "{t:#?}");
    assert!(
        t.body.contains(CAROL) && t.body.contains("echo"),
        "{}",
        t.body
    );
    let t = walk(&c, &rig.gw.url("staff.localhost", "/"), None, None).await;
    assert_eq!(t.status, StatusCode::OK, "groups from the IdP: {t:#?}");
    // nogroups@example.com: the other way round.
    let (c, _) = rig.browser();
    let t = walk(&c, &rig.echo("/"), Some(creds(NOGROUPS, "pw")), None).await;
    assert_eq!(t.status, StatusCode::OK, "{t:#?}");
    let t = walk(&c, &rig.gw.url("staff.localhost", "/"), None, None).await;
    assert_eq!(t.status, StatusCode::FORBIDDEN, "{t:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_idps_side_by_side_with_the_built_in_users() {
    let rig = Rig::start(&["corp", "partner"], true, "").await;
    let want = rig.echo("/side?by=side");
    let (c, _) = rig.browser();
    let t = walk(&c, &want, None, None).await;
    assert_eq!(t.status, StatusCode::OK);
    assert!(t.url.starts_with(&rig.auth("/login?")), "{t:#?}");
    assert!(t.body.contains("name=\"password\""), "the form stays");
    assert!(
        t.body.contains("Sign in with Corp SSO") && t.body.contains("Sign in with Partner SSO")
    );
    let href = |idp: &str| {
        let needle = format!("href=\"/oidc/{idp}/start?");
        let i = t.body.find(&needle).expect("button") + 6;
        let end = i + t.body[i..].find('"').expect("end");
        rig.auth(&t.body[i..end].replace("&amp;", "&"))
    };
    let t = walk(&c, &href("partner"), Some(creds(PAT, "pw")), None).await;
    assert_eq!((t.status, t.url.as_str()), (StatusCode::OK, want.as_str()));
    let (_, id) = whoami(&c, &want).await;
    assert_eq!(
        (id["email"].as_str(), &id["groups"]),
        (Some(PAT), &json!(["partners"]))
    );

    let (c2, _) = rig.browser();
    let t = walk(&c2, &href("corp"), Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.url.as_str()), (StatusCode::OK, want.as_str()));
    let (c3, _) = rig.browser();
    let r = rig
        .gw
        .login(&c3, "echo.localhost", "/side?by=side", DEMO, DEMO_PW)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the built-in users still sign in"
    );

    assert_eq!(idp_session(&rig.gw, PAT).idp, "partner");
    assert_eq!(idp_session(&rig.gw, ALICE_EMAIL).idp, "corp");
    assert_eq!(idp_session(&rig.gw, DEMO).idp, "");
    let (_, v) = rig
        .gw
        .admin(reqwest::Method::GET, "/v1/sessions", None)
        .await;
    let mut idps: Vec<String> = v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["idp"].as_str().unwrap_or("?").to_string())
        .collect();
    idps.sort();
    assert_eq!(idps, ["corp", "local", "partner"]);
    // Revocation by user works the same whichever IdP signed the user in.
    rig.gw.revoke("user", PAT).await;
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(&c2, &want).await.0, StatusCode::OK);
    assert_eq!(whoami(&c3, &want).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_idp_does_not_stop_the_gateway_and_is_found_later() {
    let later_port = free_port();
    let later = idp_toml("later", &format!("http://127.0.0.1:{later_port}"), "");
    let rig = Rig::start(&["corp"], false, &later).await;
    let (c, _) = rig.browser();
    let login = rig.auth("/login");
    let t = walk(&c, &login, None, None).await;
    assert_eq!(
        t.status,
        StatusCode::OK,
        "two IdPs: the page, not a redirect"
    );
    assert!(
        t.body.contains("Later SSO is unavailable right now"),
        "{}",
        t.body
    );
    assert!(t.body.contains("Sign in with Corp SSO"));
    let t = walk(&c, &rig.auth("/oidc/later/start"), None, None).await;
    assert_refused(&t, StatusCode::SERVICE_UNAVAILABLE, "cannot be reached");
    // The rest works meanwhile.
    let t = walk(
        &c,
        &rig.auth("/oidc/corp/start"),
        Some(creds(ALICE, ALICE_PW)),
        None,
    )
    .await;
    assert_eq!(t.status, StatusCode::OK, "{t:#?}");

    // The IdP comes up; the retry (every 30 s of the gateway's clock) finds it.
    let ca = rig.gw.dir.join("certs/gateway.crt");
    let mut cfg = op_config("later", &[rig.port], &ca);
    cfg["port"] = json!(later_port);
    let op = TestOp::start(cfg).await;
    rig.gw.advance(Duration::from_secs(31));
    wait_discovered(&rig.gw, "later").await;
    let (c, _) = rig.browser();
    let t = walk(&c, &login, None, None).await;
    assert!(t.body.contains("Sign in with Later SSO"), "{}", t.body);
    let t = walk(
        &c,
        &rig.auth("/oidc/later/start"),
        Some(creds(PAT, "pw")),
        None,
    )
    .await;
    assert_eq!(t.status, StatusCode::OK, "{t:#?}");
    assert_eq!(idp_session(&rig.gw, PAT).idp, "later");

    // Reload: an unchanged IdP keeps its slot; a changed one is discovered at once.
    let kept = rig.gw.gw().idps.get("later").expect("slot");
    let text = std::fs::read_to_string(&rig.gw.config_path).expect("config");
    let text = text.replace(
        "display_name = \"Corp SSO\"",
        "display_name = \"Corp Login\"",
    );
    std::fs::write(&rig.gw.config_path, text).expect("write config");
    rig.gw.gw().reload().expect("reload");
    assert!(Arc::ptr_eq(
        &kept,
        &rig.gw.gw().idps.get("later").expect("slot")
    ));
    wait_discovered(&rig.gw, "corp").await;
    let t = walk(&c, &login, None, None).await;
    assert!(t.body.contains("Sign in with Corp Login"), "{}", t.body);
    op.stop().await;
}

// ---- refused callbacks ----------------------------------------------------------------

/// Starts a sign-in at the gateway and returns the authorization request's `state`
/// (the browser now holds that sign-in's pending cookie).
async fn started(c: &Client, rig: &Rig) -> String {
    let t = walk(
        c,
        &rig.auth("/oidc/corp/start"),
        None,
        Some("http://127.0.0.1"),
    )
    .await;
    query_of(&t.url)["state"].clone()
}

fn with_query(url: &str, set: &[(&str, &str)]) -> String {
    let mut u = Url::parse(url).expect("url");
    let mut q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    for (k, v) in set {
        q.retain(|(qk, _)| qk != k);
        q.push((k.to_string(), v.to_string()));
    }
    u.query_pairs_mut().clear().extend_pairs(q);
    u.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replayed_foreign_and_late_callbacks_are_refused_cleanly() {
    let rig = Rig::start(&["corp"], false, "").await;
    let cb_prefix = rig.callback("corp");
    let want = rig.echo("/after?error=none");

    // The user cancels at the OP: access_denied, a page, then starting again works.
    let (c, jar) = rig.browser();
    let cancel = Creds {
        cancel: true,
        ..creds(ALICE, ALICE_PW)
    };
    let t = walk(&c, &want, Some(cancel), None).await;
    assert_refused(&t, StatusCode::FORBIDDEN, "access_denied");
    let again = start_again_href(&t.body);
    assert!(again.starts_with("/login?return_to="), "{again}");
    let t = walk(&c, &rig.auth(&again), Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.url.as_str()),
        (StatusCode::OK, want.as_str()),
        "no loop"
    );

    // A wrong state: refused, and the sign-in it belonged to is over.
    let (c, jar2) = rig.browser();
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), Some(&cb_prefix)).await;
    let good = t.url.clone();
    let t = walk(&c, &with_query(&good, &[("state", "forged")]), None, None).await;
    assert_refused(
        &t,
        StatusCode::BAD_REQUEST,
        "does not belong to the sign-in",
    );
    let t = walk(&c, &good, None, None).await;
    assert_refused(
        &t,
        StatusCode::BAD_REQUEST,
        "no sign-in with Corp SSO in progress",
    );
    drop(jar2);

    // A callback replayed with its (captured) pending cookie: used once only.
    let (c, jar3) = rig.browser();
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), Some(&cb_prefix)).await;
    let callback = t.url.clone();
    let pending = cookie(&jar3, &callback, "portcullis_oidc").expect("pending cookie");
    let t = walk(&c, &callback, None, None).await;
    assert_eq!((t.status, t.url.as_str()), (StatusCode::OK, want.as_str()));
    let plant = format!("portcullis_oidc={pending}; Path=/oidc/corp/; Secure; HttpOnly");
    jar3.add_cookie_str(&plant, &Url::parse(&callback).expect("url"));
    let t = walk(&c, &callback, None, None).await;
    assert_refused(&t, StatusCode::BAD_REQUEST, "used already");

    // The code of that sign-in with the state of a new one: the OP refuses the code
    // (spent, and bound to the other sign-in's PKCE verifier).
    let code = query_of(&callback)["code"].clone();
    let state = started(&c, &rig).await;
    let crossed = with_query(&callback, &[("state", &state), ("code", &code)]);
    let t = walk(&c, &crossed, None, None).await;
    assert_refused(&t, StatusCode::BAD_REQUEST, "refused the sign-in code");

    // A code the OP issued to another client (registered with the same redirect URI).
    let http = portcullis::idp::http_client().expect("http");
    let other = portcullis::idp::Provider::discover(
        portcullis::idp::IdpConfig {
            client_id: "other".into(),
            ..rig.gw.gw().idps.get("corp").expect("slot").config().clone()
        },
        &http,
    )
    .await
    .expect("discovery");
    let redirect = Url::parse(&cb_prefix).expect("url");
    let (url, _) = other.authorization_url(&redirect, false, rig.gw.gw().now_us());
    let s = crate::idp::sign_in(
        &crate::idp::browser(),
        &url,
        &redirect,
        creds(ALICE, ALICE_PW),
    )
    .await;
    let foreign_code = query_of(s.callback.as_str())["code"].clone();
    let state = started(&c, &rig).await;
    let foreign = with_query(&callback, &[("state", &state), ("code", &foreign_code)]);
    let t = walk(&c, &foreign, None, None).await;
    assert_refused(&t, StatusCode::BAD_REQUEST, "refused the sign-in code");

    // Too late: the sign-in started more than 10 minutes ago.
    let (c, _) = rig.browser();
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), Some(&cb_prefix)).await;
    // (Not much more: the OP's ID tokens must still be recent by the gateway's clock.)
    rig.gw.advance(Duration::from_secs(605));
    let t = walk(&c, &t.url, None, None).await;
    assert_refused(&t, StatusCode::BAD_REQUEST, "took too long");
    let again = start_again_href(&t.body);
    let t = walk(&c, &rig.auth(&again), Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.url.as_str()), (StatusCode::OK, want.as_str()));

    // Unknown IdPs are not found.
    for path in ["/oidc/nope/start", "/oidc/nope/callback?code=x&state=y"] {
        let r = c.get(rig.auth(path)).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    drop(jar);
}

// ---- re-authentication after a revocation ---------------------------------------------

/// Moves the gateway's (manual) clock to the present, where the OP's clock is.
pub(crate) fn catch_up(gw: &Gw) {
    use portcullis::clock::{Clock, SystemClock};
    let lag = SystemClock.now_us() - gw.gw().now_us();
    if lag > 0 {
        gw.advance(Duration::from_micros(lag as u64));
    }
}

/// A browser holding only the OP cookies of `jar` (an attacker who stole the user's
/// IdP session, but has no gateway cookie).
pub(crate) fn with_op_cookies_of(rig: &Rig, jar: &reqwest::cookie::Jar) -> Client {
    use reqwest::cookie::CookieStore;
    let op = Url::parse(&rig.ops[0].url("/")).expect("op url");
    let stolen = Arc::new(reqwest::cookie::Jar::default());
    let header = jar.cookies(&op).expect("OP cookies");
    for pair in header.to_str().expect("ascii").split("; ") {
        stolen.add_cookie_str(&format!("{pair}; Path=/"), &op);
    }
    builder_for(rig.gw.h().https_addr)
        .cookie_provider(stolen)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_user_revocation_the_idp_must_authenticate_again() {
    let rig = Rig::start(&["corp"], false, "").await;
    let want = rig.echo("/again");
    let (c, jar) = rig.browser();
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.op_logins), (StatusCode::OK, 1));
    let attacker = with_op_cookies_of(&rig, &jar);

    // The revocation comes after the OP's sign-in, by the OP's clock too (the test
    // clock stands still unless moved: bring it to the present first).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    catch_up(&rig.gw);
    rig.gw.revoke("user", ALICE_EMAIL).await;
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);

    // The relogin lockout applies to IdP sign-ins too.
    let t = walk(&attacker, &want, None, None).await;
    assert_refused(&t, StatusCode::FORBIDDEN, "Signing in is blocked");
    assert!(t.headers.contains_key("retry-after"), "{t:#?}");
    rig.gw.advance(Duration::from_secs(61));

    // The stolen IdP session signs in silently, with the old auth_time: refused, and the
    // sign-in starts again with prompt=login, max_age=0 and the MFA acr_values. The
    // attacker, without the password, is stuck at the OP's login page.
    let t = walk(&attacker, &want, None, None).await;
    assert!(t.on_op_login_page(), "{t:#?}");
    let reqs = t.auth_requests();
    assert_eq!(reqs.len(), 2, "{t:#?}");
    assert!(
        !reqs[0].contains_key("prompt"),
        "a browser without a session: not forced first"
    );
    assert_eq!(reqs[1]["prompt"], "login");
    assert_eq!(reqs[1]["max_age"], "0");
    assert_eq!(reqs[1]["acr_values"], MFA_ACR);
    assert!(
        t.visited
            .iter()
            .any(|u| u.starts_with(&rig.callback("corp"))),
        "the silent sign-in's callback was refused: {t:#?}"
    );
    assert_eq!(whoami(&attacker, &want).await.0, StatusCode::UNAUTHORIZED);

    // The user's own browser (its revoked session cookie) is asked for a fresh sign-in
    // at once; a password alone does not satisfy the second factor asked for.
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_refused(&t, StatusCode::FORBIDDEN, "second factor");
    assert_eq!(t.op_logins, 1, "no loop: {t:#?}");
    let reqs = t.auth_requests();
    assert_eq!((reqs.len(), reqs[0]["prompt"].as_str()), (1, "login"));
    // With it, the user is back, with a fresh auth_time.
    let t = walk(&c, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.url.as_str()),
        (StatusCode::OK, want.as_str()),
        "{t:#?}"
    );
    let (s, id) = whoami(&c, &want).await;
    assert_eq!(
        (s, id["email"].as_str()),
        (StatusCode::OK, Some(ALICE_EMAIL))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_group_revocations_ask_for_a_fresh_sign_in_but_a_logout_does_not() {
    let rig = Rig::start(&["corp"], false, "").await;
    let want = rig.echo("/scopes");
    let (c, jar) = rig.browser();
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!(t.status, StatusCode::OK);
    let attacker = with_op_cookies_of(&rig, &jar);
    let info = idp_session(&rig.gw, ALICE_EMAIL);

    // An operator ends the user's (last) session by its id: no lockout, but the IdP's
    // session alone no longer gets anyone in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    catch_up(&rig.gw);
    rig.gw.revoke("session", &info.sid).await;
    let t = walk(&attacker, &want, None, None).await;
    assert!(t.on_op_login_page(), "{t:#?}");
    let reqs = t.auth_requests();
    assert_eq!(reqs.len(), 2, "{t:#?}");
    assert_eq!(
        (reqs[1]["prompt"].as_str(), reqs[1]["max_age"].as_str()),
        ("login", "0")
    );
    // The user signs in again, with the second factor.
    let t = walk(&c, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.url.as_str()),
        (StatusCode::OK, want.as_str()),
        "{t:#?}"
    );
    assert_eq!(
        t.auth_requests()[0]["prompt"],
        "login",
        "this browser's session was revoked"
    );

    // The user's own logout (stopping before the IdP's logout page, so the IdP session
    // lives on): the next sign-in is silent.
    let t = walk(&c, &rig.auth("/logout"), None, Some("http://127.0.0.1")).await;
    assert!(t.url.contains("/session/end"), "{t:#?}");
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);
    let t = walk(&c, &want, None, None).await;
    assert_eq!(
        (t.status, t.url.as_str()),
        (StatusCode::OK, want.as_str()),
        "{t:#?}"
    );
    assert!(
        t.auth_requests().iter().all(|q| !q.contains_key("prompt")),
        "{t:#?}"
    );

    // A group revocation covering the session: the browser is asked for a fresh sign-in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    catch_up(&rig.gw);
    rig.gw.revoke("group", "eng").await;
    let t = walk(&c, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.op_logins), (StatusCode::OK, 1), "{t:#?}");
    assert_eq!(t.auth_requests()[0]["prompt"], "login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reauth_off_the_idp_session_signs_the_user_back_in_after_the_lockout() {
    let rig = Rig::start_with(&["corp"], false, "", "reauth = \"off\"").await;
    let want = rig.echo("/off");
    let (c, _jar) = rig.browser();
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.op_logins), (StatusCode::OK, 1));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    catch_up(&rig.gw);
    rig.gw.revoke("user", ALICE_EMAIL).await;
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);

    // The relogin lockout still applies.
    let t = walk(&c, &want, None, None).await;
    assert_refused(&t, StatusCode::FORBIDDEN, "Signing in is blocked");
    rig.gw.advance(Duration::from_secs(61));

    // After it, the IdP's own session signs the user in again: no prompt=login, no
    // max_age, and the old auth_time is accepted.
    let t = walk(&c, &want, None, None).await;
    assert_eq!(
        (t.status, t.url.as_str(), t.op_logins),
        (StatusCode::OK, want.as_str(), 0),
        "{t:#?}"
    );
    let reqs = t.auth_requests();
    assert_eq!(reqs.len(), 1, "{t:#?}");
    assert!(!reqs[0].contains_key("prompt") && !reqs[0].contains_key("max_age"));
    assert_eq!(whoami(&c, &want).await.0, StatusCode::OK);
}

// ---- back-channel logout ----------------------------------------------------------------

/// Posts a logout token to the gateway's back-channel endpoint.
async fn post_logout_token(rig: &Rig, token: &str) -> (StatusCode, Value) {
    let (c, _) = rig.browser();
    let r = c
        .post(rig.auth("/oidc/corp/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("post");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn audit_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("state/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_replayed_logout_tokens_change_nothing() {
    let rig = Rig::start(&["corp"], false, "").await;
    let op = &rig.ops[0];
    let want = rig.echo("/bc");
    let (c, _) = rig.browser();
    walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    let info = idp_session(&rig.gw, ALICE_EMAIL);
    let secs = rig.gw.gw().now_us() / 1_000_000;
    let good = json!({
        "iss": op.issuer, "aud": CLIENT, "iat": secs, "exp": secs + 120, "jti": "bc-1",
        "sid": info.idp_sid, "sub": info.idp_sub, "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    });
    let with = |k: &str, v: Value| {
        let mut t = good.clone();
        t[k] = v;
        t
    };
    let (rs, es) = (op.key("RS256"), op.key("ES256"));
    let other_key = OpKey {
        pem: rcgen::KeyPair::generate().expect("key").serialize_pem(),
        ..es.clone()
    };
    let hs = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("logout+jwt".into());
        let key = jsonwebtoken::EncodingKey::from_secret(RP_SECRET.as_bytes());
        jsonwebtoken::encode(&h, &good, &key).expect("hs")
    };
    let none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none"}"#),
            b64.encode(good.to_string())
        )
    };
    let forgeries = [
        (
            "another key under the OP's kid",
            forge(&other_key, Some("logout+jwt"), &good),
        ),
        ("HS256 with the client secret", hs),
        ("alg none", none),
        (
            "another audience",
            forge(rs, None, &with("aud", json!("someone-else"))),
        ),
        (
            "another issuer",
            forge(rs, None, &with("iss", json!("https://evil.example"))),
        ),
        ("a nonce", forge(rs, None, &with("nonce", json!("n")))),
        (
            "no logout event",
            forge(rs, None, &with("events", json!({}))),
        ),
        ("too old", forge(rs, None, &with("iat", json!(secs - 600)))),
        ("not a JWT", "garbage".to_string()),
    ];
    for (what, token) in &forgeries {
        let (s, v) = post_logout_token(&rig, token).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {v}");
        assert_eq!(v["error"], "invalid_request", "{what}: {v}");
        assert!(v["error_description"].is_string(), "{what}: {v}");
    }
    assert_eq!(whoami(&c, &want).await.0, StatusCode::OK, "nothing ended");
    // A genuine token for another IdP session ends nothing here.
    let other_sid = {
        let mut t = with("sid", json!("some-other-op-session"));
        t["jti"] = json!("bc-0");
        forge(rs, None, &t)
    };
    let (s, v) = post_logout_token(&rig, &other_sid).await;
    assert_eq!((s, &v["sessions_revoked"]), (StatusCode::OK, &json!(0)));
    assert_eq!(whoami(&c, &want).await.0, StatusCode::OK);

    // The genuine token for this session ends it.
    let token = forge(es, Some("logout+jwt"), &good);
    let (s, v) = post_logout_token(&rig, &token).await;
    assert_eq!(
        (s, &v["sessions_revoked"]),
        (StatusCode::OK, &json!(1)),
        "{v}"
    );
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);
    let line = audit_lines(&rig.gw.dir)
        .into_iter()
        .find(|l| l["actor"] == "idp:corp")
        .expect("audited");
    assert_eq!(
        (
            &line["scope"],
            &line["target"],
            &line["reason"],
            &line["external_id"]
        ),
        (
            &json!("session"),
            &json!(info.sid),
            &json!("backchannel_logout"),
            &json!("bc-1")
        )
    );
    // Signed in again from the same IdP session: a replay of the token changes nothing.
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.op_logins),
        (StatusCode::OK, 0),
        "the OP session lives on"
    );
    assert_eq!(idp_session(&rig.gw, ALICE_EMAIL).idp_sid, info.idp_sid);
    let (s, v) = post_logout_token(&rig, &token).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("replay"),
        "{v}"
    );
    assert_eq!(whoami(&c, &want).await.0, StatusCode::OK);

    // Not a GET; and a POST without a token is a 400.
    let (c2, _) = rig.browser();
    let r = c2
        .get(rig.auth("/oidc/corp/backchannel-logout"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = c2
        .post(rig.auth("/oidc/corp/backchannel-logout"))
        .form(&[("nothing", "here")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    portcullis::audit::verify_chain(&rig.gw.dir.join("state/audit.log")).expect("audit chain");
}

const PEER_TOKEN: &str = "oidc-cluster-test-peer-token-7a2c";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// `n` gateway nodes (peers of each other, sharing keys and a clock) with IdP `corp`,
/// whose OP sends back-channel logout tokens to the first node.
async fn idp_cluster(n: usize) -> (Vec<Gw>, TestOp, tempfile::TempDir) {
    idp_cluster_with(n, "").await
}

/// As [`idp_cluster`], with `more` tables in every node's config.
async fn idp_cluster_with(n: usize, more: &str) -> (Vec<Gw>, TestOp, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let https: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let control: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let dir = |i: usize| tmp.path().join(format!("node{}", i + 1));
    let op = TestOp::start(op_config("corp", &https, &dir(0).join("certs/gateway.crt"))).await;
    let clock = ManualClock::starting_now();
    let mut nodes = Vec::new();
    for i in 0..n {
        std::fs::create_dir_all(dir(i).join("state")).expect("mkdir");
        crate::common::write_secret(&dir(i).join("peer.token"), PEER_TOKEN);
        let peers: Vec<String> = (0..n)
            .filter(|j| *j != i)
            .map(|j| format!("\"http://127.0.0.1:{}\"", control[j]))
            .collect();
        let extra = format!(
            "{APPS}{}{more}\n[sync]\npeers = [{}]\npeer_token_file = \"peer.token\"\nanti_entropy_interval = \"200ms\"\n",
            idp_toml("corp", &op.issuer, ""),
            peers.join(", ")
        );
        let toml = gateway_toml(https[i], &extra, false)
            .replace(
                "[control]\nlisten = \"127.0.0.1:0\"",
                &format!("[control]\nlisten = \"127.0.0.1:{}\"", control[i]),
            )
            .replace(
                "node_id = \"test-1\"",
                &format!("node_id = \"node-{}\"", i + 1),
            );
        if i > 0 {
            copy_dir(&dir(0).join("state/keys"), &dir(i).join("state/keys"));
        }
        nodes.push(Gw::start_in(&dir(i), &toml, clock.clone()).await);
    }
    for g in &nodes {
        let ready = g.control_url("/readyz");
        let t0 = Instant::now();
        while reqwest::get(&ready)
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
            != 200
        {
            assert!(t0.elapsed() < Duration::from_secs(15), "{ready} not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_discovered(g, "corp").await;
    }
    (nodes, op, tmp)
}

/// A client of node `addr` with the cookie jar `jar`.
fn on_node(addr: SocketAddr, jar: &Arc<reqwest::cookie::Jar>) -> Client {
    builder_for(addr)
        .cookie_provider(jar.clone())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_back_channel_logout_ends_the_session_on_every_node() {
    let (nodes, op, _tmp) = idp_cluster(3).await;
    // Signed in on node 2; the OP's logout token arrives at node 1.
    let (c, jar) = client_with_jar(nodes[1].h().https_addr);
    let want = nodes[1].url("echo.localhost", "/everywhere");
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.url.as_str()),
        (StatusCode::OK, want.as_str()),
        "{t:#?}"
    );
    let info = idp_session(&nodes[1], ALICE_EMAIL);
    assert!(
        nodes[0].gw().sessions.get(&info.sid).is_none(),
        "not recorded on node 1"
    );
    let clients: Vec<Client> = nodes
        .iter()
        .map(|g| on_node(g.h().https_addr, &jar))
        .collect();
    for (i, cl) in clients.iter().enumerate() {
        let url = nodes[i].url("echo.localhost", "/");
        assert_eq!(whoami(cl, &url).await.0, StatusCode::OK, "node {}", i + 1);
    }

    // The user logs out at the OP itself; the OP tells node 1 over the back channel.
    // (The nodes share a test clock that stands still: move it on a little, as real
    // time does between a sign-in on one node and a revocation on another.)
    nodes[0].advance(Duration::from_millis(5));
    let end = Url::parse(&format!("{}?client_id={CLIENT}", op.url("/session/end"))).expect("url");
    op_logout(&c, &end).await;
    let t0 = Instant::now();
    for (i, cl) in clients.iter().enumerate() {
        let url = nodes[i].url("echo.localhost", "/");
        while whoami(cl, &url).await.0 != StatusCode::UNAUTHORIZED {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "node {} still lets the session in",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let line = audit_lines(&nodes[0].dir)
        .into_iter()
        .find(|l| l["actor"] == "idp:corp")
        .expect("audited on node 1");
    assert_eq!(line["target"], info.sid);
    assert_eq!(line["reason"], "backchannel_logout");
    assert!(
        line["external_id"].as_str().is_some_and(|j| !j.is_empty()),
        "{line}"
    );
    assert!(
        nodes[1]
            .gw()
            .sessions
            .list(Some(ALICE_EMAIL), nodes[1].gw().now_us())
            .is_empty()
    );
    op.stop().await;
}

// ---- a real browser -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_through_the_op_login_page_and_out_again() {
    let rig = Rig::start(&["corp"], false, "").await;
    let driver = Driver::start().await;
    let b = driver.session().await;
    let op = rig.ops[0].url("/");
    bounded("OIDC sign-in in Chromium", async {
        let want = rig.echo("/deep/page?x=1&y=two");
        b.goto(&want).await;
        let email = wait_for(&b, "#email").await;
        let here = b.url().await;
        assert!(here.starts_with(&op), "the OP's own login page, not {here}");
        email.send_keys(ALICE).await.expect("type email");
        wait_for(&b, "#password")
            .await
            .send_keys(ALICE_PW)
            .await
            .expect("type password");
        wait_for(&b, "#submit").await.click().await.expect("submit");
        b.settle_on(&want, ALICE_EMAIL, "back on the page first asked for")
            .await;
        // Sign out from the app: the gateway, then the OP's own logout page.
        wait_for(&b, "a[href=\"/.portcullis/logout\"]")
            .await
            .click()
            .await
            .expect("sign out");
        wait_for(&b, "#logout")
            .await
            .click()
            .await
            .expect("confirm at the OP");
        b.settle_on(
            &rig.auth("/signed-out"),
            "Signed out",
            "signed out everywhere",
        )
        .await;
        b.goto(&want).await;
        wait_for(&b, "#email").await; // the OP asks again: its session ended too
    })
    .await;
    b.close().await;
}

/// Waits (bounded) for an element matching `css` on the current page.
async fn wait_for(b: &crate::browser::Browser, css: &str) -> fantoccini::elements::Element {
    let t0 = Instant::now();
    loop {
        match b.c().find(Locator::Css(css)).await {
            Ok(e) => return e,
            Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no {css}: {e}\n{}", b.describe().await),
        }
    }
}

// ---- the organisation's directory (SCIM) and IdP sign-in --------------------------------

const SCIM_TOML: &str = r#"
[scim]
name = "okta"
token_file = "scim.token"
"#;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A SCIM client of the rig's gateway, with the token it wrote on first start.
fn scim_client(rig: &Rig) -> crate::support::signals::ScimClient {
    let token = std::fs::read_to_string(rig.gw.dir.join("scim.token")).expect("SCIM token");
    crate::support::signals::ScimClient::new(rig.gw.h().https_addr, rig.port, token.trim())
}

async fn scim(
    s: &crate::support::signals::ScimClient,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> crate::support::signals::ScimResp {
    s.request(method, path, None, Some(body.to_string()), Some(&s.token))
        .await
}

/// Okta's deactivation (a replace without a path) or reactivation of user `id`.
async fn scim_set_active(s: &crate::support::signals::ScimClient, id: &str, active: bool) {
    let body = json!({"schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "value": {"active": active}}]});
    let r = scim(s, reqwest::Method::PATCH, &format!("/Users/{id}"), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["active"], active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_decides_who_signs_in_through_the_idp_and_with_which_groups() {
    let rig = Rig::start(&["corp"], false, SCIM_TOML).await;
    let s = scim_client(&rig);
    // The directory knows Alice, in group `eng` only (the OP says staff and eng).
    let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": ALICE_EMAIL, "active": true,
        "emails": [{"primary": true, "value": ALICE_EMAIL, "type": "work"}]});
    let r = scim(&s, reqwest::Method::POST, "/Users", user).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_str().expect("user id").to_string();
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "eng", "members": [{"value": id}]});
    let r = scim(&s, reqwest::Method::POST, "/Groups", group).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let gid = r.json["id"].as_str().expect("group id").to_string();

    // Signed in through the IdP, she carries the directory's groups: the staff app
    // (allow_groups = ["staff"]) refuses her although the OP says staff.
    let want = rig.echo("/directory");
    let (c, _jar) = rig.browser();
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!((t.status, t.op_logins), (StatusCode::OK, 1), "{t:#?}");
    let (st, who) = whoami(&c, &want).await;
    assert_eq!(
        (st, who["groups"].clone()),
        (StatusCode::OK, json!(["eng"]))
    );
    let t = walk(&c, &rig.gw.url("staff.localhost", "/"), None, None).await;
    assert_eq!(t.status, StatusCode::FORBIDDEN, "{t:#?}");

    // Leaving `eng` in the directory: the app token is refused at once, and the next
    // navigation re-issues one without the group, with no sign-in at the IdP.
    let remove = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{id}\"]")}]});
    let r = scim(
        &s,
        reqwest::Method::PATCH,
        &format!("/Groups/{gid}"),
        remove,
    )
    .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.json);
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);
    let t = walk(&c, &want, None, None).await;
    assert_eq!((t.status, t.op_logins), (StatusCode::OK, 0), "{t:#?}");
    assert!(
        t.auth_requests().is_empty(),
        "the IdP was not asked: {t:#?}"
    );
    assert_eq!(whoami(&c, &want).await.1["groups"], json!([]));

    // Deactivated in the directory: her session ends, and the IdP's word that it is
    // her is not enough to come back (the directory's refusal, not the lockout's).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    catch_up(&rig.gw);
    scim_set_active(&s, &id, false).await;
    assert_eq!(whoami(&c, &want).await.0, StatusCode::UNAUTHORIZED);
    let (fresh, _) = rig.browser();
    let t = walk(&fresh, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_refused(
        &t,
        StatusCode::FORBIDDEN,
        "deactivated in your organisation",
    );
    assert!(t.op_logins <= 1, "{t:#?}");
    assert!(
        t.visited
            .iter()
            .any(|u| u.starts_with(&rig.callback("corp"))),
        "the OP answered and the gateway refused at the callback: {t:#?}"
    );
    assert!(
        rig.gw
            .gw()
            .sessions
            .list(Some(ALICE_EMAIL), rig.gw.gw().now_us())
            .is_empty()
    );
    // Still refused after the relogin lockout: the directory says so, not a timer.
    rig.gw.advance(Duration::from_secs(61));
    let t = walk(&fresh, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_refused(
        &t,
        StatusCode::FORBIDDEN,
        "deactivated in your organisation",
    );

    // Reactivated: she signs in through the IdP again (with the second factor asked
    // after a revocation).
    scim_set_active(&s, &id, true).await;
    let t = walk(&fresh, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_eq!(
        (t.status, t.url.as_str()),
        (StatusCode::OK, want.as_str()),
        "{t:#?}"
    );
    let (st, who) = whoami(&fresh, &want).await;
    assert_eq!(
        (st, who["email"].as_str()),
        (StatusCode::OK, Some(ALICE_EMAIL))
    );
}

// ---- Shared Signals about people signed in through the IdP ------------------------------

const SSF_ISS: &str = "https://ssf-transmitter.test/";
const SSF_AUD: &str = "https://auth.localhost/ssf/tx";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// Pushes a SET to node `g`'s receiver `tx`: the status and body.
async fn push_set(g: &Gw, set: &str) -> (StatusCode, String) {
    let r = client_for(g.h().https_addr, false)
        .post(g.url("auth.localhost", "/ssf/tx/events"))
        .header("content-type", "application/secevent+jwt")
        .body(set.to_string())
        .send()
        .await
        .expect("push");
    let s = r.status();
    (s, r.text().await.unwrap_or_default())
}

/// SET claims for one event about `sub_id`, issued now by the nodes' clock.
fn set_claims(g: &Gw, jti: &str, event: &str, sub_id: Value) -> Value {
    use portcullis::clock::Clock;
    let now = g.clock.now_us() / 1_000_000;
    json!({"iss": SSF_ISS, "aud": SSF_AUD, "iat": now, "jti": jti, "sub_id": sub_id,
        "events": {event: {"event_timestamp": now}}})
}

/// Until `c` is refused at `url` (bounded).
async fn until_refused(c: &Client, url: &str, what: &str) {
    let t0 = Instant::now();
    while whoami(c, url).await.0 != StatusCode::UNAUTHORIZED {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: still let in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_signals_name_idp_users_and_sessions_and_reach_every_node() {
    use crate::support::signals::{serve_jwks, tx_key};
    let key = tx_key(jsonwebtoken::Algorithm::ES256, "tx-1");
    let jwks = serve_jwks(&[&key]).await;
    let ssf = format!(
        "\n[[signals.ssf]]\nname = \"tx\"\nissuer = \"{SSF_ISS}\"\njwks_url = \"{}\"\naudience = \"{SSF_AUD}\"\n",
        jwks.url
    );
    let (nodes, op, _tmp) = idp_cluster_with(2, &ssf).await;
    // Alice signs in through the OP at node 2; the transmitter talks to node 1, which
    // has never seen her.
    let want = nodes[1].url("echo.localhost", "/signals");
    let (c, _jar) = client_with_jar(nodes[1].h().https_addr);
    let t = walk(&c, &want, Some(creds(ALICE, ALICE_PW)), None).await;
    assert_eq!(t.status, StatusCode::OK, "{t:#?}");
    let info = idp_session(&nodes[1], ALICE_EMAIL);
    assert!(nodes[0].gw().sessions.get(&info.sid).is_none());
    let user = json!({"format": "iss_sub", "iss": op.issuer, "sub": info.idp_sub});

    // CAEP session-revoked naming the IdP's session (and the user): that gateway
    // session ends on node 2, with the SET's jti in the record.
    nodes[0].advance(Duration::from_millis(5));
    let subject = json!({"format": "complex", "user": user,
        "session": {"format": "opaque", "id": info.idp_sid}});
    let set = key.sign(&set_claims(
        &nodes[0],
        "jti-session-1",
        &format!("{CAEP}session-revoked"),
        subject,
    ));
    assert_eq!(
        push_set(&nodes[0], &set).await,
        (StatusCode::ACCEPTED, String::new())
    );
    until_refused(&c, &want, "session-revoked at node 2").await;
    let (_, v) = nodes[0]
        .admin(reqwest::Method::GET, "/v1/revocations", None)
        .await;
    let rec = v["revocations"]
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["actor"] == "ssf:tx")
        .cloned()
        .expect("the SSF revocation");
    assert_eq!(
        (rec["scope"].as_str(), rec["target"].as_str()),
        (Some("session"), Some(info.sid.as_str()))
    );
    assert_eq!(rec["external_id"], "jti-session-1");
    let line = audit_lines(&nodes[0].dir)
        .into_iter()
        .find(|l| l["actor"] == "ssf:tx")
        .expect("audited on the node the transmitter called");
    assert_eq!(
        (line["scope"].as_str(), line["target"].as_str()),
        (Some("session"), Some(info.sid.as_str()))
    );
    assert_eq!(line["external_id"], "jti-session-1");
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("session-revoked")),
        "{line}"
    );

    // She signs in again (the OP is asked for a fresh sign-in after a revocation).
    let t = walk(&c, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
    assert_eq!(t.status, StatusCode::OK, "{t:#?}");

    // RISC account-disabled by iss_sub: everything of hers ends, and the IdP cannot
    // sign her in at any node until account-enabled, lockout or not.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    catch_up(&nodes[0]);
    let set = key.sign(&set_claims(
        &nodes[0],
        "jti-disable-1",
        &format!("{RISC}account-disabled"),
        user.clone(),
    ));
    assert_eq!(push_set(&nodes[0], &set).await.0, StatusCode::ACCEPTED);
    until_refused(&c, &want, "account-disabled at node 2").await;
    nodes[0].advance(Duration::from_secs(61));
    let t0 = Instant::now();
    loop {
        let (fresh, _) = client_with_jar(nodes[1].h().https_addr);
        let t = walk(&fresh, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
        if t.status == StatusCode::FORBIDDEN {
            assert_refused(&t, StatusCode::FORBIDDEN, "disabled by your organisation");
            break;
        }
        // The disabled flag travels with the documents; give it the propagation time.
        assert!(t0.elapsed() < Duration::from_secs(5), "signed in: {t:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let set = key.sign(&set_claims(
        &nodes[0],
        "jti-enable-1",
        &format!("{RISC}account-enabled"),
        user,
    ));
    assert_eq!(push_set(&nodes[0], &set).await.0, StatusCode::ACCEPTED);
    let t0 = Instant::now();
    loop {
        let (fresh, _) = client_with_jar(nodes[1].h().https_addr);
        let t = walk(&fresh, &want, Some(mfa(ALICE, ALICE_PW)), None).await;
        if t.status == StatusCode::OK {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still refused: {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    op.stop().await;
}
