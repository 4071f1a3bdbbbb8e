//! SCIM filters (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2), parsed by hand and
//! evaluated against a resource's JSON.
//!
//! Why not a crate: the grammar needed is small (comparisons, `pr`, `and`/`or`/`not`,
//! parentheses, `attr[filter]`), PATCH paths (`members[value eq "id"]`,
//! `emails[type eq "work"].value`) are a second grammar that filter crates do not
//! cover, and attribute names must resolve case-insensitively against the attributes
//! this provider models (see `schema`), so a generic parser would still need this glue.
//! Unknown attributes and unsupported syntax give `invalidFilter` / `invalidPath`.

use super::error::ScimError;
use super::schema::{Attr, Kind, Shape};
use serde_json::Value;

const MAX_FILTER: usize = 4096;
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A resolved attribute path: the attribute and, for complex ones, a sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub attr: &'static str,
    pub sub: Option<&'static str>,
    pub case_exact: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Cmp(AttrPath, Op, Value),
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `emails[type eq "work"]`: some element of the multi-valued attribute matches.
    Any(&'static str, Box<Filter>),
}

/// A PATCH target: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`. `attr` is
/// None for attributes this provider does not model (the operation is ignored).
#[derive(Debug, Clone)]
pub struct PatchPath {
    pub attr: Option<&'static Attr>,
    pub filter: Option<Filter>,
    pub sub: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Lit(Value),
    Open,
    Close,
    LBracket,
    RBracket,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, ScimError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let single = match b[i] {
            b'(' => Some(Tok::Open),
            b')' => Some(Tok::Close),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            _ => None,
        };
        if let Some(t) = single {
            out.push(t);
            i += 1;
            continue;
        }
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let (lit, end) = string_literal(s, i)?;
                out.push(Tok::Str(lit));
                i = end;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(
                        b[i],
                        b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'[' | b']' | b'"'
                    )
                {
                    i += 1;
                }
                let w = &s[start..i];
                out.push(match w {
                    "true" | "false" | "null" => {
                        Tok::Lit(serde_json::from_str(w).unwrap_or(Value::Null))
                    }
                    _ if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                        match serde_json::from_str::<serde_json::Number>(w) {
                            Ok(n) => Tok::Lit(Value::Number(n)),
                            Err(_) => Tok::Word(w.to_string()),
                        }
                    }
                    _ => Tok::Word(w.to_string()),
                });
            }
        }
    }
    Ok(out)
}

/// A JSON string literal starting at byte `start` (the opening quote).
fn string_literal(s: &str, start: usize) -> Result<(String, usize), ScimError> {
    let b = s.as_bytes();
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => {
                let lit: String = serde_json::from_str(&s[start..=i])
                    .map_err(|_| ScimError::invalid_filter("bad string literal"))?;
                return Ok((lit, i + 1));
            }
            _ => i += 1,
        }
    }
    Err(ScimError::invalid_filter("unterminated string"))
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    kind: Kind,
    /// Inside `attr[...]`: names resolve as sub-attributes of this one.
    within: Option<&'static Attr>,
    depth: usize,
}

fn word_is(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.and()?;
        while word_is(self.peek(), "or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.term()?;
        while word_is(self.peek(), "and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn nested(&mut self, close: Tok) -> Result<Filter, ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ScimError::invalid_filter("filter nested too deeply"));
        }
        let f = self.or()?;
        self.depth -= 1;
        if self.next() != Some(close) {
            return Err(ScimError::invalid_filter("unbalanced brackets"));
        }
        Ok(f)
    }

    fn term(&mut self) -> Result<Filter, ScimError> {
        match self.next() {
            Some(Tok::Open) => self.nested(Tok::Close),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {
                if self.next() != Some(Tok::Open) {
                    return Err(ScimError::invalid_filter("not must be followed by ("));
                }
                Ok(Filter::Not(Box::new(self.nested(Tok::Close)?)))
            }
            Some(Tok::Word(w)) => self.comparison(&w),
            _ => Err(ScimError::invalid_filter("expected an attribute")),
        }
    }

    fn comparison(&mut self, name: &str) -> Result<Filter, ScimError> {
        if self.peek() == Some(&Tok::LBracket) {
            self.pos += 1;
            let attr = resolve_attr(self.kind, name, ScimError::invalid_filter)?;
            if !matches!(attr.shape, Shape::MultiComplex(_)) || self.within.is_some() {
                return Err(ScimError::invalid_filter(format!(
                    "{name} is not multi-valued"
                )));
            }
            let saved = self.within.replace(attr);
            let inner = self.nested(Tok::RBracket)?;
            self.within = saved;
            return Ok(Filter::Any(attr.name, Box::new(inner)));
        }
        let path = match self.within {
            Some(parent) => sub_path(parent, name)?,
            None => attr_path(self.kind, name)?,
        };
        let op = match self.next() {
            Some(Tok::Word(w)) => w.to_ascii_lowercase(),
            _ => return Err(ScimError::invalid_filter("expected an operator")),
        };
        let op = match op.as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => {
                return Err(ScimError::invalid_filter(format!(
                    "unknown operator {other:?}"
                )));
            }
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Lit(v)) => v,
            _ => return Err(ScimError::invalid_filter("expected a value")),
        };
        Ok(Filter::Cmp(path, op, value))
    }
}

fn resolve_attr(
    kind: Kind,
    name: &str,
    err: fn(String) -> ScimError,
) -> Result<&'static Attr, ScimError> {
    kind.attr(name)
        .ok_or_else(|| err(format!("unknown attribute {name:?}")))
}

/// `userName`, `name.givenName`, `emails.value`, `urn:...:User:userName`.
fn attr_path(kind: Kind, name: &str) -> Result<AttrPath, ScimError> {
    let stripped = kind
        .strip_urn(name)
        .ok_or_else(|| ScimError::invalid_filter(format!("unknown attribute {name:?}")))?;
    let (head, sub) = match stripped.split_once('.') {
        Some((h, s)) => (h, Some(s)),
        None => (stripped, None),
    };
    let attr = resolve_attr(kind, head, ScimError::invalid_filter)?;
    match sub {
        None => Ok(AttrPath {
            attr: attr.name,
            sub: None,
            case_exact: attr.case_exact,
        }),
        Some(s) => sub_path(attr, s),
    }
}

fn sub_path(parent: &'static Attr, sub: &str) -> Result<AttrPath, ScimError> {
    let s = parent.sub(sub).ok_or_else(|| {
        ScimError::invalid_filter(format!("unknown attribute {}.{sub}", parent.name))
    })?;
    Ok(AttrPath {
        attr: parent.name,
        sub: Some(s),
        case_exact: parent.case_exact,
    })
}

/// Parses a `filter` query parameter for resources of `kind`.
pub fn parse(kind: Kind, text: &str) -> Result<Filter, ScimError> {
    if text.len() > MAX_FILTER {
        return Err(ScimError::invalid_filter("filter too long"));
    }
    parse_within(kind, None, text)
}

fn parse_within(
    kind: Kind,
    within: Option<&'static Attr>,
    text: &str,
) -> Result<Filter, ScimError> {
    let toks = tokenize(text)?;
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        kind,
        within,
        depth: 0,
    };
    let f = p.or()?;
    if p.pos != toks.len() {
        return Err(ScimError::invalid_filter(
            "unexpected text after the filter",
        ));
    }
    Ok(f)
}

/// Parses a PATCH `path`.
pub fn parse_path(kind: Kind, path: &str) -> Result<PatchPath, ScimError> {
    let path = path.trim();
    if path.is_empty() || path.len() > MAX_FILTER {
        return Err(ScimError::invalid_path("empty or overlong path"));
    }
    let (head, filter, rest) = match path.find('[') {
        Some(open) => {
            let close = matching_bracket(path, open)?;
            let rest = &path[close + 1..];
            (&path[..open], Some(&path[open + 1..close]), rest)
        }
        None => (path, None, ""),
    };
    // `urn:...:User:name.givenName`: the URN ends at the last ':' before the first '.'.
    let Some(stripped) = kind.strip_urn(head) else {
        return Ok(PatchPath {
            attr: None,
            filter: None,
            sub: None,
        });
    };
    let (name, mut sub) = match stripped.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (stripped, None),
    };
    let Some(attr) = kind.attr(name) else {
        return Ok(PatchPath {
            attr: None,
            filter: None,
            sub: None,
        });
    };
    if let Some(r) = rest.strip_prefix('.') {
        if sub.is_some() || filter.is_none() {
            return Err(ScimError::invalid_path(format!("bad path {path:?}")));
        }
        sub = Some(r);
    } else if !rest.is_empty() {
        return Err(ScimError::invalid_path(format!("bad path {path:?}")));
    }
    let filter = match filter {
        None => None,
        Some(f) if matches!(attr.shape, Shape::MultiComplex(_)) => {
            Some(parse_within(kind, Some(attr), f).map_err(|e| ScimError::invalid_path(e.detail))?)
        }
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "{} is not multi-valued",
                attr.name
            )));
        }
    };
    let sub = match sub {
        None => None,
        Some(s) => Some(attr.sub(s).ok_or_else(|| {
            ScimError::invalid_path(format!("unknown attribute {}.{s}", attr.name))
        })?),
    };
    Ok(PatchPath {
        attr: Some(attr),
        filter,
        sub,
    })
}

fn matching_bracket(s: &str, open: usize) -> Result<usize, ScimError> {
    let b = s.as_bytes();
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_literal(s, i)
                    .map_err(|e| ScimError::invalid_path(e.detail))?
                    .1
            }
            b']' => return Ok(i),
            _ => i += 1,
        }
    }
    Err(ScimError::invalid_path("unbalanced ["))
}

/// The values an attribute path designates in `res` (several for multi-valued ones).
fn values<'a>(res: &'a Value, p: &AttrPath) -> Vec<&'a Value> {
    let Some(v) = res.get(p.attr) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let sub = p.sub.or(if v.is_array() { Some("value") } else { None });
    match sub {
        None => items,
        Some(s) => items.into_iter().filter_map(|i| i.get(s)).collect(),
    }
}

fn compare(actual: &Value, op: Op, want: &Value, case_exact: bool) -> bool {
    use std::cmp::Ordering;
    let ord = match (actual, want) {
        (Value::String(a), Value::String(w)) => {
            let (a, w) = if case_exact {
                (a.clone(), w.clone())
            } else {
                (a.to_lowercase(), w.to_lowercase())
            };
            match op {
                Op::Co => return a.contains(&w),
                Op::Sw => return a.starts_with(&w),
                Op::Ew => return a.ends_with(&w),
                _ => a.cmp(&w),
            }
        }
        (Value::Number(a), Value::Number(w)) => match (a.as_f64(), w.as_f64()) {
            (Some(a), Some(w)) => a.partial_cmp(&w).unwrap_or(Ordering::Less),
            _ => return false,
        },
        (a, w) => match op {
            Op::Eq => return a == w,
            Op::Ne => return a != w,
            _ => return false,
        },
    };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}

/// Whether `res` (a resource's JSON, or one element inside `attr[...]`) matches.
pub fn matches(f: &Filter, res: &Value) -> bool {
    match f {
        Filter::Cmp(p, Op::Ne, w) => !values(res, p)
            .iter()
            .any(|a| compare(a, Op::Eq, w, p.case_exact)),
        Filter::Cmp(p, op, w) => values(res, p)
            .iter()
            .any(|a| compare(a, *op, w, p.case_exact)),
        Filter::Present(p) => values(res, p).iter().any(|v| {
            !v.is_null() && v.as_str() != Some("") && v.as_array().is_none_or(|a| !a.is_empty())
        }),
        Filter::And(a, b) => matches(a, res) && matches(b, res),
        Filter::Or(a, b) => matches(a, res) || matches(b, res),
        Filter::Not(a) => !matches(a, res),
        Filter::Any(attr, inner) => res
            .get(*attr)
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(|i| matches_element(inner, i))),
    }
}

/// Inside `attr[...]` paths name sub-attributes of each element directly.
pub fn matches_element(f: &Filter, element: &Value) -> bool {
    match f {
        Filter::Cmp(p, op, w) => {
            let v = p.sub.and_then(|s| element.get(s));
            match op {
                Op::Ne => !v.is_some_and(|a| compare(a, Op::Eq, w, p.case_exact)),
                _ => v.is_some_and(|a| compare(a, *op, w, p.case_exact)),
            }
        }
        Filter::Present(p) => p
            .sub
            .and_then(|s| element.get(s))
            .is_some_and(|v| !v.is_null() && v.as_str() != Some("")),
        Filter::And(a, b) => matches_element(a, element) && matches_element(b, element),
        Filter::Or(a, b) => matches_element(a, element) || matches_element(b, element),
        Filter::Not(a) => !matches_element(a, element),
        Filter::Any(..) => false,
    }
}

/// The `sub eq "value"` pairs a filter requires (`type eq "work"`), for creating an
/// element when a PATCH targets `emails[type eq "work"].value` and none exists yet.
pub fn equalities(f: &Filter) -> Vec<(&'static str, Value)> {
    match f {
        Filter::Cmp(AttrPath { sub: Some(s), .. }, Op::Eq, v) => vec![(*s, v.clone())],
        Filter::And(a, b) => {
            let mut v = equalities(a);
            v.extend(equalities(b));
            v
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({"id": "ID-1", "userName": "Ada@Example.com", "externalId": "Ext-1", "active": false,
               "name": {"givenName": "Ada"},
               "emails": [{"value": "ada@work.example", "type": "work", "primary": true},
                          {"value": "ada@home.example", "type": "home"}]})
    }

    fn check(filter: &str) -> bool {
        matches(&parse(Kind::User, filter).unwrap(), &user())
    }

    #[test]
    fn what_okta_and_entra_query_matches() {
        // Okta: GET /Users?filter=userName%20eq%20%22...%22 ; Entra: userName eq "..." too.
        assert!(
            check(r#"userName eq "ada@example.com""#),
            "userName is case-insensitive"
        );
        assert!(check(r#"USERNAME EQ "ADA@EXAMPLE.COM""#));
        assert!(check(r#"externalId eq "Ext-1""#));
        assert!(
            !check(r#"externalId eq "ext-1""#),
            "externalId is case-exact"
        );
        assert!(check(r#"id eq "ID-1""#));
        assert!(check(r#"emails.value eq "ada@home.example""#));
        assert!(check(
            r#"emails[type eq "work" and value eq "ada@work.example"]"#
        ));
        assert!(!check(r#"emails[type eq "home" and primary eq true]"#));
        assert!(
            check(r#"emails co "home""#),
            "bare multi-valued attribute means .value"
        );
        assert!(check(
            r#"active eq false and (name.givenName sw "A" or userName eq "x")"#
        ));
        assert!(check(r#"not (userName eq "x") and externalId pr"#));
        assert!(!check(r#"displayName pr"#));
        assert!(check(r#"userName ne "x""#));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName ew "EXAMPLE.COM""#
        ));
        assert!(check(r#"userName eq "with \"quote\"" or active eq false"#));
    }

    #[test]
    fn bad_filters_are_invalid_filter() {
        for f in [
            r#"nickName eq "x""#,
            r#"userName xx "x""#,
            r#"userName eq"#,
            r#"(userName eq "x""#,
            r#"userName eq "x" junk"#,
            r#"userName eq "unterminated"#,
            r#"name[givenName eq "x"]"#,
            r#"emails.nope eq "x""#,
            r#"urn:other:schema:userName eq "x""#,
            "",
        ] {
            let e = parse(Kind::User, f).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{f:?}");
        }
        let deep = format!("{}userName pr{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(Kind::User, &deep).is_err());
    }

    #[test]
    fn patch_paths() {
        let p = parse_path(
            Kind::Group,
            r#"members[value eq "7f4bc1a3-285e-48ae-8202-5accb43efb0e"]"#,
        )
        .unwrap();
        assert_eq!(p.attr.unwrap().name, "members");
        assert!(matches_element(
            p.filter.as_ref().unwrap(),
            &json!({"value": "7f4bc1a3-285e-48ae-8202-5accb43efb0e"})
        ));
        assert!(!matches_element(
            p.filter.as_ref().unwrap(),
            &json!({"value": "7F4BC1A3-285E-48AE-8202-5ACCB43EFB0E"})
        ));
        let p = parse_path(Kind::User, r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!((p.attr.unwrap().name, p.sub), ("emails", Some("value")));
        assert_eq!(
            equalities(p.filter.as_ref().unwrap()),
            vec![("type", json!("work"))]
        );
        let p = parse_path(Kind::User, "name.givenName").unwrap();
        assert_eq!(
            (p.attr.unwrap().name, p.sub, p.filter),
            ("name", Some("givenName"), None)
        );
        let p = parse_path(
            Kind::User,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        )
        .unwrap();
        assert!(p.attr.is_none(), "not modelled: ignored");
        assert!(parse_path(Kind::User, "nickName").unwrap().attr.is_none());
        for bad in [
            "userName[value eq \"x\"]",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]x",
            "name.nope",
            "",
        ] {
            assert_eq!(
                parse_path(Kind::User, bad).unwrap_err().scim_type,
                Some("invalidPath"),
                "{bad:?}"
            );
        }
    }
}
