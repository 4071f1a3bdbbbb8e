//! A route table: path patterns (matchit syntax, e.g. `/v1/sessions/{sid}`) with the
//! methods each accepts. Unknown paths are "not found"; a known path with another
//! method is "method not allowed" with the methods it does allow, so no router keeps
//! its own 405 list. Off the hot path (control port, auth domain, reserved paths), so a
//! radix-tree crate is plenty.

use http::Method;

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path exists; these are the methods it takes (for the `Allow` header).
    MethodNotAllowed(Vec<Method>),
}

/// A matched route: the handler's value and the path's named parameters.
pub struct Found<'r, 'p, H> {
    pub handler: &'r H,
    pub params: matchit::Params<'r, 'p>,
}

impl<H> Found<'_, '_, H> {
    /// A named path parameter (`{sid}` in the pattern), empty when absent.
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).unwrap_or("")
    }
}

pub struct Routes<H> {
    router: matchit::Router<Vec<(Method, H)>>,
    /// Patterns in insertion order, to add methods to an existing path.
    patterns: Vec<String>,
    pending: Vec<(String, Vec<(Method, H)>)>,
}

impl<H> Default for Routes<H> {
    fn default() -> Self {
        Self {
            router: matchit::Router::new(),
            patterns: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl<H: Clone> Routes<H> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` for `methods` on `pattern`. Patterns are compiled by `build`.
    pub fn route(mut self, methods: &[Method], pattern: &str, handler: H) -> Self {
        let entry = match self.pending.iter_mut().find(|(p, _)| p == pattern) {
            Some((_, e)) => e,
            None => {
                self.pending.push((pattern.to_string(), Vec::new()));
                &mut self.pending.last_mut().expect("just pushed").1
            }
        };
        for m in methods {
            entry.push((m.clone(), handler.clone()));
        }
        self
    }

    /// Compiles the table. A bad or conflicting pattern is a programming error in a
    /// static table, caught by the table's unit test.
    pub fn build(mut self) -> Result<Self, matchit::InsertError> {
        for (pattern, methods) in std::mem::take(&mut self.pending) {
            self.router.insert(pattern.clone(), methods)?;
            self.patterns.push(pattern);
        }
        Ok(self)
    }

    pub fn find<'r, 'p>(
        &'r self,
        method: &Method,
        path: &'p str,
    ) -> Result<Found<'r, 'p, H>, Miss> {
        let m = self.router.at(path).map_err(|_| Miss::NotFound)?;
        let handler = m
            .value
            .iter()
            .find(|(allowed, _)| allowed == method)
            .map(|(_, h)| h);
        match handler {
            Some(handler) => Ok(Found {
                handler,
                params: m.params,
            }),
            None => Err(Miss::MethodNotAllowed(
                m.value.iter().map(|(m, _)| m.clone()).collect(),
            )),
        }
    }
}

/// The `Allow` header value for a 405.
pub fn allow_header(methods: &[Method]) -> String {
    let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_routes_params_and_405s() {
        let r = Routes::new()
            .route(&[Method::GET], "/a", 1)
            .route(&[Method::POST], "/a", 2)
            .route(&[Method::DELETE], "/s/{sid}", 3)
            .build()
            .unwrap();
        assert_eq!(*r.find(&Method::GET, "/a").ok().unwrap().handler, 1);
        assert_eq!(*r.find(&Method::POST, "/a").ok().unwrap().handler, 2);
        let f = r.find(&Method::DELETE, "/s/abc").ok().unwrap();
        assert_eq!((*f.handler, f.param("sid")), (3, "abc"));
        assert_eq!(
            r.find(&Method::PUT, "/a").err(),
            Some(Miss::MethodNotAllowed(vec![Method::GET, Method::POST]))
        );
        assert_eq!(r.find(&Method::GET, "/b").err(), Some(Miss::NotFound));
        assert_eq!(allow_header(&[Method::GET, Method::POST]), "GET, POST");
    }
}
