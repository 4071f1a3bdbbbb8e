//! Query strings and form bodies (`application/x-www-form-urlencoded`).

use std::collections::HashMap;

/// Every `name=value` pair, decoded; a repeated name keeps its last value.
pub fn map(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The first value of `name`, decoded.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `name=value&...`, encoded.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_and_encodes() {
        let q = Some("a=1&b=x%20y&a=2");
        assert_eq!(super::map(q).get("a").map(String::as_str), Some("2"));
        assert_eq!(super::param(q, "a").as_deref(), Some("1"));
        assert_eq!(super::param(q, "b").as_deref(), Some("x y"));
        assert_eq!(super::param(None, "a"), None);
        assert_eq!(super::encode(&[("r", "a b&c")]), "r=a+b%26c");
    }
}
