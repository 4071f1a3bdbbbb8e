//! SCIM 2.0 service provider (RFC 7643/7644) as plain data in, plain data out:
//! [`Scim::handle`] takes a method, the path after `/scim/v2`, the query and the body
//! bytes, reads and writes resources through a [`ScimStore`], and returns a status, a
//! JSON body (`application/scim+json`) and the [`Effect`]s the write has on access
//! (deactivation, deletion, group changes) for the revocation engine to apply.
//!
//! Accepts what Okta and Microsoft Entra really send (see `patch` and the fixtures in
//! `tests/fixtures/scim/`). Authentication (the bearer token of the `[scim]` table) is
//! the caller's, before calling `handle`.

mod discovery;
mod effects;
mod error;
mod filter;
mod model;
mod patch;
mod resources;
mod schema;
mod store;

#[cfg(test)]
mod tests;

pub use effects::{Effect, groups_of, is_inactive};
pub use error::ScimError;
pub use model::{Email, GroupRecord, Name, UserRecord};
pub use store::{MemoryStore, ScimStore, StoreError};

use crate::clock::Micros;
use http::Method;
use resources::Query;
use serde_json::Value;

/// The content type of every SCIM response body.
pub const CONTENT_TYPE: &str = "application/scim+json";

#[derive(Debug, Clone)]
pub struct ScimSettings {
    /// Prefix of `meta.location` and the `Location` header: `/scim/v2` (relative) or
    /// `https://auth.example.com/scim/v2`.
    pub base_url: String,
    /// Largest page a list returns (`count` is capped to it).
    pub max_results: usize,
}

impl Default for ScimSettings {
    fn default() -> Self {
        Self {
            base_url: "/scim/v2".into(),
            max_results: 200,
        }
    }
}

/// One SCIM request, already authenticated.
#[derive(Debug, Clone)]
pub struct ScimRequest<'a> {
    pub method: Method,
    /// The path after `/scim/v2`, e.g. `/Users/2819c223`.
    pub path: &'a str,
    /// The raw query string without `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// The answer: send `status`, `body` (if any) as `application/scim+json`, `Location` and
/// `ETag` when set; apply `effects` (they are already durable in the store).
#[derive(Debug, Clone, PartialEq)]
pub struct ScimOutcome {
    pub status: u16,
    pub body: Option<Value>,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub effects: Vec<Effect>,
}

impl ScimOutcome {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            location: None,
            etag: None,
            effects: Vec::new(),
        }
    }
    fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            location: None,
            etag: None,
            effects: Vec::new(),
        }
    }
}

impl From<ScimError> for ScimOutcome {
    fn from(e: ScimError) -> Self {
        ScimOutcome::json(e.status, e.body())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Scim {
    settings: ScimSettings,
}

impl Scim {
    pub fn new(settings: ScimSettings) -> Self {
        Self { settings }
    }

    pub fn settings(&self) -> &ScimSettings {
        &self.settings
    }

    /// Serves one request. Never panics on input; every refusal is a SCIM error body.
    pub fn handle(&self, store: &dyn ScimStore, req: &ScimRequest<'_>, now: Micros) -> ScimOutcome {
        match self.route(store, req, now) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(status = e.status, scim_type = ?e.scim_type, detail = %e.detail, "SCIM request refused");
                e.into()
            }
        }
    }

    fn route(
        &self,
        store: &dyn ScimStore,
        req: &ScimRequest<'_>,
        now: Micros,
    ) -> Result<ScimOutcome, ScimError> {
        let s = &self.settings;
        let q = Query::parse(req.query);
        let segs: Vec<&str> = req.path.split('/').filter(|p| !p.is_empty()).collect();
        let m = &req.method;
        let endpoint = segs.first().map(|e| e.to_ascii_lowercase());
        match (endpoint.as_deref(), segs.get(1).copied(), segs.len()) {
            (Some("users"), id, n) if n <= 2 => {
                self.resource::<UserRecord>(store, m, id, req.body, &q, now)
            }
            (Some("groups"), id, n) if n <= 2 => {
                self.resource::<GroupRecord>(store, m, id, req.body, &q, now)
            }
            (Some("serviceproviderconfig"), None, 1) => {
                get_only(m)?;
                Ok(ScimOutcome::json(
                    200,
                    discovery::service_provider_config(&s.base_url, s.max_results),
                ))
            }
            (Some("resourcetypes"), name, n) if n <= 2 => {
                get_only(m)?;
                Ok(ScimOutcome::json(
                    200,
                    discovery::resource_types(&s.base_url, name)?,
                ))
            }
            (Some("schemas"), id, n) if n <= 2 => {
                get_only(m)?;
                Ok(ScimOutcome::json(200, discovery::schemas(&s.base_url, id)?))
            }
            _ => Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}",
                req.path
            ))),
        }
    }

    fn resource<R: resources::Resource>(
        &self,
        store: &dyn ScimStore,
        m: &Method,
        id: Option<&str>,
        body: &[u8],
        q: &Query,
        now: Micros,
    ) -> Result<ScimOutcome, ScimError> {
        let s = &self.settings;
        match (m.as_str(), id) {
            ("GET", None) => resources::list::<R>(store, s, q),
            ("POST", None) => resources::create::<R>(store, s, &json_body(body)?, q, now),
            ("GET", Some(id)) => resources::get::<R>(store, s, id, q),
            ("PUT", Some(id)) => resources::replace::<R>(store, s, id, &json_body(body)?, q, now),
            ("PATCH", Some(id)) => resources::patch::<R>(store, s, id, &json_body(body)?, q, now),
            ("DELETE", Some(id)) => resources::delete::<R>(store, id, now),
            _ => Err(ScimError::method_not_allowed(format!(
                "{m} is not allowed here"
            ))),
        }
    }
}

fn get_only(m: &Method) -> Result<(), ScimError> {
    if *m == Method::GET {
        Ok(())
    } else {
        Err(ScimError::method_not_allowed(format!(
            "{m} is not allowed here"
        )))
    }
}

fn json_body(body: &[u8]) -> Result<Value, ScimError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("invalid JSON: {e}")))
}
