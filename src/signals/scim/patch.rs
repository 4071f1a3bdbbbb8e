//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource's canonical JSON, with the
//! variations Okta and Entra really send:
//! - `op` in any case (`replace`, `Replace`);
//! - no `path` and an object `value` whose keys are attribute paths
//!   (`{"active": false}` from Okta, `{"name.givenName": ..}` from Entra's compliant mode);
//! - `remove` of `members` with a `value` list (Entra's default) as well as
//!   `members[value eq "id"]` (Okta, Entra's compliant mode);
//! - `replace` of `emails[type eq "work"].value` when the user has no work email yet
//!   creates it (the RFC would answer `noTarget`, Entra expects the update to succeed).
//!
//! The result is turned back into a record by the same parser as POST and PUT, so type
//! checks (`"active": "False"` accepted, `"active": 3` refused) live in one place.

use super::error::ScimError;
use super::filter::{self, Filter, equalities, matches_element};
use super::schema::{Attr, Kind, Shape};
use serde_json::{Map, Value};

const MAX_OPERATIONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

fn get_ci<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Parses a PatchOp request body.
pub fn parse_request(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let Value::Object(o) = body else {
        return Err(ScimError::invalid_syntax(
            "the body must be a PatchOp object",
        ));
    };
    let Some(Value::Array(ops)) = get_ci(o, "Operations") else {
        return Err(ScimError::invalid_syntax("Operations must be an array"));
    };
    if ops.is_empty() || ops.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_syntax(
            "Operations must hold 1 to 10000 operations",
        ));
    }
    ops.iter().map(parse_op).collect()
}

fn parse_op(v: &Value) -> Result<PatchOp, ScimError> {
    let Value::Object(o) = v else {
        return Err(ScimError::invalid_syntax(
            "each operation must be an object",
        ));
    };
    let op = match get_ci(o, "op")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("add") => OpKind::Add,
        Some("replace") => OpKind::Replace,
        Some("remove") => OpKind::Remove,
        _ => {
            return Err(ScimError::invalid_syntax(
                "op must be add, replace or remove",
            ));
        }
    };
    let path = match get_ci(o, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ScimError::invalid_path("path must be a string")),
    };
    Ok(PatchOp {
        op,
        path,
        value: get_ci(o, "value").cloned(),
    })
}

/// Applies one operation to `doc` (canonical attribute names, see `model::canonical`).
pub fn apply(kind: Kind, doc: &mut Map<String, Value>, op: &PatchOp) -> Result<(), ScimError> {
    match &op.path {
        Some(p) => apply_path(kind, doc, op.op, p, op.value.as_ref()),
        None if op.op == OpKind::Remove => Err(ScimError::no_target("remove needs a path")),
        None => {
            let Some(Value::Object(o)) = &op.value else {
                return Err(ScimError::invalid_value(
                    "an operation without path needs an object value",
                ));
            };
            for (k, v) in o {
                apply_path(kind, doc, op.op, k, Some(v))?;
            }
            Ok(())
        }
    }
}

fn apply_path(
    kind: Kind,
    doc: &mut Map<String, Value>,
    op: OpKind,
    path: &str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let p = filter::parse_path(kind, path)?;
    let Some(attr) = p.attr else {
        tracing::debug!(path, "SCIM PATCH of an attribute not modelled: ignored");
        return Ok(());
    };
    if attr.is_read_only() {
        // Okta repeats the group's id in a path-less replace; read-only: ignored.
        return Ok(());
    }
    let needs_value =
        || value.ok_or_else(|| ScimError::invalid_value(format!("{op:?} of {path} needs a value")));
    match (attr.shape, &p.filter, p.sub) {
        (Shape::Simple, None, None) => {
            match op {
                OpKind::Remove => doc.remove(attr.name),
                _ => doc.insert(attr.name.into(), needs_value()?.clone()),
            };
            Ok(())
        }
        (Shape::Complex(_), None, None) => complex_whole(doc, attr, op, value),
        (Shape::Complex(_), None, Some(sub)) => {
            let mut obj = take_object(doc, attr.name);
            match op {
                OpKind::Remove => obj.remove(sub),
                _ => obj.insert(sub.into(), needs_value()?.clone()),
            };
            doc.insert(attr.name.into(), Value::Object(obj));
            Ok(())
        }
        (Shape::MultiComplex(_), None, None) => multi_whole(doc, attr, op, value),
        (Shape::MultiComplex(_), None, Some(sub)) => {
            let mut arr = take_array(doc, attr.name);
            for el in arr.iter_mut().filter_map(Value::as_object_mut) {
                match op {
                    OpKind::Remove => el.remove(sub),
                    _ => el.insert(sub.into(), needs_value()?.clone()),
                };
            }
            doc.insert(attr.name.into(), Value::Array(arr));
            Ok(())
        }
        (Shape::MultiComplex(_), Some(f), sub) => multi_filtered(doc, attr, f, sub, op, value),
        _ => Err(ScimError::invalid_path(format!("bad path {path:?}"))),
    }
}

/// Takes the object at `name` out of `doc` (an empty one when absent or not an object);
/// callers put it back after changing it.
fn take_object(doc: &mut Map<String, Value>, name: &str) -> Map<String, Value> {
    match doc.remove(name) {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    }
}

fn take_array(doc: &mut Map<String, Value>, name: &str) -> Vec<Value> {
    match doc.remove(name) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

fn canonical_element(attr: &Attr, v: &Value) -> Result<Value, ScimError> {
    match v {
        Value::Object(o) => Ok(Value::Object(
            o.iter()
                .filter_map(|(k, v)| attr.sub(k).map(|s| (s.to_string(), v.clone())))
                .collect(),
        )),
        _ => Err(ScimError::invalid_value(format!(
            "{} values must be objects",
            attr.name
        ))),
    }
}

fn complex_whole(
    doc: &mut Map<String, Value>,
    attr: &Attr,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match (op, value) {
        (OpKind::Remove, _) | (_, Some(Value::Null)) => {
            doc.remove(attr.name);
        }
        (_, Some(v @ Value::Object(_))) => {
            // Sub-attributes not given are left unchanged (RFC 7644 §3.5.2.3).
            let Value::Object(incoming) = canonical_element(attr, v)? else {
                return Ok(());
            };
            let mut obj = take_object(doc, attr.name);
            obj.extend(incoming);
            doc.insert(attr.name.into(), Value::Object(obj));
        }
        _ => {
            return Err(ScimError::invalid_value(format!(
                "{} needs an object value",
                attr.name
            )));
        }
    }
    Ok(())
}

fn elements(attr: &Attr, v: &Value) -> Result<Vec<Value>, ScimError> {
    match v {
        Value::Array(items) => items.iter().map(|i| canonical_element(attr, i)).collect(),
        Value::Null => Ok(Vec::new()),
        other => Ok(vec![canonical_element(attr, other)?]),
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    matches!((a.get("value"), b.get("value")), (Some(x), Some(y)) if x == y)
}

fn multi_whole(
    doc: &mut Map<String, Value>,
    attr: &Attr,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match (op, value) {
        (OpKind::Remove, None | Some(Value::Null)) => {
            doc.remove(attr.name);
        }
        (OpKind::Remove, Some(v)) => {
            // Entra's default: {"op":"Remove","path":"members","value":[{"value":"id"}]}.
            let gone = elements(attr, v)?;
            let mut arr = take_array(doc, attr.name);
            arr.retain(|el| !gone.iter().any(|g| same_value(el, g)));
            doc.insert(attr.name.into(), Value::Array(arr));
        }
        (OpKind::Replace, Some(v)) => {
            doc.insert(attr.name.into(), Value::Array(elements(attr, v)?));
        }
        (OpKind::Add, Some(v)) => {
            let incoming = elements(attr, v)?;
            let mut arr = take_array(doc, attr.name);
            for el in incoming {
                match arr.iter_mut().find(|x| same_value(x, &el)) {
                    Some(existing) => *existing = el,
                    None => arr.push(el),
                }
            }
            doc.insert(attr.name.into(), Value::Array(arr));
        }
        (_, None) => {
            return Err(ScimError::invalid_value(format!(
                "{op:?} of {} needs a value",
                attr.name
            )));
        }
    }
    Ok(())
}

fn multi_filtered(
    doc: &mut Map<String, Value>,
    attr: &Attr,
    f: &Filter,
    sub: Option<&'static str>,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let mut arr = take_array(doc, attr.name);
    let result = edit_matching(&mut arr, attr, f, sub, op, value);
    doc.insert(attr.name.into(), Value::Array(arr));
    result
}

fn edit_matching(
    arr: &mut Vec<Value>,
    attr: &Attr,
    f: &Filter,
    sub: Option<&'static str>,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let hit: Vec<usize> = (0..arr.len())
        .filter(|&i| matches_element(f, &arr[i]))
        .collect();
    if op == OpKind::Remove {
        match sub {
            None => {
                let mut i = 0;
                arr.retain(|_| {
                    i += 1;
                    !hit.contains(&(i - 1))
                });
            }
            Some(s) => hit.iter().for_each(|&i| {
                if let Some(o) = arr[i].as_object_mut() {
                    o.remove(s);
                }
            }),
        }
        return Ok(());
    }
    let v = value.ok_or_else(|| {
        ScimError::invalid_value(format!("{op:?} of {} needs a value", attr.name))
    })?;
    let patch: Map<String, Value> = match sub {
        Some(s) => std::iter::once((s.to_string(), v.clone())).collect(),
        None => match canonical_element(attr, v)? {
            Value::Object(o) => o,
            _ => Map::new(),
        },
    };
    if hit.is_empty() {
        if op == OpKind::Replace && sub.is_none() {
            return Err(ScimError::no_target(format!(
                "no {} element matches",
                attr.name
            )));
        }
        // Entra: replace of emails[type eq "work"].value on a user without a work email.
        let mut el: Map<String, Value> = equalities(f)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        el.extend(patch);
        arr.push(Value::Object(el));
        return Ok(());
    }
    for i in hit {
        if let Some(o) = arr[i].as_object_mut() {
            o.extend(patch.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(kind: Kind, doc: Value, body: Value) -> Result<Value, ScimError> {
        let Value::Object(mut d) = doc else {
            unreachable!()
        };
        for op in parse_request(&body)? {
            apply(kind, &mut d, &op)?;
        }
        Ok(Value::Object(d))
    }

    fn ops(list: Value) -> Value {
        json!({"schemas": [crate::signals::scim::schema::PATCH_SCHEMA], "Operations": list})
    }

    #[test]
    fn simple_and_complex_attributes() {
        let d = json!({"userName": "a", "name": {"givenName": "A", "familyName": "B"}});
        let out = run(Kind::User, d.clone(), ops(json!([
            {"op": "Replace", "path": "name.familyName", "value": "C"},
            {"op": "add", "path": "displayName", "value": "Ada"},
            {"op": "REPLACE", "value": {"active": "False", "name.givenName": "Z", "id": "ignored",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7"}}
        ]))).unwrap();
        assert_eq!(
            out,
            json!({"userName": "a", "displayName": "Ada", "active": "False",
                               "name": {"givenName": "Z", "familyName": "C"}})
        );
        let out = run(
            Kind::User,
            d,
            ops(
                json!([{"op": "replace", "path": "name", "value": {"formatted": "F"}},
                                                 {"op": "remove", "path": "name.givenName"}]),
            ),
        )
        .unwrap();
        assert_eq!(out["name"], json!({"familyName": "B", "formatted": "F"}));
    }

    #[test]
    fn members_add_remove_replace() {
        let d = json!({"displayName": "g", "members": [{"value": "a"}, {"value": "b"}, {"value": "c"}]});
        let out = run(Kind::Group, d.clone(), ops(json!([
            {"op": "remove", "path": "members[value eq \"a\"]"},
            {"op": "Remove", "path": "members", "value": [{"value": "b", "$ref": null}]},
            {"op": "Add", "path": "members", "value": [{"value": "d", "$ref": null}, {"value": "c"}]}
        ]))).unwrap();
        assert_eq!(
            out["members"],
            json!([{"value": "c"}, {"value": "d", "$ref": null}])
        );
        let out = run(
            Kind::Group,
            d.clone(),
            ops(json!([{"op": "replace", "path": "members", "value": [{"value": "z"}]}])),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "z"}]));
        let out = run(
            Kind::Group,
            d,
            ops(json!([{"op": "remove", "path": "members"}])),
        )
        .unwrap();
        assert!(out.get("members").is_none());
    }

    #[test]
    fn filtered_email_updates_create_the_element_when_missing() {
        let d = json!({"userName": "a", "emails": [{"value": "h@x", "type": "home"}]});
        let out = run(
            Kind::User,
            d,
            ops(json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "w@x"},
                {"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}
            ])),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"value": "h@x", "type": "home", "primary": true},
                                         {"type": "work", "value": "w@x"}])
        );
    }

    #[test]
    fn malformed_requests() {
        let d = json!({"userName": "a"});
        let cases = [
            (json!({"Operations": []}), "invalidSyntax"),
            (json!({"nope": 1}), "invalidSyntax"),
            (
                ops(json!([{"op": "move", "path": "userName"}])),
                "invalidSyntax",
            ),
            (ops(json!([{"op": "remove"}])), "noTarget"),
            (
                ops(json!([{"op": "replace", "value": "x"}])),
                "invalidValue",
            ),
            (
                ops(json!([{"op": "replace", "path": "userName"}])),
                "invalidValue",
            ),
            (
                ops(json!([{"op": "replace", "path": 5, "value": 1}])),
                "invalidPath",
            ),
            (
                ops(
                    json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": {"value": "x"}}]),
                ),
                "noTarget",
            ),
            (
                ops(json!([{"op": "add", "path": "emails", "value": ["x"]}])),
                "invalidValue",
            ),
            (
                ops(json!([{"op": "add", "path": "name", "value": "x"}])),
                "invalidValue",
            ),
        ];
        for (body, want) in cases {
            let e = run(Kind::User, d.clone(), body.clone()).unwrap_err();
            assert_eq!(e.scim_type, Some(want), "{body}");
        }
    }
}
