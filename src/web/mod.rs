//! HTTP building blocks every part of the gateway shares: the body type and response
//! builders, Set-Cookie values, HTML pages and escaping, query strings, the request
//! context and a route table. A leaf: it uses nothing else of the crate.

pub mod body;
pub mod body_deadline;
pub mod cookie;
pub mod ctx;
pub mod html;
pub mod query;
pub mod router;
