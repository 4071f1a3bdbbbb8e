//! SCIM provisioning over the real listener: the requests Okta and Microsoft Entra send
//! (tests/fixtures/scim, each naming its documentation source) against
//! `https://auth.localhost/scim/v2`, and what they do to people signed in through the
//! gateway: deactivation and deletion end every token and refuse sign-in, reactivation
//! lets them in again, leaving a group re-issues the app token with fewer groups
//! without a sign-in form. Bad input gets the protocol's own error and changes nothing.

use crate::common::*;
use crate::support::signals::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

fn extra() -> String {
    let h = &hashes()[0];
    format!(
        r#"
[scim]
name = "okta"
token_file = "scim.token"

[[app]]
name = "staff"
hosts = ["staff.localhost"]
origin = "builtin:echo"
allow_groups = ["Test SCIMv2"]

[[app]]
name = "other"
hosts = ["other.localhost"]
origin = "builtin:echo"
allow_emails = ["*@okta.local", "*@testuser.com"]

[[user]]
email = "{OKTA_EMAIL}"
password_hash = "{h}"

[[user]]
email = "{ENTRA_EMAIL}"
password_hash = "{h}"
"#
    )
}

async fn start() -> (Gw, ScimClient) {
    let g = Gw::start(&extra()).await;
    let token = std::fs::read_to_string(g.dir.join("scim.token")).unwrap();
    let s = ScimClient::new(g.h().https_addr, g.port(), token.trim());
    (g, s)
}

/// Creates the user of a `*_create_user` fixture and maps the documentation's id to
/// the server's.
async fn create_user(s: &mut ScimClient, f: &str, doc_id: &str) -> String {
    let r = s.send(&fixture(f)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    let loc = r.headers["location"].to_str().unwrap();
    assert_eq!(
        loc,
        format!("{}/Users/{id}", s.base),
        "Location is the absolute resource URL"
    );
    assert!(r.headers.contains_key("etag"));
    assert_eq!(r.headers["content-type"], "application/scim+json");
    s.map(doc_id, &id);
    id
}

async fn signed_in(g: &Gw, host: &str, email: &str) -> reqwest::Client {
    let (c, _jar) = client_with_jar(g.h().https_addr);
    let r = g.login(&c, host, "/", email, DEMO_PW).await;
    assert_eq!(r.status(), StatusCode::OK, "signed in at {host}");
    c
}

async fn identity(g: &Gw, c: &reqwest::Client, host: &str) -> (StatusCode, Value) {
    let r = xhr(c, &g.url(host, "/.portcullis/identity")).await;
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The sign-in form's answer for `email` (after any relogin lockout has passed).
async fn sign_in_answer(g: &Gw, host: &str, email: &str) -> (StatusCode, String) {
    let (c, _jar) = client_with_jar(g.h().https_addr);
    let r = g.login(&c, host, "/", email, DEMO_PW).await;
    let s = r.status();
    (s, r.text().await.unwrap_or_default())
}

async fn revocations(g: &Gw) -> Vec<Value> {
    let (s, v) = g.admin(Method::GET, "/v1/revocations", None).await;
    assert_eq!(s, StatusCode::OK);
    v["revocations"].as_array().unwrap().clone()
}

async fn metrics(g: &Gw) -> String {
    reqwest::get(g.control_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_deactivation_ends_every_token_and_refuses_sign_in_until_reactivated() {
    let (g, mut s) = start().await;
    // No token, a wrong token: the SCIM error, and nothing is created.
    for token in [None, Some("wrong")] {
        let body = fixture("okta_create_user").body;
        let r = s.request(Method::POST, "/Users", None, body, token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.json["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert_eq!(r.json["status"], "401");
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    let r = s.send(&fixture("okta_user_exists")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json["totalResults"],
        json!(0),
        "integers are JSON integers"
    );

    let id = create_user(&mut s, "okta_create_user", OKTA_USER).await;
    let r = s.send(&fixture("okta_create_user")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a duplicate userName");
    assert_eq!(r.json["scimType"], "uniqueness");
    let r = s.send(&fixture("okta_user_exists")).await;
    assert_eq!(r.json["totalResults"], json!(1));
    assert_eq!(r.json["Resources"][0]["id"], id.as_str());

    let c = signed_in(&g, "other.localhost", OKTA_EMAIL).await;
    assert_eq!(identity(&g, &c, "other.localhost").await.0, StatusCode::OK);

    // Okta deactivates: {"op":"replace","value":{"active":false}} with no path.
    let r = s.send(&fixture("okta_deactivate_user")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["active"], json!(false));
    let (st, v) = identity(&g, &c, "other.localhost").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"], "session_revoked");
    // Inactive users are still returned.
    let r = s.get(&format!("/Users/{id}")).await;
    assert_eq!(
        (r.status, r.json["active"].clone()),
        (StatusCode::OK, json!(false))
    );

    // After the relogin lockout, sign-in stays refused while the account is inactive.
    g.advance(Duration::from_secs(61));
    let (st, html) = sign_in_answer(&g, "other.localhost", OKTA_EMAIL).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(html.contains("deactivated in your organisation"), "{html}");

    // The revocation names its trigger, the SCIM user id and why; so does the audit log.
    let rev = revocations(&g).await;
    let mine: Vec<&Value> = rev.iter().filter(|r| r["actor"] == "scim:okta").collect();
    assert_eq!(mine.len(), 1, "{rev:?}");
    assert_eq!(mine[0]["scope"], "user");
    assert_eq!(mine[0]["target"], OKTA_EMAIL);
    assert_eq!(mine[0]["external_id"], id.as_str());
    assert_eq!(mine[0]["reason"], "scim: user deactivated");
    let audit = std::fs::read_to_string(g.dir.join("state/audit.log")).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("scim:okta"))
        .expect("audit line");
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["external_id"], id.as_str());
    assert_eq!(line["action"], "scim_deactivate");

    // Okta reactivates with a PUT of the whole user: sign-in works again.
    let r = s.send(&fixture("okta_put_user")).await;
    assert_eq!(
        (r.status, r.json["active"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (st, _) = sign_in_answer(&g, "other.localhost", OKTA_EMAIL).await;
    assert_eq!(st, StatusCode::OK);
    // Okta's other way to deactivate: PUT with "active": false.
    let c = signed_in(&g, "other.localhost", OKTA_EMAIL).await;
    g.advance(Duration::from_millis(5));
    let r = s.send(&fixture("okta_put_deactivate")).await;
    assert_eq!(
        (r.status, r.json["active"].clone()),
        (StatusCode::OK, json!(false))
    );
    assert_eq!(
        identity(&g, &c, "other.localhost").await.0,
        StatusCode::UNAUTHORIZED
    );

    let m = metrics(&g).await;
    assert_eq!(
        metric(
            &m,
            "portcullis_signals_refused_total{trigger=\"scim:okta\",reason=\"unauthorized\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_signals_refused_total{trigger=\"scim:okta\",reason=\"uniqueness\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_signals_applied_total{trigger=\"scim:okta\"}"
        ),
        3
    );
    assert!(
        metric(
            &m,
            "portcullis_signals_received_total{trigger=\"scim:okta\"}"
        ) >= 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_string_boolean_deactivation_and_delete_refuse_the_user() {
    let (g, mut s) = start().await;
    let id = create_user(&mut s, "entra_create_user", ENTRA_USER).await;
    // Entra looks users up by userName with its compliance flag in the query.
    let r = s.send(&fixture("entra_get_user_by_query")).await;
    assert_eq!(r.json["totalResults"], json!(1), "{}", r.json);
    let r = s.send(&fixture("entra_get_user_zero_results")).await;
    assert_eq!(r.json["totalResults"], json!(0));

    let c = signed_in(&g, "other.localhost", ENTRA_EMAIL).await;
    // {"op":"Replace","path":"active","value":"False"}: a string boolean, capitalised op.
    let r = s.send(&fixture("entra_disable_user_string")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["active"], json!(false));
    assert_eq!(
        identity(&g, &c, "other.localhost").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Deleted: gone from SCIM, sign-in still refused.
    let r = s.send(&fixture("entra_delete_user")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    g.advance(Duration::from_secs(61));
    let (st, html) = sign_in_answer(&g, "other.localhost", ENTRA_EMAIL).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("deactivated"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_downgrade_reissues_a_token_with_fewer_groups_without_a_sign_in_form() {
    let (g, mut s) = start().await;
    let uid = create_user(&mut s, "okta_create_user", OKTA_USER).await;
    // Okta's group, and Entra's (named "displayName" in Microsoft's example).
    let r = s.send(&fixture("okta_create_group")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let g1 = r.json["id"].as_str().unwrap().to_string();
    let r = s.send(&fixture("entra_create_group")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let g2 = r.json["id"].as_str().unwrap().to_string();
    // Okta adds the user to its group; Entra to its own.
    s.map(OKTA_GROUP, &g1);
    let r = s.send(&fixture("okta_group_membership")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    s.map(ENTRA_GROUP, &g2);
    s.map("f648f8d5ea4e4cd38e9c", &uid);
    let r = s.send(&fixture("entra_group_add_members")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    // Entra reads groups without their members.
    s.map("40734ae655284ad3abcc", &g1);
    let r = s.send(&fixture("entra_get_group")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json.get("members").is_none(), "{}", r.json);

    // Signed in with the built-in form (which knows no groups): SCIM's groups count.
    let c = signed_in(&g, "staff.localhost", OKTA_EMAIL).await;
    let (_, v) = identity(&g, &c, "staff.localhost").await;
    assert_eq!(v["groups"], json!(["Test SCIMv2", "displayName"]));
    let (r, url) = navigate(&c, &g.url("other.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    let (_, v) = identity(&g, &c, "other.localhost").await;
    assert_eq!(v["groups"], json!(["Test SCIMv2", "displayName"]));
    let sid = v["sid"].as_str().unwrap().to_string();

    // Entra removes the user from "Test SCIMv2" (its default shape, no path filter).
    s.map(ENTRA_GROUP, &g1);
    s.map("u1091", &uid);
    let r = s.send(&fixture("entra_group_remove_member_noflag")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);

    // Both tokens carried the group: both are refused at once.
    for host in ["staff.localhost", "other.localhost"] {
        let (st, v) = identity(&g, &c, host).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{host}: {v}");
    }
    // The next navigation re-issues silently, with the reduced groups: no form.
    let (r, url) = navigate(&c, &g.url("other.localhost", "/page")).await;
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    assert!(url.starts_with("https://other.localhost"), "{url}");
    assert!(!r.text().await.unwrap().contains("name=\"password\""));
    let (_, v) = identity(&g, &c, "other.localhost").await;
    assert_eq!(v["groups"], json!(["displayName"]));
    assert_eq!(v["sid"], sid.as_str(), "the global session stays");
    // The app whose policy needs the group lets them in no more: 403, no form.
    let (r, url) = navigate(&c, &g.url("staff.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");

    let rev = revocations(&g).await;
    let m = rev
        .iter()
        .find(|r| r["scope"] == "member")
        .expect("member revocation");
    assert_eq!(m["target"], format!("{OKTA_EMAIL}:Test SCIMv2"));
    assert_eq!(
        (m["actor"].as_str(), m["external_id"].as_str()),
        (Some("scim:okta"), Some(uid.as_str()))
    );
    assert!(
        !rev.iter()
            .any(|r| r["scope"] == "user" || r["scope"] == "session"),
        "{rev:?}"
    );

    // Okta puts the user back (a full replace of the members): new tokens carry it.
    s.map(OKTA_USER2, &uid);
    let r = s.send(&fixture("okta_group_replace_members")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let (r, url) = navigate(&c, &g.url("staff.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    let (_, v) = identity(&g, &c, "staff.localhost").await;
    assert_eq!(v["groups"], json!(["Test SCIMv2", "displayName"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scim_input_gets_scim_errors_and_changes_nothing() {
    let (g, mut s) = start().await;
    let id = create_user(&mut s, "okta_create_user", OKTA_USER).await;
    let before = s.get(&format!("/Users/{id}")).await;
    let etag = before.headers["etag"].clone();
    let patch = |ops: &str| {
        Some(format!(
            r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":{ops}}}"#
        ))
    };
    let path = format!("/Users/{id}");
    /// method, path, body, status, scimType
    type Case<'a> = (Method, &'a str, Option<String>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            Method::PATCH,
            &path,
            Some("{not json".into()),
            400,
            Some("invalidSyntax"),
        ),
        (
            Method::PATCH,
            &path,
            patch(r#"[{"op":"explode","path":"active","value":false}]"#),
            400,
            None,
        ),
        (
            Method::PATCH,
            &path,
            patch(r#"[{"op":"replace","path":"active","value":"maybe"}]"#),
            400,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            &path,
            patch(r#"[{"op":"remove","path":"active"}]"#),
            400,
            None,
        ),
        (
            Method::PUT,
            &path,
            Some(r#"{"active":false}"#.into()),
            400,
            Some("invalidValue"),
        ),
        (
            Method::POST,
            "/Users",
            Some("[]".into()),
            400,
            Some("invalidSyntax"),
        ),
        (Method::GET, "/Users", None, 400, Some("invalidFilter")),
        (Method::DELETE, "/Users/nope", None, 404, None),
        (Method::DELETE, "/Schemas", None, 405, None),
    ];
    for (m, p, body, status, scim_type) in cases {
        let q = (m == Method::GET).then_some("filter=userName%20zz%20%22x%22");
        let r = s
            .request(m.clone(), p, q, body.clone(), Some(&s.token))
            .await;
        assert_eq!(r.status.as_u16(), status, "{m} {p} {body:?}: {}", r.json);
        assert_eq!(
            r.json["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "{m} {p}"
        );
        assert_eq!(r.json["status"], status.to_string());
        if let Some(t) = scim_type {
            assert_eq!(r.json["scimType"], t, "{m} {p} {body:?}");
        }
    }
    let after = s.get(&format!("/Users/{id}")).await;
    assert_eq!(after.headers["etag"], etag, "nothing changed");
    assert_eq!(after.json, before.json);
    assert!(revocations(&g).await.is_empty());
    // Discovery endpoints answer with integers and booleans as JSON types.
    let r = s.get("/ServiceProviderConfig").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["patch"]["supported"], json!(true));
    for p in ["/Schemas", "/ResourceTypes"] {
        assert_eq!(s.get(p).await.status, StatusCode::OK, "{p}");
    }
}
