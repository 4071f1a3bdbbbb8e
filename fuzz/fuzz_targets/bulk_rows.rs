//! Bulk revocation bodies (`control::bulk::rows`, through `portcullis::fuzzing`): CSV
//! with a `user` column, or JSON.
//!
//! Input: a control byte (the Content-Type sent), then the body.
//! Checked: never a panic; a JSON body's rows are one per element of its list, each the
//! element's string or `user` member (the list is read here independently); a CSV
//! body's rows are the non-blank records', at most one per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::bulk_rows;
use serde_json::Value;

const TYPES: [&str; 4] = ["text/csv", "application/json", "text/plain", ""];

fn json_model(body: &[u8]) -> Option<(Vec<String>, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let (list, reason) = match &v {
        Value::Array(a) => (a, None),
        Value::Object(o) => (
            o.get("users")?.as_array()?,
            o.get("reason").and_then(Value::as_str),
        ),
        _ => return None,
    };
    let rows = list
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        })
        .collect();
    Some((rows, reason.map(str::to_string)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let ctype = TYPES[usize::from(ctl) % TYPES.len()];
    let got = bulk_rows(ctype, body);
    let Ok(text) = std::str::from_utf8(body) else {
        assert!(got.is_err(), "a body that is not UTF-8 was read");
        return;
    };
    let is_json = ctype.contains("json") || text.trim_start().starts_with(['[', '{']);
    if is_json {
        match (got, json_model(body)) {
            (Ok(rows), Some(want)) => assert_eq!(rows, want),
            (Err(_), None) => {}
            (got, want) => panic!("rows {got:?}, model {want:?}"),
        }
    } else if let Ok((rows, reason)) = got {
        assert!(reason.is_none());
        let lines = text.split(['\n', '\r']).count();
        assert!(
            rows.len() < lines.max(1),
            "{} rows from {lines} lines",
            rows.len()
        );
    }
});
