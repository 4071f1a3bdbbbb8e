//! Replays what Okta and Entra send (tests/fixtures/scim, each with its documentation
//! source) against the handler and a MemoryStore, and checks responses, stored state,
//! effects and the sign-in queries; then the protocol's edges.

use super::*;
use crate::clock::Micros;
use serde_json::{Value, json};

const T0: Micros = 1_760_000_000_000_000;
const OKTA_USER: &str = "23a35c27-23d3-4c03-b4c5-6443c09e7173";
const OKTA_USER2: &str = "89bb1940-b905-4575-9e7f-6f887cfb368e";
const OKTA_GROUP: &str = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b";

macro_rules! fixture {
    ($name:literal) => {
        Fixture::parse(include_str!(concat!(
            "../../../tests/fixtures/scim/",
            $name,
            ".json"
        )))
    };
}

struct Fixture {
    method: Method,
    path: String,
    query: Option<String>,
    body: Option<String>,
}

impl Fixture {
    fn parse(text: &str) -> Fixture {
        let v: Value = serde_json::from_str(text).unwrap();
        assert!(
            v["source"].as_str().is_some_and(|s| s.len() > 20),
            "every fixture names its source"
        );
        Fixture {
            method: v["method"].as_str().unwrap().parse().unwrap(),
            path: v["path"].as_str().unwrap().into(),
            query: v["query"].as_str().map(Into::into),
            body: v.get("body").map(|b| b.to_string()),
        }
    }
}

struct Harness {
    scim: Scim,
    store: MemoryStore,
    now: Micros,
    /// Documentation ids → the ids this server assigned.
    ids: Vec<(String, String)>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            scim: Scim::new(ScimSettings {
                base_url: "https://auth.example.com/scim/v2".into(),
                max_results: 200,
            }),
            store: MemoryStore::new(),
            now: T0,
            ids: Vec::new(),
        }
    }

    fn map(&self, s: &str) -> String {
        self.ids
            .iter()
            .fold(s.to_string(), |acc, (doc, ours)| acc.replace(doc, ours))
    }

    fn send(&mut self, f: &Fixture) -> ScimOutcome {
        let path = self.map(&f.path);
        let body = f.body.as_deref().map(|b| self.map(b)).unwrap_or_default();
        self.request(f.method.clone(), &path, f.query.as_deref(), body.as_bytes())
    }

    fn request(
        &mut self,
        method: Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> ScimOutcome {
        self.now += 1_000_000;
        let req = ScimRequest {
            method,
            path,
            query,
            body,
        };
        self.scim.handle(&self.store, &req, self.now)
    }

    fn patch(&mut self, path: &str, ops: Value) -> ScimOutcome {
        let body = json!({"schemas": [schema::PATCH_SCHEMA], "Operations": ops}).to_string();
        self.request(Method::PATCH, path, None, body.as_bytes())
    }

    fn seed_user(&self, id: &str, user_name: &str) {
        let u = UserRecord {
            id: id.into(),
            user_name: user_name.into(),
            external_id: None,
            active: true,
            display_name: None,
            name: Name::default(),
            emails: vec![],
            created: T0,
            version: T0,
            deleted: false,
        };
        self.store.put_user(u, None).unwrap();
    }

    fn seed_group(&self, id: &str, name: &str, members: &[&str]) {
        let g = GroupRecord {
            id: id.into(),
            display_name: name.into(),
            external_id: None,
            members: members.iter().map(|m| m.to_string()).collect(),
            created: T0,
            version: T0,
            deleted: false,
        };
        self.store.put_group(g, None).unwrap();
    }
}

fn body(o: &ScimOutcome) -> &Value {
    o.body.as_ref().unwrap()
}

fn kinds(o: &ScimOutcome) -> Vec<(&'static str, String)> {
    o.effects
        .iter()
        .map(|e| (e.kind(), e.email().to_string()))
        .collect()
}

#[test]
fn okta_user_lifecycle() {
    let mut h = Harness::new();
    let r = h.send(&fixture!("okta_user_exists"));
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["totalResults"], json!(0), "integers, not strings");
    assert_eq!(body(&r)["startIndex"], json!(1));
    assert_eq!(body(&r)["Resources"], json!([]));

    let r = h.send(&fixture!("okta_create_user"));
    assert_eq!(r.status, 201);
    let id = body(&r)["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.location.as_deref(),
        Some(format!("https://auth.example.com/scim/v2/Users/{id}").as_str())
    );
    assert_eq!(body(&r)["meta"]["resourceType"], "User");
    assert!(
        !body(&r).to_string().contains("1mz050nq"),
        "the password is never kept or echoed"
    );
    assert!(r.effects.is_empty());
    h.ids.push((OKTA_USER.into(), id.clone()));

    let r = h.send(&fixture!("okta_user_exists"));
    assert_eq!(body(&r)["totalResults"], json!(1));
    assert_eq!(
        body(&r)["Resources"][0]["externalId"],
        "00ujl29u0le5T6Aj10h7"
    );

    let r = h.send(&fixture!("okta_put_user"));
    assert_eq!(
        (r.status, body(&r)["name"]["middleName"].as_str()),
        (200, Some("Excited"))
    );
    assert!(r.effects.is_empty());

    let r = h.send(&fixture!("okta_deactivate_user"));
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["active"], json!(false));
    assert_eq!(
        kinds(&r),
        vec![("deactivated", "test.user@okta.local".to_string())]
    );
    assert_eq!(
        r.effects[0].user_id(),
        id,
        "the audit line gets the SCIM id"
    );
    assert!(is_inactive(&h.store, "Test.User@okta.local"));

    // Inactive users are still returned, by id and by filter.
    let r = h.request(Method::GET, &format!("/Users/{id}"), None, b"");
    assert_eq!((r.status, &body(&r)["active"]), (200, &json!(false)));
    let r = h.send(&fixture!("okta_user_exists"));
    assert_eq!(body(&r)["totalResults"], json!(1));

    // A PUT with active:true reactivates; with active:false (AIW apps) deactivates.
    let r = h.send(&fixture!("okta_put_user"));
    assert_eq!(
        kinds(&r),
        vec![("reactivated", "test.user@okta.local".to_string())]
    );
    assert!(!is_inactive(&h.store, "test.user@okta.local"));
    let r = h.send(&fixture!("okta_put_deactivate"));
    assert_eq!(
        kinds(&r),
        vec![("deactivated", "test.user@okta.local".to_string())]
    );
    let r = h.send(&fixture!("okta_put_deactivate"));
    assert!(
        r.effects.is_empty(),
        "already inactive: nothing new to revoke"
    );

    let r = h.send(&fixture!("okta_list_users"));
    assert_eq!(
        (
            body(&r)["totalResults"].clone(),
            body(&r)["itemsPerPage"].clone()
        ),
        (json!(1), json!(1))
    );
}

#[test]
fn okta_group_push_and_membership() {
    let mut h = Harness::new();
    h.seed_user(OKTA_USER, "test.user@okta.local");
    h.seed_user(OKTA_USER2, "second.user@okta.local");
    let r = h.send(&fixture!("okta_create_group"));
    assert_eq!(r.status, 201);
    let gid = body(&r)["id"].as_str().unwrap().to_string();
    assert_eq!(body(&r)["members"], json!([]));
    h.ids.push((OKTA_GROUP.into(), gid.clone()));

    let r = h.send(&fixture!("okta_group_replace_members"));
    assert_eq!(r.status, 204);
    let mut k = kinds(&r);
    k.sort();
    assert_eq!(
        k,
        vec![
            ("joined_group", "second.user@okta.local".into()),
            ("joined_group", "test.user@okta.local".into())
        ]
    );
    assert_eq!(
        groups_of(&h.store, "second.user@okta.local"),
        Some(vec!["Test SCIMv2".to_string()])
    );

    // Remove the second user by filter, add the first again (already a member).
    let r = h.send(&fixture!("okta_group_membership"));
    assert_eq!(r.status, 204);
    assert_eq!(
        kinds(&r),
        vec![("left_group", "second.user@okta.local".to_string())]
    );
    let Effect::LeftGroup {
        group,
        group_id,
        user_id,
        ..
    } = &r.effects[0]
    else {
        panic!()
    };
    assert_eq!(
        (group.as_str(), group_id, user_id.as_str()),
        ("Test SCIMv2", &gid, OKTA_USER2)
    );
    assert_eq!(groups_of(&h.store, "second.user@okta.local"), Some(vec![]));
    assert_eq!(
        groups_of(&h.store, "test.user@okta.local"),
        Some(vec!["Test SCIMv2".to_string()])
    );

    // Okta repeats the name (and the id) with every membership update: no effect.
    let r = h.send(&fixture!("okta_rename_group"));
    assert_eq!((r.status, r.effects.len()), (204, 0));

    let r = h.send(&fixture!("okta_list_groups"));
    assert_eq!(body(&r)["Resources"][0]["members"][0]["value"], OKTA_USER);

    let r = h.send(&fixture!("okta_delete_group"));
    assert_eq!(r.status, 204);
    assert_eq!(
        kinds(&r),
        vec![("left_group", "test.user@okta.local".to_string())]
    );
    let r = h.request(Method::GET, &format!("/Groups/{gid}"), None, b"");
    assert_eq!(r.status, 404);
    assert_eq!(groups_of(&h.store, "test.user@okta.local"), Some(vec![]));
}

#[test]
fn entra_user_operations() {
    let mut h = Harness::new();
    let r = h.send(&fixture!("entra_create_user"));
    assert_eq!(r.status, 201);
    assert_eq!(body(&r)["emails"][0]["type"], "work");
    let r = h.send(&fixture!("entra_get_user_by_query"));
    assert_eq!(
        (r.status, body(&r)["totalResults"].clone()),
        (200, json!(1))
    );
    let r = h.send(&fixture!("entra_get_user_zero_results"));
    assert_eq!(body(&r)["totalResults"], json!(0));

    h.seed_user("6764549bef60420686bc", "Test_User_fbb9dda4@testuser.com");
    let r = h.send(&fixture!("entra_update_user_multi"));
    assert_eq!(r.status, 200);
    assert_eq!(
        body(&r)["emails"],
        json!([{"value": "updatedEmail@microsoft.com", "type": "work", "primary": false}])
    );
    assert_eq!(body(&r)["name"]["familyName"], "updatedFamilyName");

    h.seed_user("5171a35d82074e068ce2", "someone@testuser.com");
    let r = h.send(&fixture!("entra_update_user_single"));
    assert_eq!(
        body(&r)["userName"],
        "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
    );
    let email = "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com".to_string();

    let r = h.send(&fixture!("entra_disable_user"));
    assert_eq!(kinds(&r), vec![("deactivated", email.clone())]);
    let r = h.patch(
        "/Users/5171a35d82074e068ce2",
        json!([{"op": "Replace", "path": "active", "value": "True"}]),
    );
    assert_eq!(kinds(&r), vec![("reactivated", email.clone())]);
    let r = h.send(&fixture!("entra_disable_user_string"));
    assert_eq!(
        (r.status, kinds(&r)),
        (200, vec![("deactivated", email.clone())])
    );
    assert!(is_inactive(&h.store, &email));

    let r = h.send(&fixture!("entra_replace_multiple"));
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["displayName"], "Pvlo");
    assert_eq!(body(&r)["externalId"], "Eqpj");
    assert_eq!(
        body(&r)["emails"][0]["value"],
        "TestBcwqnm@test.microsoft.com"
    );
    let r = h.send(&fixture!("entra_replace_multiple_flag"));
    assert_eq!(r.status, 200);
    assert_eq!(
        body(&r)["name"],
        json!({"givenName": "Kkom", "familyName": "Unua"})
    );
    assert_eq!(body(&r)["displayName"], "Bjfe");
    assert_eq!(
        body(&r)["emails"][0]["value"],
        "TestMhvaes@test.microsoft.com"
    );
    assert_eq!(
        body(&r)["active"],
        json!(false),
        "untouched by an attribute update"
    );
    let before = h.store.user("5171a35d82074e068ce2").unwrap();
    let r = h.send(&fixture!("entra_add_single_value"));
    assert_eq!((r.status, r.effects.len()), (200, 0));
    assert_eq!(
        h.store.user("5171a35d82074e068ce2").unwrap().user_name,
        before.user_name
    );

    let r = h.send(&fixture!("entra_delete_user"));
    assert_eq!(
        (r.status, kinds(&r)),
        (204, vec![("deleted", email.clone())])
    );
    assert!(r.body.is_none());
    let r = h.request(Method::GET, "/Users/5171a35d82074e068ce2", None, b"");
    assert_eq!((r.status, body(&r)["status"].clone()), (404, json!("404")));
    assert!(
        is_inactive(&h.store, &email),
        "a deleted account stays refused"
    );
    assert_eq!(groups_of(&h.store, &email), None);
    let r = h.send(&fixture!("entra_delete_user"));
    assert_eq!(r.status, 404);
}

#[test]
fn entra_group_operations() {
    let mut h = Harness::new();
    let r = h.send(&fixture!("entra_create_group"));
    assert_eq!((r.status, body(&r)["members"].clone()), (201, json!([])));
    assert_eq!(
        body(&r)["externalId"],
        "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"
    );
    let r = h.send(&fixture!("entra_get_group_by_name"));
    assert_eq!(body(&r)["totalResults"], json!(1));
    assert!(
        body(&r)["Resources"][0].get("members").is_none(),
        "excludedAttributes=members"
    );
    assert!(body(&r)["Resources"][0].get("id").is_some());

    h.seed_group("40734ae655284ad3abcc", "g1", &[]);
    let r = h.send(&fixture!("entra_get_group"));
    assert_eq!(r.status, 200);
    assert!(body(&r).get("members").is_none());

    h.seed_user("f648f8d5ea4e4cd38e9c", "f6@contoso.com");
    h.seed_user("7f4bc1a3-285e-48ae-8202-5accb43efb0e", "7f@contoso.com");
    h.seed_group(
        "a99962b9f99d4c4fac67",
        "Admins",
        &["7f4bc1a3-285e-48ae-8202-5accb43efb0e"],
    );
    let r = h.send(&fixture!("entra_group_add_members"));
    assert_eq!(
        (r.status, kinds(&r)),
        (204, vec![("joined_group", "f6@contoso.com".into())])
    );
    let r = h.send(&fixture!("entra_group_remove_members"));
    assert_eq!(kinds(&r), vec![("left_group", "f6@contoso.com".into())]);
    let r = h.send(&fixture!("entra_group_remove_member_noflag"));
    assert_eq!((r.status, r.effects.len()), (204, 0), "u1091 was no member");
    let r = h.send(&fixture!("entra_group_remove_member_flag"));
    assert_eq!(kinds(&r), vec![("left_group", "7f@contoso.com".into())]);
    assert!(
        h.store
            .group("a99962b9f99d4c4fac67")
            .unwrap()
            .members
            .is_empty()
    );

    // A rename is leaving the old name and joining the new one.
    h.seed_group("fa2ce26709934589afc5", "Old", &["f648f8d5ea4e4cd38e9c"]);
    let r = h.send(&fixture!("entra_group_rename"));
    let names: Vec<String> = r
        .effects
        .iter()
        .map(|e| match e {
            Effect::LeftGroup { group, .. } => format!("-{group}"),
            Effect::JoinedGroup { group, .. } => format!("+{group}"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "-Old",
            "+1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
        ]
    );

    h.seed_group("cdb1ce18f65944079d37", "Gone", &[]);
    let r = h.send(&fixture!("entra_delete_group"));
    assert_eq!(r.status, 204);
}

#[test]
fn leaving_one_of_two_groups_with_the_same_name_revokes_nothing() {
    let mut h = Harness::new();
    h.seed_user("u", "u@example.com");
    h.seed_group("g1", "staff", &["u"]);
    h.seed_group("g2", "staff", &["u"]);
    let r = h.patch(
        "/Groups/g1",
        json!([{"op": "remove", "path": "members[value eq \"u\"]"}]),
    );
    assert!(r.effects.is_empty());
    let r = h.patch("/Groups/g2", json!([{"op": "remove", "path": "members"}]));
    assert_eq!(kinds(&r), vec![("left_group", "u@example.com".into())]);
}

#[test]
fn duplicate_user_names_are_409_uniqueness() {
    let mut h = Harness::new();
    let r = h.send(&fixture!("okta_create_user"));
    assert_eq!(r.status, 201);
    let dup = json!({"userName": "TEST.USER@OKTA.LOCAL"}).to_string();
    let r = h.request(Method::POST, "/Users", None, dup.as_bytes());
    assert_eq!(r.status, 409);
    assert_eq!(body(&r)["scimType"], "uniqueness");
    assert_eq!(body(&r)["status"], "409");
    assert_eq!(
        body(&r)["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    // Renaming another user onto a taken name is refused the same way.
    let other = json!({"userName": "other@okta.local"}).to_string();
    let r = h.request(Method::POST, "/Users", None, other.as_bytes());
    let id = body(&r)["id"].as_str().unwrap().to_string();
    let r = h.patch(
        &format!("/Users/{id}"),
        json!([{"op": "replace", "path": "userName", "value": "Test.User@okta.local"}]),
    );
    assert_eq!(r.status, 409);
    // A deleted user's name is free again, and the new account may sign in.
    let del = h.request(Method::DELETE, &format!("/Users/{id}"), None, b"");
    assert_eq!(del.status, 204);
    assert!(is_inactive(&h.store, "other@okta.local"));
    let r = h.request(Method::POST, "/Users", None, other.as_bytes());
    assert_eq!(r.status, 201);
    assert!(!is_inactive(&h.store, "other@okta.local"));
}

#[test]
fn protocol_errors_are_scim_errors() {
    let mut h = Harness::new();
    h.seed_user("u1", "a@example.com");
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        &'a [u8],
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/Users",
            Some("filter=nickName%20eq%20%22x%22"),
            b"",
            400,
            Some("invalidFilter"),
        ),
        (
            Method::GET,
            "/Users",
            Some("filter=userName%20eq"),
            b"",
            400,
            Some("invalidFilter"),
        ),
        (
            Method::GET,
            "/Users",
            Some("count=ten"),
            b"",
            400,
            Some("invalidValue"),
        ),
        (
            Method::POST,
            "/Users",
            None,
            b"{not json",
            400,
            Some("invalidSyntax"),
        ),
        (
            Method::POST,
            "/Users",
            None,
            b"",
            400,
            Some("invalidSyntax"),
        ),
        (
            Method::POST,
            "/Users",
            None,
            b"[]",
            400,
            Some("invalidSyntax"),
        ),
        (
            Method::POST,
            "/Users",
            None,
            br#"{"emails":[]}"#,
            400,
            Some("invalidValue"),
        ),
        (
            Method::POST,
            "/Users",
            None,
            br#"{"userName":"x","active":"nope"}"#,
            400,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            "/Users/u1",
            None,
            br#"{"Operations":[{"op":"remove","path":"active"}]}"#,
            400,
            Some("mutability"),
        ),
        (
            Method::PATCH,
            "/Users/u1",
            None,
            br#"{"Operations":[{"op":"remove","path":"userName"}]}"#,
            400,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            "/Users/u1",
            None,
            br#"{"Operations":[{"op":"jump"}]}"#,
            400,
            Some("invalidSyntax"),
        ),
        (
            Method::PATCH,
            "/Users/u1",
            None,
            br#"{"Operations":[{"op":"add","path":"emails[","value":1}]}"#,
            400,
            Some("invalidPath"),
        ),
        (Method::GET, "/Users/nope", None, b"", 404, None),
        (
            Method::PATCH,
            "/Users/nope",
            None,
            br#"{"Operations":[{"op":"add","path":"displayName","value":"x"}]}"#,
            404,
            None,
        ),
        (Method::PUT, "/Users", None, b"{}", 405, None),
        (
            Method::DELETE,
            "/ServiceProviderConfig",
            None,
            b"",
            405,
            None,
        ),
        (Method::GET, "/Bulk", None, b"", 404, None),
        (Method::GET, "/Users/u1/extra", None, b"", 404, None),
        (Method::GET, "/Schemas/urn:nope", None, b"", 404, None),
    ];
    for (m, path, q, b, status, scim_type) in cases {
        let r = h.request(m.clone(), path, q, b);
        assert_eq!(r.status, status, "{m} {path} {q:?}");
        assert_eq!(body(&r)["status"], json!(status.to_string()));
        assert_eq!(body(&r)["scimType"].as_str(), scim_type, "{m} {path} {q:?}");
        assert!(r.effects.is_empty());
    }
    assert_eq!(
        h.store.user("u1").unwrap().version,
        T0,
        "refused requests change nothing"
    );
}

#[test]
fn pagination_is_stable_and_uses_integers() {
    let mut h = Harness::new();
    for i in 0..5 {
        let b = json!({"userName": format!("u{i}@example.com")}).to_string();
        assert_eq!(
            h.request(Method::POST, "/Users", None, b.as_bytes()).status,
            201
        );
    }
    let page = |h: &mut Harness, q: &str| {
        let r = h.request(Method::GET, "/Users", Some(q), b"");
        let v = body(&r).clone();
        let names: Vec<String> = v["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userName"].as_str().unwrap().into())
            .collect();
        (
            v["totalResults"].clone(),
            v["startIndex"].clone(),
            v["itemsPerPage"].clone(),
            names,
        )
    };
    assert_eq!(
        page(&mut h, "startIndex=2&count=2"),
        (
            json!(5),
            json!(2),
            json!(2),
            vec!["u1@example.com".into(), "u2@example.com".into()]
        )
    );
    assert_eq!(
        page(&mut h, "startIndex=5&count=100").3,
        vec!["u4@example.com".to_string()]
    );
    assert_eq!(page(&mut h, "startIndex=9").2, json!(0));
    assert_eq!(
        page(&mut h, "count=0"),
        (json!(5), json!(1), json!(0), vec![])
    );
    assert_eq!(page(&mut h, "count=-3&startIndex=-1").1, json!(1));
    let r = page(
        &mut h,
        "filter=userName%20sw%20%22u3%22%20or%20userName%20eq%20%22U0@EXAMPLE.COM%22",
    );
    assert_eq!(
        r.3,
        vec!["u0@example.com".to_string(), "u3@example.com".to_string()]
    );
    let r = h.request(
        Method::GET,
        "/Users",
        Some("attributes=userName&count=1"),
        b"",
    );
    let keys: Vec<&String> = body(&r)["Resources"][0]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, vec!["id", "schemas", "userName"]);
}

#[test]
fn discovery_endpoints() {
    let mut h = Harness::new();
    let r = h.request(Method::GET, "/ServiceProviderConfig", None, b"");
    assert_eq!(body(&r)["patch"]["supported"], json!(true));
    assert_eq!(body(&r)["filter"]["maxResults"], json!(200));
    assert_eq!(body(&r)["bulk"]["supported"], json!(false));
    let r = h.request(Method::GET, "/Schemas", None, b"");
    assert_eq!(body(&r)["totalResults"], json!(2));
    let user_attrs: Vec<&str> = body(&r)["Resources"][0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        user_attrs,
        vec![
            "externalId",
            "userName",
            "displayName",
            "active",
            "name",
            "emails"
        ]
    );
    let r = h.request(
        Method::GET,
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group",
        None,
        b"",
    );
    assert_eq!(body(&r)["name"], "Group");
    let r = h.request(Method::GET, "/ResourceTypes/User", None, b"");
    assert_eq!(
        (body(&r)["endpoint"].clone(), body(&r)["schema"].clone()),
        (json!("/Users"), json!(schema::USER_SCHEMA))
    );
    let r = h.request(Method::GET, "/ResourceTypes", None, b"");
    assert_eq!(body(&r)["totalResults"], json!(2));
}

#[test]
fn puts_keep_what_they_do_not_mention() {
    let mut h = Harness::new();
    h.seed_user("u", "u@example.com");
    h.seed_group("g", "staff", &["u"]);
    h.patch(
        "/Users/u",
        json!([{"op": "replace", "value": {"active": false}}]),
    );
    let r = h.request(
        Method::PUT,
        "/Users/u",
        None,
        br#"{"userName":"u@example.com","displayName":"U"}"#,
    );
    assert_eq!(
        (r.status, body(&r)["active"].clone(), r.effects.len()),
        (200, json!(false), 0)
    );
    let r = h.request(
        Method::PUT,
        "/Groups/g",
        None,
        br#"{"displayName":"staff"}"#,
    );
    assert_eq!(
        (r.status, body(&r)["members"][0]["value"].clone()),
        (200, json!("u"))
    );
    let r = h.request(
        Method::PUT,
        "/Groups/g",
        None,
        br#"{"displayName":"staff","members":[]}"#,
    );
    assert_eq!(
        kinds(&r),
        vec![("left_group", "u@example.com".into())],
        "members: [] clears them"
    );
    assert!(h.store.group("g").unwrap().members.is_empty());
}

#[test]
fn sign_in_queries() {
    let mut h = Harness::new();
    assert!(!is_inactive(&h.store, "nobody@example.com"));
    assert_eq!(groups_of(&h.store, "nobody@example.com"), None);
    // Entra: userName is the UPN, the work email another address.
    let b = json!({"userName": "jdoe@corp.onmicrosoft.com", "emails": [{"type": "work", "value": "John.Doe@example.com"}]});
    let r = h.request(Method::POST, "/Users", None, b.to_string().as_bytes());
    let id = body(&r)["id"].as_str().unwrap().to_string();
    assert_eq!(groups_of(&h.store, "john.doe@example.com"), Some(vec![]));
    let r = h.patch(
        &format!("/Users/{id}"),
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    );
    let Effect::Deactivated { email, aliases, .. } = &r.effects[0] else {
        panic!()
    };
    assert_eq!(
        (email.as_str(), aliases.clone()),
        (
            "jdoe@corp.onmicrosoft.com",
            vec!["john.doe@example.com".to_string()]
        )
    );
    assert!(is_inactive(&h.store, "JOHN.DOE@example.com"));
    assert!(is_inactive(&h.store, "jdoe@corp.onmicrosoft.com"));
}

/// A store where another node's write lands between the handler's read and its put.
struct Racing {
    inner: MemoryStore,
    raced: std::sync::atomic::AtomicBool,
}

impl ScimStore for Racing {
    fn user(&self, id: &str) -> Option<UserRecord> {
        self.inner.user(id)
    }
    fn users(&self) -> Vec<UserRecord> {
        self.inner.users()
    }
    fn put_user(&self, user: UserRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        self.inner.put_user(user, expected)
    }
    fn group(&self, id: &str) -> Option<GroupRecord> {
        self.inner.group(id)
    }
    fn groups(&self) -> Vec<GroupRecord> {
        self.inner.groups()
    }
    fn put_group(&self, group: GroupRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let mut other = self.inner.group(&group.id).unwrap();
            other.members.push("from-elsewhere".into());
            other.version += 1;
            self.inner.put_group(other, expected).unwrap();
        }
        self.inner.put_group(group, expected)
    }
}

#[test]
fn a_concurrent_write_is_retried_not_lost() {
    let store = Racing {
        inner: MemoryStore::new(),
        raced: false.into(),
    };
    let h = Harness::new();
    h.seed_group("g", "staff", &[]);
    store
        .inner
        .put_group(h.store.group("g").unwrap(), None)
        .unwrap();
    let body = br#"{"Operations":[{"op":"add","path":"members","value":[{"value":"mine"}]}]}"#;
    let req = ScimRequest {
        method: Method::PATCH,
        path: "/Groups/g",
        query: None,
        body,
    };
    let r = h.scim.handle(&store, &req, T0 + 5);
    assert_eq!(r.status, 204);
    assert_eq!(
        store.inner.group("g").unwrap().members,
        vec!["from-elsewhere", "mine"]
    );
}

/// A store with an email index, counting full scans.
struct Indexed {
    inner: MemoryStore,
    scans: std::sync::atomic::AtomicUsize,
}

impl ScimStore for Indexed {
    fn user(&self, id: &str) -> Option<UserRecord> {
        self.inner.user(id)
    }
    fn users(&self) -> Vec<UserRecord> {
        self.scans.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.users()
    }
    fn put_user(&self, user: UserRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        self.inner.put_user(user, expected)
    }
    fn group(&self, id: &str) -> Option<GroupRecord> {
        self.inner.group(id)
    }
    fn groups(&self) -> Vec<GroupRecord> {
        self.inner.groups()
    }
    fn put_group(&self, group: GroupRecord, expected: Option<Micros>) -> Result<(), StoreError> {
        self.inner.put_group(group, expected)
    }
    fn users_by_email(&self, email: &str) -> Vec<UserRecord> {
        self.inner.users_by_email(email)
    }
}

#[test]
fn user_name_lookups_and_creates_use_the_index_not_a_scan() {
    let h = Harness::new();
    let store = Indexed {
        inner: MemoryStore::new(),
        scans: 0.into(),
    };
    let send = |f: &Fixture, now: Micros| {
        let req = ScimRequest {
            method: f.method.clone(),
            path: &f.path,
            query: f.query.as_deref(),
            body: f.body.as_deref().unwrap_or("").as_bytes(),
        };
        h.scim.handle(&store, &req, now)
    };
    assert_eq!(send(&fixture!("okta_create_user"), T0).status, 201);
    let r = send(&fixture!("okta_user_exists"), T0 + 1);
    assert_eq!(body(&r)["totalResults"], json!(1));
    assert_eq!(send(&fixture!("okta_create_user"), T0 + 2).status, 409);
    assert_eq!(store.scans.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Other filters still scan, and still answer correctly.
    let r = send(&fixture!("entra_get_user_zero_results"), T0 + 3);
    assert_eq!(body(&r)["totalResults"], json!(0));
    let req = ScimRequest {
        method: Method::GET,
        path: "/Users",
        query: Some("filter=externalId%20eq%20%2200ujl29u0le5T6Aj10h7%22"),
        body: b"",
    };
    assert_eq!(
        body(&h.scim.handle(&store, &req, T0 + 4))["totalResults"],
        json!(1)
    );
    assert_eq!(store.scans.load(std::sync::atomic::Ordering::SeqCst), 1);
}
