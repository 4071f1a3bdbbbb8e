//! The `/Users` and `/Groups` endpoints, written once over a small [`Resource`] trait:
//! list with filter and pagination, create, read, replace, patch and delete, each
//! write a conditional whole-record put followed by the effects it implies.

use super::effects::{Effect, group_effects, user_effects};
use super::error::ScimError;
use super::filter;
use super::model::{self, GroupRecord, UserRecord, canonical};
use super::patch;
use super::schema::{Kind, LIST_SCHEMA};
use super::store::{ScimStore, StoreError};
use super::{ScimOutcome, ScimSettings};
use crate::clock::Micros;
use serde_json::{Map, Value, json};

/// How often a write is retried when a concurrent write to the same resource won.
const WRITE_ATTEMPTS: usize = 4;

pub(crate) trait Resource: Clone + Sized {
    const KIND: Kind;
    fn id(&self) -> &str;
    fn version(&self) -> Micros;
    fn created(&self) -> Micros;
    fn deleted(&self) -> bool;
    fn tombstone(&self, version: Micros) -> Self;
    fn to_json(&self, base: &str) -> Value;
    fn from_doc(
        doc: &Map<String, Value>,
        id: String,
        prev: Option<&Self>,
        created: Micros,
        version: Micros,
    ) -> Result<Self, ScimError>;
    fn load(store: &dyn ScimStore, id: &str) -> Option<Self>;
    fn load_all(store: &dyn ScimStore) -> Vec<Self>;
    fn save(store: &dyn ScimStore, rec: Self, expected: Option<Micros>) -> Result<(), StoreError>;
    fn check_unique(&self, _store: &dyn ScimStore) -> Result<(), ScimError> {
        Ok(())
    }
    /// The only records a filter can match, when an index answers it (the per-user
    /// `userName eq` lookups IdPs make on every sync); None: scan everything.
    fn narrow(_store: &dyn ScimStore, _f: &filter::Filter) -> Option<Vec<Self>> {
        None
    }
    fn effects(store: &dyn ScimStore, before: Option<&Self>, after: &Self) -> Vec<Effect>;
    /// Entra wants 204 from a group PATCH; Okta accepts it; users get their new state.
    const PATCH_RETURNS_BODY: bool;
}

impl Resource for UserRecord {
    const KIND: Kind = Kind::User;
    const PATCH_RETURNS_BODY: bool = true;
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> Micros {
        self.version
    }
    fn created(&self) -> Micros {
        self.created
    }
    fn deleted(&self) -> bool {
        self.deleted
    }
    fn tombstone(&self, version: Micros) -> Self {
        UserRecord {
            deleted: true,
            active: false,
            version,
            ..self.clone()
        }
    }
    fn to_json(&self, base: &str) -> Value {
        model::user_json(self, base)
    }
    fn from_doc(
        doc: &Map<String, Value>,
        id: String,
        prev: Option<&Self>,
        created: Micros,
        version: Micros,
    ) -> Result<Self, ScimError> {
        model::user_from(doc, id, prev, created, version)
    }
    fn load(store: &dyn ScimStore, id: &str) -> Option<Self> {
        store.user(id)
    }
    fn load_all(store: &dyn ScimStore) -> Vec<Self> {
        store.users()
    }
    fn save(store: &dyn ScimStore, rec: Self, expected: Option<Micros>) -> Result<(), StoreError> {
        store.put_user(rec, expected)
    }
    fn check_unique(&self, store: &dyn ScimStore) -> Result<(), ScimError> {
        let name = model::norm_email(&self.user_name);
        // users_by_email matches userName too, and is what the gateway indexes.
        let taken = store
            .users_by_email(&name)
            .iter()
            .any(|u| !u.deleted && u.id != self.id && model::norm_email(&u.user_name) == name);
        if taken {
            return Err(ScimError::uniqueness(format!(
                "userName {:?} is already taken",
                self.user_name
            )));
        }
        Ok(())
    }
    fn effects(_store: &dyn ScimStore, before: Option<&Self>, after: &Self) -> Vec<Effect> {
        user_effects(before, after)
    }
    fn narrow(store: &dyn ScimStore, f: &filter::Filter) -> Option<Vec<Self>> {
        use filter::{AttrPath, Filter, Op};
        match f {
            Filter::Cmp(
                AttrPath {
                    attr: "userName",
                    sub: None,
                    ..
                },
                Op::Eq,
                Value::String(s),
            ) => Some(store.users_by_email(s)),
            Filter::Cmp(
                AttrPath {
                    attr: "id",
                    sub: None,
                    ..
                },
                Op::Eq,
                Value::String(s),
            ) => Some(store.user(s).into_iter().collect()),
            Filter::And(a, b) => Self::narrow(store, a).or_else(|| Self::narrow(store, b)),
            _ => None,
        }
    }
}

impl Resource for GroupRecord {
    const KIND: Kind = Kind::Group;
    const PATCH_RETURNS_BODY: bool = false;
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> Micros {
        self.version
    }
    fn created(&self) -> Micros {
        self.created
    }
    fn deleted(&self) -> bool {
        self.deleted
    }
    fn tombstone(&self, version: Micros) -> Self {
        GroupRecord {
            deleted: true,
            version,
            ..self.clone()
        }
    }
    fn to_json(&self, base: &str) -> Value {
        model::group_json(self, base)
    }
    fn from_doc(
        doc: &Map<String, Value>,
        id: String,
        prev: Option<&Self>,
        created: Micros,
        version: Micros,
    ) -> Result<Self, ScimError> {
        model::group_from(doc, id, prev, created, version)
    }
    fn load(store: &dyn ScimStore, id: &str) -> Option<Self> {
        store.group(id)
    }
    fn load_all(store: &dyn ScimStore) -> Vec<Self> {
        store.groups()
    }
    fn save(store: &dyn ScimStore, rec: Self, expected: Option<Micros>) -> Result<(), StoreError> {
        store.put_group(rec, expected)
    }
    fn effects(store: &dyn ScimStore, before: Option<&Self>, after: &Self) -> Vec<Effect> {
        group_effects(store, before, after)
    }
}

/// Query parameters that shape responses.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub filter: Option<String>,
    pub start_index: Option<String>,
    pub count: Option<String>,
    pub attributes: Vec<String>,
    pub excluded: Vec<String>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut out = Query::default();
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            match k.to_ascii_lowercase().as_str() {
                "filter" => out.filter = Some(v.into_owned()),
                "startindex" => out.start_index = Some(v.into_owned()),
                "count" => out.count = Some(v.into_owned()),
                "attributes" => out.attributes = list(v.as_ref()),
                "excludedattributes" => out.excluded = list(v.as_ref()),
                // Entra appends flags such as aadOptscim062020 to every request.
                _ => {}
            }
        }
        out
    }

    /// Applies `attributes` / `excludedAttributes` to one resource (top-level names).
    pub fn project(&self, mut v: Value) -> Value {
        let Value::Object(m) = &mut v else { return v };
        let always = |k: &str| matches!(k, "id" | "schemas");
        let base = |a: &str| {
            let a = a.rsplit_once(':').map(|(_, n)| n).unwrap_or(a);
            a.split('.').next().unwrap_or(a).to_ascii_lowercase()
        };
        if !self.attributes.is_empty() {
            let keep: Vec<String> = self.attributes.iter().map(|a| base(a)).collect();
            m.retain(|k, _| always(k) || keep.contains(&k.to_ascii_lowercase()));
        }
        let drop: Vec<String> = self.excluded.iter().map(|a| base(a)).collect();
        m.retain(|k, _| always(k) || !drop.contains(&k.to_ascii_lowercase()));
        v
    }
}

fn int_param(name: &str, v: &Option<String>, default: i64) -> Result<i64, ScimError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer"))),
    }
}

pub(crate) fn list<R: Resource>(
    store: &dyn ScimStore,
    s: &ScimSettings,
    q: &Query,
) -> Result<ScimOutcome, ScimError> {
    let f = match q.filter.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => Some(filter::parse(R::KIND, text)?),
        _ => None,
    };
    // RFC 7644 §3.4.2.4: startIndex < 1 means 1, a negative count means 0.
    let start = int_param("startIndex", &q.start_index, 1)?.max(1) as usize;
    let count =
        int_param("count", &q.count, s.max_results as i64)?.clamp(0, s.max_results as i64) as usize;
    let candidates = f.as_ref().and_then(|f| R::narrow(store, f));
    let mut all: Vec<R> = candidates
        .unwrap_or_else(|| R::load_all(store))
        .into_iter()
        .filter(|r| !r.deleted())
        .collect();
    all.sort_by(|a, b| (a.created(), a.id()).cmp(&(b.created(), b.id())));
    let matching: Vec<Value> = all
        .iter()
        .map(|r| r.to_json(&s.base_url))
        .filter(|j| f.as_ref().is_none_or(|f| filter::matches(f, j)))
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|j| q.project(j))
        .collect();
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    Ok(ScimOutcome::json(200, body))
}

fn live<R: Resource>(store: &dyn ScimStore, id: &str) -> Result<R, ScimError> {
    R::load(store, id)
        .filter(|r| !r.deleted())
        .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", R::KIND.resource_type())))
}

fn respond<R: Resource>(
    status: u16,
    r: &R,
    s: &ScimSettings,
    q: &Query,
    effects: Vec<Effect>,
) -> ScimOutcome {
    let mut out = ScimOutcome::json(status, q.project(r.to_json(&s.base_url)));
    out.etag = Some(model::etag(r.version()));
    out.effects = effects;
    out
}

pub(crate) fn get<R: Resource>(
    store: &dyn ScimStore,
    s: &ScimSettings,
    id: &str,
    q: &Query,
) -> Result<ScimOutcome, ScimError> {
    let r: R = live(store, id)?;
    Ok(respond(200, &r, s, q, Vec::new()))
}

pub(crate) fn create<R: Resource>(
    store: &dyn ScimStore,
    s: &ScimSettings,
    body: &Value,
    q: &Query,
    now: Micros,
) -> Result<ScimOutcome, ScimError> {
    let doc = canonical(R::KIND, body)?;
    let rec = R::from_doc(&doc, new_id(), None, now, now)?;
    rec.check_unique(store)?;
    R::save(store, rec.clone(), None).map_err(store_error)?;
    let effects = R::effects(store, None, &rec);
    let mut out = respond(201, &rec, s, q, effects);
    out.location = Some(model::location(&s.base_url, R::KIND, rec.id()));
    Ok(out)
}

/// Read, change, conditional put; again if another write won in between.
fn update<R: Resource>(
    store: &dyn ScimStore,
    id: &str,
    now: Micros,
    change: impl Fn(&R, Micros) -> Result<R, ScimError>,
) -> Result<(R, Vec<Effect>), ScimError> {
    for _ in 0..WRITE_ATTEMPTS {
        let prev: R = live(store, id)?;
        let version = now.max(prev.version() + 1);
        let next = change(&prev, version)?;
        if !next.deleted() {
            next.check_unique(store)?;
        }
        match R::save(store, next.clone(), Some(prev.version())) {
            Ok(()) => {
                let effects = R::effects(store, Some(&prev), &next);
                return Ok((next, effects));
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(ScimError::unavailable(
        "the resource is being changed concurrently; retry",
    ))
}

pub(crate) fn replace<R: Resource>(
    store: &dyn ScimStore,
    s: &ScimSettings,
    id: &str,
    body: &Value,
    q: &Query,
    now: Micros,
) -> Result<ScimOutcome, ScimError> {
    let doc = canonical(R::KIND, body)?;
    let (rec, effects) = update(store, id, now, |prev: &R, v| {
        R::from_doc(&doc, prev.id().to_string(), Some(prev), prev.created(), v)
    })?;
    Ok(respond(200, &rec, s, q, effects))
}

pub(crate) fn patch<R: Resource>(
    store: &dyn ScimStore,
    s: &ScimSettings,
    id: &str,
    body: &Value,
    q: &Query,
    now: Micros,
) -> Result<ScimOutcome, ScimError> {
    let ops = patch::parse_request(body)?;
    let (rec, effects) = update(store, id, now, |prev: &R, v| {
        let mut doc = canonical(R::KIND, &prev.to_json(""))?;
        for op in &ops {
            patch::apply(R::KIND, &mut doc, op)?;
        }
        if R::KIND == Kind::User && !doc.contains_key("active") {
            return Err(ScimError::mutability("active cannot be removed"));
        }
        // The document is complete: an attribute PATCH removed is gone (no `prev`).
        R::from_doc(&doc, prev.id().to_string(), None, prev.created(), v)
    })?;
    if R::PATCH_RETURNS_BODY {
        return Ok(respond(200, &rec, s, q, effects));
    }
    let mut out = ScimOutcome::empty(204);
    out.etag = Some(model::etag(rec.version()));
    out.effects = effects;
    Ok(out)
}

pub(crate) fn delete<R: Resource>(
    store: &dyn ScimStore,
    id: &str,
    now: Micros,
) -> Result<ScimOutcome, ScimError> {
    let (_, effects) = update(store, id, now, |prev: &R, v| Ok(prev.tombstone(v)))?;
    let mut out = ScimOutcome::empty(204);
    out.effects = effects;
    Ok(out)
}

fn store_error(e: StoreError) -> ScimError {
    match e {
        StoreError::Conflict => {
            ScimError::unavailable("the resource is being changed concurrently; retry")
        }
        StoreError::Unavailable(m) => ScimError::unavailable(m),
    }
}

/// A random resource id in UUID form.
fn new_id() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
