//! SCIM 2.0 requests (`signals::scim::Scim::handle`) against a `MemoryStore` seeded with
//! the fixtures' users and groups: PATCH bodies, PUT/POST resources, queries.
//!
//! Input: `METHOD path[?query]` on the first line (path after `/scim/v2`), the body after.
//! Checked: never a panic and never a 500 (the store cannot fail); every refusal is a
//! SCIM error body whose `status` is the response's; a GET answers no effects; a write
//! that succeeded (200/201 with a body and no projection) is what a GET of it returns.
#![no_main]

use fuzz_common::{NOW_US, scim_store};
use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis::signals::scim::{Scim, ScimRequest, ScimSettings};
use serde_json::Value;

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

fuzz_target!(|data: &[u8]| {
    let (line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let Some((method, target)) = line.split_once(' ') else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let scim = Scim::new(ScimSettings::default());
    let store = scim_store();
    let req = ScimRequest {
        method: method.clone(),
        path,
        query,
        body,
    };
    let out = scim.handle(&store, &req, NOW_US);

    assert!(
        (200..600).contains(&out.status) && out.status != 500,
        "status {}",
        out.status
    );
    if out.status >= 400 {
        let b = out.body.as_ref().expect("an error body");
        assert_eq!(b["schemas"][0], ERROR_SCHEMA);
        assert_eq!(b["status"], out.status.to_string());
        assert!(out.effects.is_empty(), "a refused request had effects");
    }
    if method == Method::GET {
        assert!(out.effects.is_empty());
    }
    let wrote = [Method::POST, Method::PUT, Method::PATCH].contains(&method);
    if wrote && matches!(out.status, 200 | 201) && query.is_none() {
        let Some(b) = &out.body else {
            return;
        };
        // Where the written resource lives: the Location of a create, else the path.
        let at = match &out.location {
            Some(loc) => loc
                .strip_prefix("/scim/v2")
                .expect("a relative location")
                .to_string(),
            None => path.to_string(),
        };
        let get = ScimRequest {
            method: Method::GET,
            path: &at,
            query: None,
            body: b"",
        };
        let read = scim.handle(&store, &get, NOW_US);
        assert_eq!(read.status, 200, "what was written cannot be read");
        assert_eq!(
            read.body.as_ref(),
            Some(b),
            "the write answered another resource"
        );
        let id = b.get("id").and_then(Value::as_str).expect("an id");
        assert!(at.trim_end_matches('/').ends_with(id));
    }
});
