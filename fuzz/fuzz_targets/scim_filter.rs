//! SCIM filters and PATCH paths (`signals::scim` filter parser and evaluator), through
//! the request handler and a `MemoryStore` seeded with the fixtures' users and groups.
//!
//! Input: a filter expression (also tried as a PATCH path).
//! Checked: never a panic or a 500, only 200 or a 400; filters are two-valued on every
//! user and group: `F` and `not (F)` split the resources between them, `F or not (F)`
//! matches all and `F and not (F)` none; a PATCH with the input as its path answers
//! 200/204 or a 400.
#![no_main]

use fuzz_common::{NOW_US, SCIM_USERS, scim_store};
use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis::signals::scim::{MemoryStore, Scim, ScimRequest, ScimSettings};
use serde_json::json;

/// `totalResults` of a filtered list, or None when the filter is refused.
fn count(scim: &Scim, store: &MemoryStore, path: &str, filter: &str) -> Option<u64> {
    let query: String = form_urlencoded_pair(filter);
    let req = ScimRequest {
        method: Method::GET,
        path,
        query: Some(&query),
        body: b"",
    };
    let out = scim.handle(store, &req, NOW_US);
    match out.status {
        200 => Some(
            out.body.expect("a list")["totalResults"]
                .as_u64()
                .expect("totalResults"),
        ),
        400 => None,
        s => panic!("status {s} for filter {filter:?}"),
    }
}

fn form_urlencoded_pair(filter: &str) -> String {
    let mut q = String::from("filter=");
    for b in filter.bytes() {
        if b.is_ascii_alphanumeric() {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = std::str::from_utf8(data) else {
        return;
    };
    let scim = Scim::new(ScimSettings::default());
    let store = scim_store();
    for (path, total) in [("/Users", 5u64), ("/Groups", 5)] {
        let Some(yes) = count(&scim, &store, path, f) else {
            continue;
        };
        assert!(yes <= total);
        let not = format!("not ({f})");
        if let Some(no) = count(&scim, &store, path, &not) {
            assert_eq!(yes + no, total, "{f:?} and its negation on {path}");
        }
        if let Some(all) = count(&scim, &store, path, &format!("({f}) or {not}")) {
            assert_eq!(all, total);
        }
        if let Some(none) = count(&scim, &store, path, &format!("({f}) and {not}")) {
            assert_eq!(none, 0);
        }
    }

    for (op, value) in [
        ("remove", json!(null)),
        ("replace", json!("x")),
        ("add", json!([{"value": SCIM_USERS[1]}])),
    ] {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": op, "path": f, "value": value}],
        })
        .to_string();
        for path in [
            format!("/Users/{}", SCIM_USERS[0]),
            "/Groups/a99962b9f99d4c4fac67".to_string(),
        ] {
            let req = ScimRequest {
                method: Method::PATCH,
                path: &path,
                query: None,
                body: body.as_bytes(),
            };
            let out = scim.handle(&store, &req, NOW_US);
            assert!(
                matches!(out.status, 200 | 204 | 400 | 409),
                "PATCH {op} {f:?}: {}",
                out.status
            );
        }
    }
});
