//! The stored form of SCIM Users and Groups (only what revocation needs: names, emails,
//! the active flag, memberships) and their conversion to and from SCIM JSON.
//!
//! Records are whole values with a `version` (microseconds, last writer wins) and a
//! `deleted` flag: a DELETE writes a tombstone rather than removing the record, so a
//! replicated store can order a delete after the writes it follows, and sign-in keeps
//! being refused for a deleted account. Parsing is lenient where IdPs are known to
//! differ (attribute names in any case, `"active": "False"` as Entra sends it) and
//! strict on types otherwise. Attributes not modelled here (`locale`, `password`,
//! the enterprise extension...) are accepted and dropped; a password is never kept.

use super::error::ScimError;
use super::schema::{Kind, Shape};
use crate::clock::Micros;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

const MAX_STRING: usize = 1024;
const MAX_EMAILS: usize = 32;
/// Members of one group; Entra and Okta send memberships in small batches, but a full
/// `replace` carries them all.
pub const MAX_MEMBERS: usize = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Name {
    pub formatted: Option<String>,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub honorific_prefix: Option<String>,
    pub honorific_suffix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub value: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub primary: bool,
    pub display: Option<String>,
}

/// A SCIM User as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub display_name: Option<String>,
    pub name: Name,
    pub emails: Vec<Email>,
    pub created: Micros,
    /// Last modification; also the ETag and the last-writer-wins order.
    pub version: Micros,
    pub deleted: bool,
}

/// A SCIM Group as stored; `members` are SCIM user ids, in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: Vec<String>,
    pub created: Micros,
    pub version: Micros,
    pub deleted: bool,
}

/// Lower-cased, trimmed email address for comparisons.
pub fn norm_email(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    matches!(s.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !s.contains(' '))
}

impl UserRecord {
    /// The address the gateway knows this user by: `userName` when it is an email
    /// address (Okta's default, Entra's UPN), else the primary, then the work, then the
    /// first email; `userName` lower-cased as a last resort.
    pub fn email(&self) -> String {
        if looks_like_email(&self.user_name) {
            return norm_email(&self.user_name);
        }
        let pick = self
            .emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| {
                self.emails
                    .iter()
                    .find(|e| e.kind.as_deref() == Some("work"))
            })
            .or_else(|| self.emails.first());
        match pick {
            Some(e) => norm_email(&e.value),
            None => norm_email(&self.user_name),
        }
    }

    /// Every other address of this user (deduplicated, lower-cased).
    pub fn aliases(&self) -> Vec<String> {
        let main = self.email();
        let mut out: Vec<String> = Vec::new();
        let all = std::iter::once(self.user_name.as_str())
            .filter(|u| looks_like_email(u))
            .chain(self.emails.iter().map(|e| e.value.as_str()));
        for a in all.map(norm_email) {
            if a != main && !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Whether `email` (normalised) is one of this user's addresses.
    pub fn has_email(&self, email: &str) -> bool {
        norm_email(&self.user_name) == email
            || self.emails.iter().any(|e| norm_email(&e.value) == email)
    }
}

/// Where resources live, for `meta.location`: `/scim/v2` or an absolute base URL.
pub fn location(base: &str, kind: Kind, id: &str) -> String {
    format!("{}/{}/{}", base.trim_end_matches('/'), kind.endpoint(), id)
}

pub fn rfc3339(us: Micros) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn etag(version: Micros) -> String {
    format!("W/\"{version}\"")
}

fn meta(kind: Kind, base: &str, id: &str, created: Micros, version: Micros) -> Value {
    json!({
        "resourceType": kind.resource_type(),
        "created": rfc3339(created),
        "lastModified": rfc3339(version),
        "location": location(base, kind, id),
        "version": etag(version),
    })
}

fn put_opt(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(k.into(), json!(v));
    }
}

pub fn user_json(u: &UserRecord, base: &str) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([Kind::User.schema_urn()]));
    m.insert("id".into(), json!(u.id));
    put_opt(&mut m, "externalId", &u.external_id);
    m.insert("userName".into(), json!(u.user_name));
    let mut name = Map::new();
    put_opt(&mut name, "formatted", &u.name.formatted);
    put_opt(&mut name, "familyName", &u.name.family_name);
    put_opt(&mut name, "givenName", &u.name.given_name);
    put_opt(&mut name, "middleName", &u.name.middle_name);
    put_opt(&mut name, "honorificPrefix", &u.name.honorific_prefix);
    put_opt(&mut name, "honorificSuffix", &u.name.honorific_suffix);
    if !name.is_empty() {
        m.insert("name".into(), Value::Object(name));
    }
    put_opt(&mut m, "displayName", &u.display_name);
    m.insert("active".into(), json!(u.active));
    let emails: Vec<Value> = u
        .emails
        .iter()
        .map(|e| {
            let mut o = Map::new();
            o.insert("value".into(), json!(e.value));
            put_opt(&mut o, "type", &e.kind);
            o.insert("primary".into(), json!(e.primary));
            put_opt(&mut o, "display", &e.display);
            Value::Object(o)
        })
        .collect();
    if !emails.is_empty() {
        m.insert("emails".into(), Value::Array(emails));
    }
    m.insert(
        "meta".into(),
        meta(Kind::User, base, &u.id, u.created, u.version),
    );
    Value::Object(m)
}

pub fn group_json(g: &GroupRecord, base: &str) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([Kind::Group.schema_urn()]));
    m.insert("id".into(), json!(g.id));
    put_opt(&mut m, "externalId", &g.external_id);
    m.insert("displayName".into(), json!(g.display_name));
    let members: Vec<Value> = g
        .members
        .iter()
        .map(|id| json!({"value": id, "$ref": location(base, Kind::User, id), "type": "User"}))
        .collect();
    m.insert("members".into(), Value::Array(members));
    m.insert(
        "meta".into(),
        meta(Kind::Group, base, &g.id, g.created, g.version),
    );
    Value::Object(m)
}

/// Rewrites a request body's attribute names to their canonical spelling and drops the
/// attributes this provider does not model (and read-only ones).
pub fn canonical(kind: Kind, body: &Value) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    };
    let mut out = Map::new();
    for (k, v) in obj {
        let Some(attr) = kind.attr(k) else { continue };
        if attr.is_read_only() {
            continue;
        }
        let v = match (attr.shape, v) {
            (Shape::Complex(_), Value::Object(o)) => Value::Object(canonical_subs(attr, o)),
            (Shape::MultiComplex(_), Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Value::Object(o) => Value::Object(canonical_subs(attr, o)),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(attr.name.to_string(), v);
    }
    Ok(out)
}

fn canonical_subs(attr: &super::schema::Attr, o: &Map<String, Value>) -> Map<String, Value> {
    o.iter()
        .filter_map(|(k, v)| attr.sub(k).map(|s| (s.to_string(), v.clone())))
        .collect()
}

fn string(field: &str, v: Option<&Value>) -> Result<Option<String>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_STRING => Err(ScimError::invalid_value(format!(
            "{field} is longer than {MAX_STRING} bytes"
        ))),
        Some(Value::String(s)) if s.chars().any(char::is_control) => Err(ScimError::invalid_value(
            format!("{field} has control characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ScimError::invalid_value(format!(
            "{field} must be a string"
        ))),
    }
}

/// A boolean, or the strings "true"/"false" in any case (Entra sends `"False"`).
pub fn boolish(field: &str, v: &Value) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::invalid_value(format!(
            "{field} must be a boolean"
        ))),
    }
}

fn required(field: &str, v: Option<&Value>) -> Result<String, ScimError> {
    match string(field, v)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ScimError::invalid_value(format!("{field} is required"))),
    }
}

fn parse_name(v: Option<&Value>) -> Result<Name, ScimError> {
    let o = match v {
        None | Some(Value::Null) => return Ok(Name::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ScimError::invalid_value("name must be an object")),
    };
    Ok(Name {
        formatted: string("name.formatted", o.get("formatted"))?,
        family_name: string("name.familyName", o.get("familyName"))?,
        given_name: string("name.givenName", o.get("givenName"))?,
        middle_name: string("name.middleName", o.get("middleName"))?,
        honorific_prefix: string("name.honorificPrefix", o.get("honorificPrefix"))?,
        honorific_suffix: string("name.honorificSuffix", o.get("honorificSuffix"))?,
    })
}

fn parse_emails(v: Option<&Value>) -> Result<Vec<Email>, ScimError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ScimError::invalid_value("emails must be an array")),
    };
    if items.len() > MAX_EMAILS {
        return Err(ScimError::invalid_value(format!(
            "more than {MAX_EMAILS} emails"
        )));
    }
    let mut out: Vec<Email> = Vec::with_capacity(items.len());
    for e in items {
        let Value::Object(o) = e else {
            return Err(ScimError::invalid_value("each email must be an object"));
        };
        let Some(value) = string("emails.value", o.get("value"))? else {
            // An email without a value (Entra can send a cleared work email) is dropped.
            continue;
        };
        let primary = match o.get("primary") {
            None | Some(Value::Null) => false,
            Some(p) => boolish("emails.primary", p)?,
        };
        if out
            .iter()
            .any(|x| norm_email(&x.value) == norm_email(&value))
        {
            continue;
        }
        out.push(Email {
            value,
            kind: string("emails.type", o.get("type"))?,
            primary,
            display: string("emails.display", o.get("display"))?,
        });
    }
    Ok(out)
}

/// Builds a user from canonical JSON. `prev` supplies `active` when the body omits it
/// (a PUT without `active` must not deactivate anyone by accident).
pub fn user_from(
    m: &Map<String, Value>,
    id: String,
    prev: Option<&UserRecord>,
    created: Micros,
    version: Micros,
) -> Result<UserRecord, ScimError> {
    let active = match m.get("active") {
        None | Some(Value::Null) => prev.map(|p| p.active).unwrap_or(true),
        Some(v) => boolish("active", v)?,
    };
    Ok(UserRecord {
        id,
        user_name: required("userName", m.get("userName"))?.trim().to_string(),
        external_id: string("externalId", m.get("externalId"))?,
        active,
        display_name: string("displayName", m.get("displayName"))?,
        name: parse_name(m.get("name"))?,
        emails: parse_emails(m.get("emails"))?,
        created,
        version,
        deleted: false,
    })
}

/// Builds a group from canonical JSON. `prev` supplies the members when the body has no
/// `members` attribute at all (an explicit `[]` or `null` clears them).
pub fn group_from(
    m: &Map<String, Value>,
    id: String,
    prev: Option<&GroupRecord>,
    created: Micros,
    version: Micros,
) -> Result<GroupRecord, ScimError> {
    let members = match m.get("members") {
        None => prev.map(|p| p.members.clone()).unwrap_or_default(),
        Some(v) => member_ids(v)?,
    };
    Ok(GroupRecord {
        id,
        display_name: required("displayName", m.get("displayName"))?
            .trim()
            .to_string(),
        external_id: string("externalId", m.get("externalId"))?,
        members,
        created,
        version,
        deleted: false,
    })
}

/// The `value`s of a members array (or single member object), deduplicated.
pub fn member_ids(v: &Value) -> Result<Vec<String>, ScimError> {
    let items: &[Value] = match v {
        Value::Null => &[],
        Value::Array(a) => a,
        Value::Object(_) => std::slice::from_ref(v),
        _ => {
            return Err(ScimError::invalid_value(
                "members must be an array of objects",
            ));
        }
    };
    if items.len() > MAX_MEMBERS {
        return Err(ScimError::invalid_value(format!(
            "more than {MAX_MEMBERS} members"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        let value = i.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .map(|(_, v)| v)
        });
        let id = match value {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_STRING => s.clone(),
            _ => return Err(ScimError::invalid_value("each member needs a string value")),
        };
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(user_name: &str, emails: &[(&str, Option<&str>, bool)]) -> UserRecord {
        UserRecord {
            id: "u1".into(),
            user_name: user_name.into(),
            external_id: None,
            active: true,
            display_name: None,
            name: Name::default(),
            emails: emails
                .iter()
                .map(|(v, t, p)| Email {
                    value: (*v).into(),
                    kind: t.map(Into::into),
                    primary: *p,
                    display: None,
                })
                .collect(),
            created: 0,
            version: 0,
            deleted: false,
        }
    }

    #[test]
    fn the_sign_in_email_prefers_an_email_like_user_name() {
        let u = user(
            "Ada@Example.com",
            &[("ada.l@example.org", Some("work"), true)],
        );
        assert_eq!(u.email(), "ada@example.com");
        assert_eq!(u.aliases(), vec!["ada.l@example.org".to_string()]);
        let u = user(
            "ada",
            &[("x@o.org", None, false), ("Ada@W.org", Some("work"), false)],
        );
        assert_eq!(u.email(), "ada@w.org");
        let u = user("ada", &[("x@o.org", None, false), ("p@o.org", None, true)]);
        assert_eq!(u.email(), "p@o.org");
        assert!(u.has_email("x@o.org"));
        assert_eq!(user("Ada", &[]).email(), "ada");
    }

    #[test]
    fn parsing_is_lenient_on_names_and_string_booleans_strict_on_types() {
        let body = json!({"USERNAME": "a@b.c", "Active": "False", "Emails": [{"Value": "a@b.c"}],
                          "password": "never kept", "id": "ignored", "locale": "en-US"});
        let m = canonical(Kind::User, &body).unwrap();
        assert!(!m.contains_key("password") && !m.contains_key("id"));
        let u = user_from(&m, "id1".into(), None, 1, 2).unwrap();
        assert_eq!(
            (u.user_name.as_str(), u.active, u.emails.len()),
            ("a@b.c", false, 1)
        );
        let bad = json!({"userName": "a", "active": "maybe"});
        let err = user_from(
            &canonical(Kind::User, &bad).unwrap(),
            "x".into(),
            None,
            0,
            0,
        );
        assert_eq!(err.unwrap_err().scim_type, Some("invalidValue"));
        let err = user_from(
            &canonical(Kind::User, &json!({"userName": 5})).unwrap(),
            "x".into(),
            None,
            0,
            0,
        );
        assert!(err.unwrap_err().detail.contains("string"));
        let err = user_from(&Map::new(), "x".into(), None, 0, 0).unwrap_err();
        assert!(err.detail.contains("userName is required"));
    }

    #[test]
    fn a_put_without_active_keeps_the_previous_flag() {
        let mut prev = user("a@b.c", &[]);
        prev.active = false;
        let m = canonical(Kind::User, &json!({"userName": "a@b.c"})).unwrap();
        assert!(
            !user_from(&m, "u1".into(), Some(&prev), 0, 1)
                .unwrap()
                .active
        );
        assert!(user_from(&m, "u1".into(), None, 0, 1).unwrap().active);
    }

    #[test]
    fn members_are_deduplicated_and_need_values() {
        let ids =
            member_ids(&json!([{"value": "a", "$ref": null}, {"value": "b"}, {"value": "a"}]))
                .unwrap();
        assert_eq!(ids, vec!["a", "b"]);
        assert!(member_ids(&json!([{"display": "x"}])).is_err());
        assert!(member_ids(&json!("a")).is_err());
        assert_eq!(member_ids(&json!({"value": "z"})).unwrap(), vec!["z"]);
    }

    #[test]
    fn rendering_has_meta_and_integer_free_booleans() {
        let u = user("a@b.c", &[("a@b.c", Some("work"), true)]);
        let v = user_json(&u, "https://auth.example.com/scim/v2/");
        assert_eq!(v["active"], json!(true));
        assert_eq!(v["meta"]["resourceType"], "User");
        assert_eq!(
            v["meta"]["location"],
            "https://auth.example.com/scim/v2/Users/u1"
        );
        assert_eq!(v["meta"]["created"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["meta"]["version"], "W/\"0\"");
        assert!(v.get("name").is_none());
    }
}
