//! The console's look: the page shell (header, tabs, stylesheet), its security headers
//! (a strict Content-Security-Policy whose only inline style and script carry a fresh
//! nonce per response, no framing, referrer kept to this origin), and small helpers for
//! times, badges and buttons. Everything shown passes through [`esc`].

use crate::clock::Micros;
use crate::timefmt::format_rfc3339_millis;
use crate::web::body::{Body, full, with_type};
pub use crate::web::html::esc;
use http::{HeaderValue, Response, StatusCode, header};

/// The tabs of the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Users,
    Apps,
    Groups,
    Bulk,
    Audit,
    Cluster,
    Emergency,
    None,
}

const TABS: [(Tab, &str, &str); 7] = [
    (Tab::Users, "/admin/users", "Users"),
    (Tab::Apps, "/admin/apps", "Apps"),
    (Tab::Groups, "/admin/groups", "Groups"),
    (Tab::Bulk, "/admin/bulk", "Bulk"),
    (Tab::Audit, "/admin/audit", "Audit"),
    (Tab::Cluster, "/admin/cluster", "Cluster"),
    (Tab::Emergency, "/admin/emergency", "Emergency"),
];

/// Who is looking, for the header.
pub struct Viewer<'a> {
    pub email: &'a str,
    pub node: &'a str,
    /// Seconds since the admin signed in (None: unknown), and how old a sign-in may be
    /// for an action.
    pub signed_in_secs: Option<i64>,
    pub reauth_secs: u64,
}

/// One page: its title, the tab it belongs to, its body (already escaped HTML) and an
/// optional script (trusted, static).
pub struct Page<'a> {
    pub title: &'a str,
    pub tab: Tab,
    pub body: String,
    pub script: Option<&'static str>,
}

const CSS: &str = r#"
:root{--ink:#1d2330;--muted:#5b6475;--line:#e2e5ea;--bg:#f4f5f7;--accent:#2451b2;--danger:#b3261e;--ok:#1e7d3c;--warn:#8a5a00}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink);margin:0;font-size:15px;line-height:1.45}
a{color:var(--accent)}
header.top{background:var(--ink);color:#fff;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;justify-content:space-between;padding:.7rem 1.4rem}
header.top .brand{font-weight:700;font-size:1.05rem;letter-spacing:.01em}
header.top .brand span{font-weight:400;opacity:.75}
header.top .who{font-size:.85rem;opacity:.9}
nav.tabs{background:#fff;border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;gap:0 .2rem;padding:0 1rem}
nav.tabs a{display:inline-block;padding:.75rem .8rem;color:var(--muted);text-decoration:none;border-bottom:3px solid transparent;font-weight:500}
nav.tabs a.on{color:var(--ink);border-bottom-color:var(--accent)}
nav.tabs a.emergency{color:var(--danger);margin-left:auto}
nav.tabs a.emergency.on{border-bottom-color:var(--danger)}
main{max-width:1180px;margin:1.4rem auto;padding:0 1.2rem}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:1.1rem 1.3rem;margin-bottom:1rem}
.card.danger{border-color:#f0b8b4;background:#fffafa}
.muted{color:var(--muted)} .small{font-size:.85rem}
.table-wrap{overflow-x:auto;background:#fff;border:1px solid var(--line);border-radius:10px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.55rem .7rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.78rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);background:#fafbfc}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;overflow-wrap:anywhere}
.ua{min-width:12rem;max-width:24rem;overflow-wrap:break-word;font-size:.85rem}
.wrap{overflow-wrap:break-word}
.nowrap,td.node,td code{white-space:nowrap}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.78rem;font-weight:600;border:1px solid transparent;margin:0 .2rem .15rem 0;white-space:nowrap}
.b-ok{background:#e6f4ea;color:var(--ok)} .b-bad{background:#fdecec;color:var(--danger)}
.b-warn{background:#fff4e0;color:var(--warn)} .b-info{background:#e8eefb;color:var(--accent)}
.b-grey{background:#eef0f3;color:var(--muted)}
.btn{display:inline-block;border:1px solid var(--accent);background:var(--accent);color:#fff;border-radius:6px;padding:.45rem .85rem;font-size:.9rem;text-decoration:none;cursor:pointer;font-weight:500;line-height:1.3}
.btn.ghost{background:#fff;color:var(--accent)}
.btn.danger{background:var(--danger);border-color:var(--danger);color:#fff}
.btn.small{padding:.25rem .55rem;font-size:.82rem;white-space:nowrap}
.btn.outline{background:#fff;color:var(--danger);border-color:#e3aaa5}
.btn.outline:hover{background:#fdecec}
.btn:disabled{opacity:.5;cursor:default}
form.inline{display:inline}
.bar{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin:0 0 1rem}
.bar .grow{flex:1 1 16rem;width:auto}
.bar select{width:auto;flex:0 0 auto}
input[type=text],input[type=search],select,textarea{font:inherit;padding:.45rem .6rem;border:1px solid #c5cad3;border-radius:6px;background:#fff;width:100%}
textarea{min-height:7rem;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
label{display:block;font-weight:600;margin:.8rem 0 .3rem}
.notice{padding:.7rem .9rem;border-radius:8px;margin:0 0 1rem}
.notice.ok{background:#e6f4ea;color:#14532d} .notice.bad{background:#fdecec;color:#7f1d1d} .notice.warn{background:#fff4e0;color:#713f12}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1.2rem;margin:0}
dl.facts dt{color:var(--muted)} dl.facts dd{margin:0}
.word{font-family:ui-monospace,Menlo,Consolas,monospace;font-weight:700;font-size:1.2rem;background:#fdecec;color:var(--danger);padding:.1rem .5rem;border-radius:6px;letter-spacing:.08em}
.actions{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin-top:1rem}
@media (max-width:700px){
 body{font-size:14px} main{padding:0 .7rem;margin-top:1rem} header.top{padding:.6rem .8rem}
 nav.tabs{padding:0 .4rem} nav.tabs a{padding:.6rem .55rem} nav.tabs a.emergency{margin-left:0}
 th,td{padding:.45rem .5rem} table:not(.stack) .hide-sm{display:none} .card{padding:.9rem}
 table.stack thead{display:none}
 table.stack tr{display:block;border-bottom:1px solid var(--line);padding:.45rem 0}
 table.stack tr:last-child{border-bottom:0}
 table.stack td{display:block;position:relative;border:0;padding:.2rem .8rem .2rem 8.4rem;text-align:left;min-width:0;max-width:none;min-height:1.6rem}
 table.stack td[data-label]::before{content:attr(data-label);position:absolute;left:.8rem;top:.3rem;width:7.2rem;color:var(--muted);font-size:.74rem;text-transform:uppercase;letter-spacing:.03em}
 table.stack td code,table.stack time{white-space:normal;overflow-wrap:anywhere}
}
"#;

fn tabs(active: Tab) -> String {
    TABS.iter()
        .map(|(tab, href, label)| {
            let mut class = String::new();
            if *tab == active {
                class.push_str("on");
            }
            if *tab == Tab::Emergency {
                class.push_str(" emergency");
            }
            format!(r#"<a href="{href}" class="{}">{label}</a>"#, class.trim())
        })
        .collect()
}

fn header_html(v: Option<&Viewer<'_>>) -> String {
    let who = v.map_or(String::new(), |v| {
        let since = v
            .signed_in_secs
            .map_or("sign-in time unknown".to_string(), |s| {
                format!("signed in {} ago", duration_text(s.max(0) as u64))
            });
        format!(
            r#"<div class="who">{} &middot; node {} &middot; {}</div>"#,
            esc(v.email),
            esc(v.node),
            esc(&since),
        )
    });
    format!(
        r#"<header class="top"><div class="brand">Portcullis <span>admin console</span></div>{who}</header>"#
    )
}

/// The whole document for `page`, with `nonce` on its style and script.
pub fn document(page: &Page<'_>, viewer: Option<&Viewer<'_>>, nonce: &str) -> String {
    let nav = if viewer.is_some() {
        format!(r#"<nav class="tabs">{}</nav>"#, tabs(page.tab))
    } else {
        String::new()
    };
    let script = page
        .script
        .map(|s| format!(r#"<script nonce="{nonce}">{s}</script>"#))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} &middot; Portcullis console</title>
<style nonce="{nonce}">{CSS}</style></head>
<body>{header}{nav}<main>{body}</main>{script}</body></html>"#,
        title = esc(page.title),
        header = header_html(viewer),
        body = page.body,
    )
}

/// A console HTML response with its security headers.
pub fn respond(status: StatusCode, page: &Page<'_>, viewer: Option<&Viewer<'_>>) -> Response<Body> {
    let nonce = crate::secrets::random_b64(18);
    let html = document(page, viewer, &nonce);
    let mut r = with_type(status, "text/html; charset=utf-8", full(html));
    secure(&mut r, &nonce);
    r
}

/// The policy for a response whose inline style and script carry `nonce`.
pub fn csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// Security headers every console response carries.
pub fn secure(r: &mut Response<Body>, nonce: &str) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp(nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not no-referrer: with it, browsers send `Origin: null` on form posts, and the
    // console checks the Origin of every post.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A page that says no (or what to do next), outside the tabs when there is no viewer.
pub fn message(
    status: StatusCode,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
    viewer: Option<&Viewer<'_>>,
) -> Response<Body> {
    let link = link
        .map(|(href, label)| {
            format!(
                r#"<div class="actions"><a class="btn" href="{}">{}</a></div>"#,
                esc(href),
                esc(label)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<div class="card"><h1>{}</h1><p>{}</p>{link}</div>"#,
        esc(title),
        esc(text)
    );
    respond(
        status,
        &Page {
            title,
            tab: Tab::None,
            body,
            script: None,
        },
        viewer,
    )
}

/// "3 min", "2 h 5 min", "4 days".
pub fn duration_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => match (s / 3600, (s % 3600) / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        s => format!("{} days", s / 86_400),
    }
}

/// A time as people read it (UTC, to the second) with how long ago (or from now).
pub fn when(us: Micros, now: Micros) -> String {
    if us <= 0 {
        return "&mdash;".into();
    }
    let iso = format_rfc3339_millis(us);
    let shown = format!(
        r#"<span class="nowrap">{}</span> <span class="nowrap">{} UTC</span>"#,
        &iso[..10],
        &iso[11..19]
    );
    let delta = (now - us) / 1_000_000;
    let rel = if delta >= 0 {
        format!("{} ago", duration_text(delta as u64))
    } else {
        format!("in {}", duration_text((-delta) as u64))
    };
    format!(
        r#"<time datetime="{iso}">{shown}</time> <span class="muted small nowrap">({rel})</span>"#
    )
}

/// "1 session", "2 sessions": `n` and the noun, singular or plural.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn badge(class: &str, text: &str) -> String {
    format!(r#"<span class="badge {class}">{}</span>"#, esc(text))
}

/// A list of groups (or anything) as grey badges; a dash when empty.
pub fn chips(items: &[String]) -> String {
    if items.is_empty() {
        return r#"<span class="muted">&mdash;</span>"#.into();
    }
    items.iter().map(|g| badge("b-grey", g)).collect()
}

/// A table row whose cells are labelled for the stacked (phone) layout: each cell is
/// (label, class, content already escaped).
pub fn tr(attrs: &str, cells: &[(&str, &str, String)]) -> String {
    let mut out = format!("<tr{attrs}>");
    for (label, class, content) in cells {
        let class = if class.is_empty() {
            String::new()
        } else {
            format!(r#" class="{class}""#)
        };
        out.push_str(&format!(
            r#"<td data-label="{label}"{class}>{content}</td>"#
        ));
    }
    out.push_str("</tr>");
    out
}

/// A link that looks like a button.
pub fn link_button(href: &str, label: &str, class: &str) -> String {
    format!(
        r#"<a class="btn {class}" href="{}">{}</a>"#,
        esc(href),
        esc(label)
    )
}

/// `/admin/confirm?scope=..&target=..` (several targets allowed).
pub fn confirm_href(scope: &str, targets: &[&str]) -> String {
    let mut pairs = vec![("scope", scope)];
    pairs.extend(targets.iter().map(|t| ("target", *t)));
    format!("/admin/confirm?{}", crate::web::query::encode(&pairs))
}

/// `/admin/user?email=..`.
pub fn user_href(email: &str) -> String {
    format!(
        "/admin/user?{}",
        crate::web::query::encode(&[("email", email)])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(duration_text(5), "5 s");
        assert_eq!(duration_text(3600 * 2 + 300), "2 h 5 min");
        assert_eq!(duration_text(86_400 * 3), "3 days");
        let t = 1_795_339_800_123_000;
        let w = when(t, t + 180_000_000);
        assert!(
            w.contains(r#"2026-11-22</span> <span class="nowrap">09:30:00 UTC"#)
                && w.contains("3 min ago"),
            "{w}"
        );
        assert!(when(t + 60_000_000, t).contains("in 1 min"));
    }

    #[test]
    fn document_uses_the_nonce_and_escapes() {
        let page = Page {
            title: "<x>",
            tab: Tab::Users,
            body: String::new(),
            script: Some("1"),
        };
        let v = Viewer {
            email: "a<b@x.com",
            node: "n",
            signed_in_secs: Some(5),
            reauth_secs: 900,
        };
        let d = document(&page, Some(&v), "NONCE");
        assert!(d.contains(r#"<style nonce="NONCE">"#) && d.contains(r#"<script nonce="NONCE">1"#));
        assert!(d.contains("&lt;x&gt;") && d.contains("a&lt;b@x.com"));
        assert!(!csp("N").contains("unsafe-inline"));
    }
}
