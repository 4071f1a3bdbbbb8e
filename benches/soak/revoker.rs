//! Revocations of every scope at random times through every entry point: the control
//! API (`POST /v1/revocations`, `/v1/revocations/bulk` as JSON or CSV,
//! `DELETE /v1/sessions/{sid}`) on random nodes, a browser's logout through the
//! balancer, and the `portcullis revoke` CLI. Each goes into the history before it is
//! sent and is settled with what came back. After each acknowledgement a prober sends a
//! token the revocation covers (and nothing else does) to every node directly until
//! each refuses it: the propagation figures come from there.

use crate::browser::send;
use crate::ctx::Ctx;
use crate::fleet::{ADMIN_TOKEN, APPS, GROUPS};
use crate::history::{Ack, Entry, Exchange, Kind, Revocation, Scope, Via, excerpt};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Mean time between revocations.
const MEAN_GAP: f64 = 1.5;

pub async fn run(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let max_all = (ctx.minutes / 4.0).ceil().max(1.0) as usize;
    let (mut alls, mut last_all) = (0, Instant::now());
    let mut probers = JoinSet::new();
    let mut k = 0usize;
    while !ctx.load_over() {
        let u: f64 = rng.random_range(0.0001..1.0);
        let gap = (-u.ln() * MEAN_GAP).clamp(0.2, 6.0);
        ctx.pause(Duration::from_secs_f64(gap)).await;
        if ctx.load_over() {
            break;
        }
        k += 1;
        let node = rng.random_range(0..ctx.fleet.n());
        let reason = format!("soak-{k}");
        let allow_all = alls < max_all && last_all.elapsed() > Duration::from_secs(45);
        let acked: Vec<usize> = match rng.random_range(0..100) {
            0..30 => match pick(&ctx, &mut rng, allow_all) {
                Some((scope, target)) => {
                    if scope == Scope::All {
                        (alls, last_all) = (alls + 1, Instant::now());
                    }
                    api(&ctx, node, scope, &target, &reason).await
                }
                None => vec![],
            },
            30..45 => match pick(&ctx, &mut rng, allow_all) {
                Some((scope, target)) => {
                    if scope == Scope::All {
                        (alls, last_all) = (alls + 1, Instant::now());
                    }
                    cli(&ctx, node, scope, &target, &reason).await
                }
                None => vec![],
            },
            45..60 => bulk(&ctx, &mut rng, node, &reason).await,
            60..80 => match recent_sid(&ctx, &mut rng) {
                Some(sid) => delete_session(&ctx, node, &sid).await,
                None => vec![],
            },
            _ => logout(&ctx, &mut rng).await,
        };
        if let Some(&r) = acked.first() {
            ctx.after_ack(node, r);
        }
        for r in acked {
            probers.spawn(probe(ctx.clone(), r));
        }
        while probers.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while probers.join_next().await.is_some() {}
    })
    .await;
}

/// A scope and target: a recent session, a user, a group, an app, or everything.
fn pick(ctx: &Ctx, rng: &mut StdRng, allow_all: bool) -> Option<(Scope, String)> {
    Some(match rng.random_range(0..100) {
        0..35 => (Scope::Session, recent_sid(ctx, rng)?),
        35..65 => (
            Scope::User,
            ctx.users[rng.random_range(0..ctx.users.len())]
                .email
                .clone(),
        ),
        65..80 => (
            Scope::Group,
            GROUPS[rng.random_range(0..GROUPS.len())].to_string(),
        ),
        80..95 => (
            Scope::App,
            APPS[rng.random_range(0..APPS.len())].0.to_string(),
        ),
        _ if allow_all => (Scope::All, String::new()),
        _ => (
            Scope::User,
            ctx.users[rng.random_range(0..ctx.users.len())]
                .email
                .clone(),
        ),
    })
}

fn recent_token(ctx: &Ctx, rng: &mut StdRng) -> Option<usize> {
    let recent = ctx.recent_tokens();
    (!recent.is_empty()).then(|| recent[rng.random_range(0..recent.len())])
}

fn recent_sid(ctx: &Ctx, rng: &mut StdRng) -> Option<String> {
    let t = recent_token(ctx, rng)?;
    Some(ctx.rec.with(|h| h.tokens[t].sid.clone()))
}

fn start(
    ctx: &Ctx,
    scope: Scope,
    target: &str,
    entry: Entry,
    reason: &str,
    node: Option<usize>,
) -> usize {
    ctx.rec.revocation(Revocation {
        n: 0,
        scope,
        target: target.to_string(),
        entry,
        reason: reason.to_string(),
        node,
        sent: ctx.rec.now(),
        done: 0,
        ack: None,
        failure: String::new(),
    })
}

/// The acknowledgement in a revocation outcome (`POST /v1/revocations`, DELETE, CLI).
fn ack_of(status: u16, v: &Value) -> Option<Ack> {
    let nb = v["not_before_us"].as_i64()?;
    Some(Ack {
        status,
        id: v["id"].as_str()?.to_string(),
        nb_lo: nb,
        nb_hi: nb,
        peers_acked: v["peers_acked"].as_u64().unwrap_or(0),
        peers: v["peers"].as_u64().unwrap_or(0),
        propagated: v["propagated"].as_bool().unwrap_or(true),
    })
}

/// Settles revocation `n` from an HTTP answer; returns it if acknowledged.
fn settle_http(
    ctx: &Ctx,
    n: usize,
    what: &str,
    node: usize,
    r: Result<(u16, String), String>,
) -> Vec<usize> {
    let done = ctx.rec.now();
    match r {
        Ok((s, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if s >= 500 {
                let sent = ctx.rec.with(|h| h.revocations[n].sent);
                ctx.rec.exchange(Exchange {
                    what: what.to_string(),
                    via: Via::Node(node),
                    sent,
                    done,
                    status: s,
                    reason: excerpt(&body, 240),
                });
            }
            match ack_of(s, &v).filter(|_| s == 200 || s == 202) {
                Some(a) => {
                    ctx.rec.settle(n, done, Some(a), String::new());
                    vec![n]
                }
                None => {
                    ctx.rec
                        .settle(n, done, None, format!("{s}: {}", excerpt(&body, 200)));
                    vec![]
                }
            }
        }
        Err(e) => {
            ctx.rec.settle(n, done, None, e);
            vec![]
        }
    }
}

async fn text_of(r: reqwest::Result<reqwest::Response>) -> Result<(u16, String), String> {
    match r {
        Ok(r) => {
            let s = r.status().as_u16();
            Ok((s, r.text().await.unwrap_or_default()))
        }
        Err(e) => Err(excerpt(&format!("{e}"), 200)),
    }
}

async fn api(ctx: &Ctx, node: usize, scope: Scope, target: &str, reason: &str) -> Vec<usize> {
    let n = start(ctx, scope, target, Entry::Api, reason, Some(node));
    let r = ctx
        .control
        .post(ctx.fleet.control_url(node, "/v1/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"scope": scope.as_str(), "target": target, "reason": reason}))
        .send()
        .await;
    settle_http(ctx, n, "POST /v1/revocations", node, text_of(r).await)
}

async fn delete_session(ctx: &Ctx, node: usize, sid: &str) -> Vec<usize> {
    // DELETE takes no reason (the gateway records "deleted by admin").
    let n = start(
        ctx,
        Scope::Session,
        sid,
        Entry::DeleteSession,
        "deleted by admin",
        Some(node),
    );
    let r = ctx
        .control
        .delete(ctx.fleet.control_url(node, &format!("/v1/sessions/{sid}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;
    settle_http(ctx, n, "DELETE /v1/sessions", node, text_of(r).await)
}

async fn cli(ctx: &Ctx, node: usize, scope: Scope, target: &str, reason: &str) -> Vec<usize> {
    let n = start(ctx, scope, target, Entry::Cli, reason, Some(node));
    let mut cmd = tokio::process::Command::new(&ctx.binary);
    cmd.arg("revoke");
    match scope {
        Scope::All => cmd.arg("--all"),
        s => cmd.arg(format!("--{}", s.as_str())).arg(target),
    };
    cmd.args(["--reason", reason, "--json", "--url"])
        .arg(ctx.fleet.control_url(node, ""))
        .args(["--token", ADMIN_TOKEN])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await;
    let done = ctx.rec.now();
    let out = match out {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            ctx.rec.settle(n, done, None, format!("cli: {e}"));
            return vec![];
        }
        Err(_) => {
            ctx.rec.settle(n, done, None, "cli: timed out".into());
            return vec![];
        }
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let status = if v["propagated"] == false { 202 } else { 200 };
    match ack_of(status, &v).filter(|_| out.status.success()) {
        Some(a) => {
            ctx.rec.settle(n, done, Some(a), String::new());
            vec![n]
        }
        None => {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains(" 5") && err.contains("status") {
                ctx.rec.exchange(Exchange {
                    what: "portcullis revoke".into(),
                    via: Via::Node(node),
                    sent: ctx.rec.with(|h| h.revocations[n].sent),
                    done,
                    status: 500,
                    reason: excerpt(&err, 240),
                });
            }
            ctx.rec
                .settle(n, done, None, format!("cli: {}", excerpt(&err, 200)));
            vec![]
        }
    }
}

/// One to three users at once, as JSON or as CSV.
async fn bulk(ctx: &Ctx, rng: &mut StdRng, node: usize, reason: &str) -> Vec<usize> {
    let k = rng.random_range(1..=3);
    let mut emails: Vec<String> = (0..k)
        .map(|_| {
            ctx.users[rng.random_range(0..ctx.users.len())]
                .email
                .clone()
        })
        .collect();
    emails.sort();
    emails.dedup();
    let ns: Vec<usize> = emails
        .iter()
        .map(|e| start(ctx, Scope::User, e, Entry::Bulk, reason, Some(node)))
        .collect();
    let url = ctx.fleet.control_url(node, "/v1/revocations/bulk");
    let rb = ctx.control.post(&url).bearer_auth(ADMIN_TOKEN);
    let rb = if rng.random_bool(0.5) {
        rb.json(&json!({"users": emails, "reason": reason}))
    } else {
        let csv = format!(
            "name,user\n{}\n",
            emails
                .iter()
                .map(|e| format!("x,{e}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        rb.query(&[("reason", reason)])
            .header("content-type", "text/csv")
            .body(csv)
    };
    let r = text_of(rb.send().await).await;
    let done = ctx.rec.now();
    let (s, body) = match r {
        Ok(x) => x,
        Err(e) => {
            for n in ns {
                ctx.rec.settle(n, done, None, e.clone());
            }
            return vec![];
        }
    };
    if s >= 500 {
        ctx.rec.exchange(Exchange {
            what: "POST /v1/revocations/bulk".into(),
            via: Via::Node(node),
            sent: ctx.rec.with(|h| h.revocations[ns[0]].sent),
            done,
            status: s,
            reason: excerpt(&body, 240),
        });
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let rows = v["results"].as_array().cloned().unwrap_or_default();
    let mut acked = Vec::new();
    for (n, email) in ns.into_iter().zip(&emails) {
        let row = rows
            .iter()
            .find(|r| r["user"].as_str() == Some(email.as_str()));
        match row.and_then(|r| bulk_ack(s, r)) {
            Some(a) => {
                ctx.rec.settle(n, done, Some(a), String::new());
                acked.push(n);
            }
            None => ctx
                .rec
                .settle(n, done, None, format!("{s}: {}", excerpt(&body, 200))),
        }
    }
    acked
}

/// A bulk row's acknowledgement: its instant is only given to the millisecond.
fn bulk_ack(status: u16, row: &Value) -> Option<Ack> {
    if status != 200 || row["status"] != "revoked" {
        return None;
    }
    let ms = parse_rfc3339_us(row["not_before"].as_str()?)?;
    Some(Ack {
        status,
        id: row["id"].as_str()?.to_string(),
        nb_lo: ms,
        nb_hi: ms + 999,
        peers_acked: row["peers_acked"].as_u64().unwrap_or(0),
        peers: 0,
        // Not said per row: the checker assumes it waited in the outbox.
        propagated: false,
    })
}

pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_micros())
}

/// A browser signs out (`/.portcullis/logout` through the balancer, with its cookies).
/// The page does not say when the revocation took effect: the instant is read from the
/// audit log of the node that took it at the end (until then it counts as unacknowledged).
async fn logout(ctx: &Ctx, rng: &mut StdRng) -> Vec<usize> {
    let Some(tok) = recent_token(ctx, rng) else {
        return vec![];
    };
    let (sid, cookie, host) = ctx.rec.with(|h| {
        let t = &h.tokens[tok];
        (t.sid.clone(), t.cookie.clone(), t.host.clone())
    });
    let n = start(ctx, Scope::Session, &sid, Entry::Logout, "logout", None);
    let url = format!("https://{host}:{}/.portcullis/logout", ctx.lb_port);
    let r = ctx
        .lb_client
        .get(&url)
        .header("cookie", cookie)
        .header("accept", "text/html")
        .send()
        .await;
    let done = ctx.rec.now();
    match text_of(r).await {
        Ok((200, _)) => ctx.rec.settle(n, done, None, "logout page shown".into()),
        Ok((s, body)) => {
            if s >= 500 {
                ctx.rec.exchange(Exchange {
                    what: "GET /.portcullis/logout".into(),
                    via: Via::Balancer,
                    sent: ctx.rec.with(|h| h.revocations[n].sent),
                    done,
                    status: s,
                    reason: excerpt(&body, 240),
                });
            }
            ctx.rec
                .settle(n, done, None, format!("{s}: {}", excerpt(&body, 200)));
        }
        Err(e) => ctx.rec.settle(n, done, None, e),
    }
    vec![]
}

/// Sends a token that revocation `r` covers, and no other revocation may cover, to
/// every node until each refuses it: every few milliseconds for the first 300 ms, then
/// every 100 ms, for at most 15 s (a node cut off may learn it only later).
async fn probe(ctx: Arc<Ctx>, r: usize) {
    let Some(tok) = probe_token(&ctx, r) else {
        return;
    };
    let mut set = JoinSet::new();
    for i in 0..ctx.fleet.n() {
        let ctx = ctx.clone();
        set.spawn(async move {
            let t0 = Instant::now();
            loop {
                let s = send(&ctx, tok, Via::Node(i), Kind::Probe).await;
                if s == 401 || t0.elapsed() > Duration::from_secs(15) {
                    return;
                }
                let wait = match s {
                    0 => 200,
                    _ if t0.elapsed() < Duration::from_millis(300) => 3,
                    _ => 100,
                };
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// The newest recent token that `r` covers and that no other revocation sent so far
/// may cover.
fn probe_token(ctx: &Ctx, r: usize) -> Option<usize> {
    let recent = ctx.recent_tokens();
    ctx.rec.with(|h| {
        let rv = &h.revocations[r];
        let nb = rv.ack.as_ref()?.nb_lo;
        recent.iter().rev().copied().find(|&t| {
            let tok = &h.tokens[t];
            tok.in_scope(rv.scope, &rv.target)
                && tok.iat_us < nb
                && !h.revocations.iter().any(|o| {
                    o.n != r && tok.in_scope(o.scope, &o.target) && tok.iat_us <= h.nb_hi(o)
                })
        })
    })
}
