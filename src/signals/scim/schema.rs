//! The attributes this service provider models, per resource type, with their shape
//! (simple, complex, multi-valued complex) and case-exactness. PATCH paths and filters
//! are resolved against this table: names are matched case-insensitively (RFC 7643
//! §2.1) and mapped to their canonical spelling; anything not listed is either
//! read-only (`id`, `meta`, `schemas`: ignored on write) or not modelled (ignored on
//! write, refused in filters).

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
#[cfg(test)]
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Simple,
    Complex(&'static [&'static str]),
    MultiComplex(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub name: &'static str,
    pub shape: Shape,
    pub case_exact: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

const NAME_SUBS: &[&str] = &[
    "formatted",
    "familyName",
    "givenName",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
];
const EMAIL_SUBS: &[&str] = &["value", "type", "primary", "display"];
const MEMBER_SUBS: &[&str] = &["value", "display", "type", "$ref"];
const META_SUBS: &[&str] = &[
    "resourceType",
    "created",
    "lastModified",
    "location",
    "version",
];

const fn simple(name: &'static str, case_exact: bool) -> Attr {
    Attr {
        name,
        shape: Shape::Simple,
        case_exact,
    }
}

const USER_ATTRS: &[Attr] = &[
    simple("id", true),
    simple("externalId", true),
    simple("userName", false),
    simple("displayName", false),
    simple("active", false),
    Attr {
        name: "name",
        shape: Shape::Complex(NAME_SUBS),
        case_exact: false,
    },
    Attr {
        name: "emails",
        shape: Shape::MultiComplex(EMAIL_SUBS),
        case_exact: false,
    },
    Attr {
        name: "meta",
        shape: Shape::Complex(META_SUBS),
        case_exact: true,
    },
];

const GROUP_ATTRS: &[Attr] = &[
    simple("id", true),
    simple("externalId", true),
    simple("displayName", false),
    Attr {
        name: "members",
        shape: Shape::MultiComplex(MEMBER_SUBS),
        // Member values are resource ids.
        case_exact: true,
    },
    Attr {
        name: "meta",
        shape: Shape::Complex(META_SUBS),
        case_exact: true,
    },
];

impl Kind {
    pub fn attrs(self) -> &'static [Attr] {
        match self {
            Kind::User => USER_ATTRS,
            Kind::Group => GROUP_ATTRS,
        }
    }
    pub fn schema_urn(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }

    /// The attribute called `name` (any case, with or without this schema's URN prefix).
    pub fn attr(self, name: &str) -> Option<&'static Attr> {
        let name = self.strip_urn(name)?;
        self.attrs()
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// `urn:...:User:userName` → `userName`; another schema's URN → None.
    pub fn strip_urn(self, name: &str) -> Option<&str> {
        if !name.starts_with("urn:") {
            return Some(name);
        }
        let urn = self.schema_urn();
        let head = name.get(..urn.len())?;
        if head.eq_ignore_ascii_case(urn) && name.as_bytes().get(urn.len()) == Some(&b':') {
            Some(&name[urn.len() + 1..])
        } else {
            None
        }
    }
}

impl Attr {
    pub fn sub(&self, name: &str) -> Option<&'static str> {
        match self.shape {
            Shape::Simple => None,
            Shape::Complex(subs) | Shape::MultiComplex(subs) => {
                subs.iter().copied().find(|s| s.eq_ignore_ascii_case(name))
            }
        }
    }
    pub fn is_read_only(&self) -> bool {
        matches!(self.name, "id" | "meta")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively_and_through_the_schema_urn() {
        assert_eq!(
            Kind::User.attr("USERNAME").map(|a| a.name),
            Some("userName")
        );
        let urn = "urn:ietf:params:scim:schemas:core:2.0:User:active";
        assert_eq!(Kind::User.attr(urn).map(|a| a.name), Some("active"));
        let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
        assert!(Kind::User.attr(ext).is_none());
        assert!(Kind::Group.attr("userName").is_none());
        let emails = Kind::User.attr("emails").unwrap();
        assert_eq!(emails.sub("VALUE"), Some("value"));
        assert_eq!(emails.sub("nope"), None);
    }
}
