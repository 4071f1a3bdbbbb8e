//! `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` (RFC 7643 §5-7): what this
//! service provider supports, built from the same attribute table the filters and
//! PATCH paths use, so the advertised schema cannot drift from what is accepted.

use super::error::ScimError;
use super::schema::{Attr, GROUP_SCHEMA, Kind, LIST_SCHEMA, Shape, USER_SCHEMA};
use serde_json::{Value, json};

const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

pub fn service_provider_config(base: &str, max_results: usize) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "The bearer token set in the gateway's [scim] table",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", base.trim_end_matches('/')),
        }
    })
}

fn resource_type(base: &str, kind: Kind) -> Value {
    let name = kind.resource_type();
    json!({
        "schemas": [RT_SCHEMA],
        "id": name,
        "name": name,
        "endpoint": format!("/{}", kind.endpoint()),
        "description": name,
        "schema": kind.schema_urn(),
        "meta": {"resourceType": "ResourceType", "location": location_rt(base, name)},
    })
}

pub fn resource_types(base: &str, name: Option<&str>) -> Result<Value, ScimError> {
    let all = [Kind::User, Kind::Group];
    match name {
        None => Ok(list(all.iter().map(|k| resource_type(base, *k)).collect())),
        Some(n) => all
            .iter()
            .find(|k| k.resource_type().eq_ignore_ascii_case(n))
            .map(|k| resource_type(base, *k))
            .ok_or_else(|| ScimError::not_found(format!("resource type {n} not found"))),
    }
}

fn attribute(a: &Attr, kind: Kind) -> Value {
    let (ty, multi, subs): (&str, bool, &[&str]) = match a.shape {
        Shape::Simple if a.name == "active" => ("boolean", false, &[]),
        Shape::Simple => ("string", false, &[]),
        Shape::Complex(s) => ("complex", false, s),
        Shape::MultiComplex(s) => ("complex", true, s),
    };
    let required = matches!(
        (kind, a.name),
        (Kind::User, "userName") | (Kind::Group, "displayName")
    );
    let uniqueness = if a.name == "userName" || a.name == "id" {
        "server"
    } else {
        "none"
    };
    let mut v = json!({
        "name": a.name,
        "type": ty,
        "multiValued": multi,
        "required": required,
        "caseExact": a.case_exact,
        "mutability": if a.is_read_only() { "readOnly" } else { "readWrite" },
        "returned": "default",
        "uniqueness": uniqueness,
    });
    if !subs.is_empty() {
        let sub: Vec<Value> = subs
            .iter()
            .map(|s| {
                let ty = if *s == "primary" { "boolean" } else { "string" };
                json!({"name": s, "type": ty, "multiValued": false, "required": false,
                       "caseExact": a.case_exact, "mutability": "readWrite", "returned": "default"})
            })
            .collect();
        v["subAttributes"] = Value::Array(sub);
    }
    v
}

fn schema(base: &str, kind: Kind) -> Value {
    let attrs: Vec<Value> = kind
        .attrs()
        .iter()
        .filter(|a| !matches!(a.name, "id" | "meta"))
        .map(|a| attribute(a, kind))
        .collect();
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": kind.schema_urn(),
        "name": kind.resource_type(),
        "description": format!("{} as this gateway stores it", kind.resource_type()),
        "attributes": attrs,
        "meta": {"resourceType": "Schema", "location": format!("{}/Schemas/{}", base.trim_end_matches('/'), kind.schema_urn())},
    })
}

pub fn schemas(base: &str, id: Option<&str>) -> Result<Value, ScimError> {
    match id {
        None => Ok(list(vec![
            schema(base, Kind::User),
            schema(base, Kind::Group),
        ])),
        Some(u) if u.eq_ignore_ascii_case(USER_SCHEMA) => Ok(schema(base, Kind::User)),
        Some(g) if g.eq_ignore_ascii_case(GROUP_SCHEMA) => Ok(schema(base, Kind::Group)),
        Some(other) => Err(ScimError::not_found(format!("schema {other} not found"))),
    }
}

fn list(items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": items.len(),
        "startIndex": 1,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

fn location_rt(base: &str, name: &str) -> String {
    format!("{}/ResourceTypes/{}", base.trim_end_matches('/'), name)
}
