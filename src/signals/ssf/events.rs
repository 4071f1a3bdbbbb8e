//! From a verified SET's claims to what the gateway should do: subjects (RFC 9493 and
//! SSF 1.0 §3) and the CAEP 1.0 / RISC 1.0 / SSF event types this receiver acts on.
//! Unknown event types, and known ones whose subject names nobody the gateway can
//! find, become [`SsfAction::Ignore`]: acknowledged, reported, never applied.

use serde::Serialize;
use serde_json::{Map, Value};

pub const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
pub const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

const MAX_ID: usize = 512;

/// A user named by a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum SsfUser {
    /// Lower-cased address.
    Email { email: String },
    /// The user that identity provider `iss` signed in with subject `sub`.
    IssSub { iss: String, sub: String },
}

/// A session named by a subject: the transmitter's (the IdP's) session id, which the
/// gateway maps to the global sessions it created from that IdP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SsfSession {
    pub id: String,
    /// Set when the session subject was of format `iss_sub`.
    pub iss: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SsfAction {
    /// SSF verification event: acknowledge (the caller may compare `state`).
    Verify { state: Option<String> },
    /// CAEP session-revoked with a session subject: end that session.
    EndSession {
        session: SsfSession,
        user: Option<SsfUser>,
    },
    /// End all of the user's sessions and tokens (CAEP session-revoked for a user,
    /// credential-change; RISC account-credential-change-required, sessions-revoked).
    EndAllSessions { user: SsfUser },
    /// End the user's app tokens so they are re-issued with fresh claims; the global
    /// session stays (CAEP token-claims-change, assurance-level-change).
    EndAppTokens { user: SsfUser },
    /// RISC account-disabled: end everything and refuse sign-in until enabled.
    Disable { user: SsfUser },
    /// RISC account-enabled: sign-in allowed again.
    Enable { user: SsfUser },
    /// RISC account-purged: end everything and forget the user.
    Purge { user: SsfUser },
    /// Acknowledged and reported, never applied.
    Ignore { why: String },
}

/// One event of a SET with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SsfEvent {
    pub event_type: String,
    pub action: SsfAction,
    /// `reason_admin` (English or the first language given), for the audit line.
    pub reason: Option<String>,
}

/// A parsed subject identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Email(String),
    IssSub {
        iss: String,
        sub: String,
    },
    Opaque(String),
    Complex {
        user: Option<Box<Subject>>,
        session: Option<Box<Subject>>,
    },
    /// A format this receiver cannot act on (phone_number, did, jwt_id...).
    Other(String),
}

fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_ID)
}

/// Parses a subject identifier object; None when it is not one.
pub fn parse_subject(v: &Value) -> Option<Subject> {
    let o = v.as_object()?;
    let format = o.get("format")?.as_str()?;
    Some(match format {
        "email" => Subject::Email(field(o, "email")?.trim().to_ascii_lowercase()),
        "iss_sub" => Subject::IssSub {
            iss: field(o, "iss")?.to_string(),
            sub: field(o, "sub")?.to_string(),
        },
        "opaque" => Subject::Opaque(field(o, "id")?.to_string()),
        "account" => {
            let uri = field(o, "uri")?;
            let email = uri.strip_prefix("acct:")?;
            Subject::Email(email.trim().to_ascii_lowercase())
        }
        "aliases" => {
            let ids = o.get("identifiers")?.as_array()?;
            let parsed: Vec<Subject> = ids.iter().filter_map(parse_subject).collect();
            parsed
                .iter()
                .find(|s| matches!(s, Subject::Email(_)))
                .or_else(|| parsed.iter().find(|s| matches!(s, Subject::IssSub { .. })))
                .cloned()
                .unwrap_or(Subject::Other("aliases".into()))
        }
        "complex" => Subject::Complex {
            user: o.get("user").and_then(parse_subject).map(Box::new),
            session: o.get("session").and_then(parse_subject).map(Box::new),
        },
        other => Subject::Other(other.to_string()),
    })
}

fn user_of(s: &Subject) -> Option<SsfUser> {
    match s {
        Subject::Email(email) => Some(SsfUser::Email {
            email: email.clone(),
        }),
        Subject::IssSub { iss, sub } => Some(SsfUser::IssSub {
            iss: iss.clone(),
            sub: sub.clone(),
        }),
        Subject::Complex { user: Some(u), .. } => user_of(u),
        _ => None,
    }
}

fn session_of(s: &Subject) -> Option<SsfSession> {
    match s {
        Subject::Opaque(id) => Some(SsfSession {
            id: id.clone(),
            iss: None,
        }),
        Subject::IssSub { iss, sub } => Some(SsfSession {
            id: sub.clone(),
            iss: Some(iss.clone()),
        }),
        _ => None,
    }
}

fn reason(event: &Value) -> Option<String> {
    let r = event
        .get("reason_admin")
        .or_else(|| event.get("reason_user"))?;
    let text = match r {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("en")
            .or_else(|| m.values().next())
            .and_then(Value::as_str)?
            .to_string(),
        _ => return None,
    };
    Some(text.chars().filter(|c| !c.is_control()).take(256).collect())
}

/// What one event asks for. `top` is the SET's `sub_id`; older CAEP drafts put the
/// subject in the event's own `subject` member instead.
pub fn action(event_type: &str, event: &Value, top: Option<&Subject>) -> SsfEvent {
    let own = event.get("subject").and_then(parse_subject);
    let subject = top.or(own.as_ref());
    let act = decide(event_type, event, subject);
    SsfEvent {
        event_type: event_type.to_string(),
        action: act,
        reason: reason(event),
    }
}

fn needs_user(subject: Option<&Subject>, f: impl FnOnce(SsfUser) -> SsfAction) -> SsfAction {
    match subject.and_then(user_of) {
        Some(u) => f(u),
        None => SsfAction::Ignore {
            why: "the subject names no user this gateway can find".into(),
        },
    }
}

fn decide(event_type: &str, event: &Value, subject: Option<&Subject>) -> SsfAction {
    if event_type == VERIFICATION {
        let state = event
            .get("state")
            .and_then(Value::as_str)
            .map(str::to_string);
        return SsfAction::Verify { state };
    }
    let caep = event_type.strip_prefix(CAEP);
    let risc = event_type.strip_prefix(RISC);
    match (caep, risc) {
        (Some("session-revoked"), _) => session_revoked(subject),
        (Some("credential-change"), _)
        | (_, Some("account-credential-change-required"))
        | (_, Some("sessions-revoked")) => {
            needs_user(subject, |user| SsfAction::EndAllSessions { user })
        }
        (Some("token-claims-change"), _) | (Some("assurance-level-change"), _) => {
            needs_user(subject, |user| SsfAction::EndAppTokens { user })
        }
        (_, Some("account-disabled")) => needs_user(subject, |user| SsfAction::Disable { user }),
        (_, Some("account-enabled")) => needs_user(subject, |user| SsfAction::Enable { user }),
        (_, Some("account-purged")) => needs_user(subject, |user| SsfAction::Purge { user }),
        _ => SsfAction::Ignore {
            why: "event type not acted on".into(),
        },
    }
}

fn session_revoked(subject: Option<&Subject>) -> SsfAction {
    match subject {
        // CAEP 1.0 §3.1's first example: a simple opaque subject is the session id.
        Some(Subject::Opaque(id)) => SsfAction::EndSession {
            session: SsfSession {
                id: id.clone(),
                iss: None,
            },
            user: None,
        },
        Some(Subject::Complex {
            session: Some(s),
            user,
        }) => match session_of(s) {
            Some(session) => SsfAction::EndSession {
                session,
                user: user.as_deref().and_then(user_of),
            },
            None => needs_user(subject, |user| SsfAction::EndAllSessions { user }),
        },
        // A user (with or without device/tenant members): all sessions derived from it.
        _ => needs_user(subject, |user| SsfAction::EndAllSessions { user }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn act(event_type: &str, sub_id: Value) -> SsfAction {
        let top = parse_subject(&sub_id);
        action(event_type, &json!({"event_timestamp": 1}), top.as_ref()).action
    }
    fn email(e: &str) -> SsfUser {
        SsfUser::Email { email: e.into() }
    }

    #[test]
    fn caep_session_revoked_examples() {
        // CAEP 1.0 §3.1.2, the three examples.
        let opaque = json!({"format": "opaque", "id": "dMTlD|1600802906337.16|16008.16"});
        assert_eq!(
            act(&format!("{CAEP}session-revoked"), opaque),
            SsfAction::EndSession {
                session: SsfSession {
                    id: "dMTlD|1600802906337.16|16008.16".into(),
                    iss: None
                },
                user: None
            }
        );
        let complex = json!({"format": "complex",
            "session": {"format": "opaque", "id": "dMTlD|1600802906337.16|16008.16"},
            "user": {"format": "iss_sub", "iss": "https://idp.example.com/123456789/", "sub": "99beb27c"},
            "tenant": {"format": "opaque", "id": "123456789"}});
        let SsfAction::EndSession {
            user: Some(SsfUser::IssSub { sub, .. }),
            ..
        } = act(&format!("{CAEP}session-revoked"), complex)
        else {
            panic!("not a session end with a user")
        };
        assert_eq!(sub, "99beb27c");
        let user_device = json!({"format": "complex",
            "user": {"format": "iss_sub", "iss": "https://idp.example.com/123456789/", "sub": "jane.smith@example.com"},
            "device": {"format": "iss_sub", "iss": "https://idp.example.com/123456789/", "sub": "e9297990"}});
        assert!(matches!(
            act(&format!("{CAEP}session-revoked"), user_device),
            SsfAction::EndAllSessions { .. }
        ));
    }

    #[test]
    fn event_table() {
        let user = json!({"format": "email", "email": "Ada@Example.com"});
        let cases = [
            (
                format!("{CAEP}credential-change"),
                SsfAction::EndAllSessions {
                    user: email("ada@example.com"),
                },
            ),
            (
                format!("{RISC}account-credential-change-required"),
                SsfAction::EndAllSessions {
                    user: email("ada@example.com"),
                },
            ),
            (
                format!("{CAEP}token-claims-change"),
                SsfAction::EndAppTokens {
                    user: email("ada@example.com"),
                },
            ),
            (
                format!("{CAEP}assurance-level-change"),
                SsfAction::EndAppTokens {
                    user: email("ada@example.com"),
                },
            ),
            (
                format!("{RISC}account-disabled"),
                SsfAction::Disable {
                    user: email("ada@example.com"),
                },
            ),
            (
                format!("{RISC}account-enabled"),
                SsfAction::Enable {
                    user: email("ada@example.com"),
                },
            ),
            (
                format!("{RISC}account-purged"),
                SsfAction::Purge {
                    user: email("ada@example.com"),
                },
            ),
        ];
        for (uri, want) in cases {
            assert_eq!(act(&uri, user.clone()), want, "{uri}");
        }
        for uri in [
            format!("{CAEP}device-compliance-change"),
            format!("{RISC}credential-compromise"),
            "urn:x:custom".into(),
        ] {
            assert!(
                matches!(act(&uri, user.clone()), SsfAction::Ignore { .. }),
                "{uri}"
            );
        }
        // An opaque subject names no user: credential-change cannot be applied.
        let opaque = json!({"format": "opaque", "id": "x"});
        assert!(matches!(
            act(&format!("{CAEP}credential-change"), opaque),
            SsfAction::Ignore { .. }
        ));
        let acct = json!({"format": "account", "uri": "acct:Bob@Example.com"});
        assert_eq!(
            act(&format!("{RISC}account-disabled"), acct),
            SsfAction::Disable {
                user: email("bob@example.com")
            }
        );
        let aliases = json!({"format": "aliases", "identifiers": [{"format": "phone_number", "phone_number": "+1"},
                                                                 {"format": "email", "email": "c@d.e"}]});
        assert_eq!(
            act(&format!("{RISC}account-purged"), aliases),
            SsfAction::Purge {
                user: email("c@d.e")
            }
        );
    }

    #[test]
    fn older_drafts_put_the_subject_in_the_event_and_reasons_are_kept() {
        let ev = json!({"subject": {"format": "email", "email": "x@y.z"},
                        "reason_admin": {"de": "Richtlinie", "en": "Landspeed Policy Violation: C076E82F"}});
        let e = action(&format!("{CAEP}credential-change"), &ev, None);
        assert_eq!(
            e.action,
            SsfAction::EndAllSessions {
                user: email("x@y.z")
            }
        );
        assert_eq!(
            e.reason.as_deref(),
            Some("Landspeed Policy Violation: C076E82F")
        );
        let v = action(VERIFICATION, &json!({"state": "VGhpcw"}), None);
        assert_eq!(
            v.action,
            SsfAction::Verify {
                state: Some("VGhpcw".into())
            }
        );
    }
}
