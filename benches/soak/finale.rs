//! After the load phase: heal everything, then kill -9 every node and Redis at once and
//! start them again, wait until every node is ready and the nodes agree, and check
//! that nothing acknowledged was lost: every node lists each acknowledged revocation
//! (or a later one of the same scope and target) in `GET /v1/revocations`, and refuses
//! a token it covers. Then read the audit logs (the instant of each logout, which the
//! logout page does not show) and the access logs (which node answered each request
//! sent through the balancer).

use crate::browser::send;
use crate::check::{Listing, key_of, lost_in_listings};
use crate::ctx::Ctx;
use crate::fleet::ADMIN_TOKEN;
use crate::history::{Ack, Entry, History, Kind, Scope, Via};
use crate::revoker::parse_rfc3339_us;
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub async fn run(ctx: &Ctx) {
    let problems = restart_everything(ctx).await;
    ctx.rec.with(|h| h.problems.extend(problems));
    let listings = converged_listings(ctx).await;
    ctx.rec.with(|h| {
        resolve_logouts(
            h,
            &ctx.fleet
                .nodes
                .iter()
                .map(|n| n.dir.clone())
                .collect::<Vec<_>>(),
        );
        exact_instants(h, &listings);
    });
    ctx.rec.with(|h| {
        let lost = lost_in_listings(h, &listings);
        h.lost.extend(lost)
    });
    final_refusals(ctx).await;
    attribute(ctx);
}

async fn restart_everything(ctx: &Ctx) -> Vec<String> {
    let f = &ctx.fleet;
    let mut problems = Vec::new();
    f.heal_all();
    for i in 0..f.n() {
        f.set_clock(i, 0);
    }
    // Everything dies at once, nothing shuts down cleanly.
    for i in 0..f.n() {
        if f.running(i) {
            f.kill(i, "final kill -9 of every process");
        }
    }
    if f.backend == crate::fleet::Backend::Redis {
        if f.redis_running() {
            f.redis_kill();
        }
        if let Err(e) = f.redis_start().await {
            problems.push(format!("redis did not restart: {e}"));
        }
    }
    let ups = join_all((0..f.n()).map(|i| f.restart(i, "final restart"))).await;
    for (i, r) in ups.into_iter().enumerate() {
        if let Err(e) = r {
            problems.push(format!("node {} did not restart: {e}", i + 1));
        }
    }
    for i in 0..f.n() {
        if let Err(e) = f.wait_ready(i, Duration::from_secs(60)).await {
            problems.push(format!(
                "node {} not ready after the final restart: {e}",
                i + 1
            ));
        }
    }
    problems
}

async fn listing(ctx: &Ctx, i: usize) -> Option<Listing> {
    let r = ctx
        .control
        .get(ctx.fleet.control_url(i, "/v1/revocations?limit=100000"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    let mut out = Listing::new();
    for e in v["revocations"].as_array()? {
        let scope = Scope::parse(e["scope"].as_str()?)?;
        let target = match scope {
            Scope::All => String::new(),
            _ => e["target"].as_str()?.to_string(),
        };
        let nb = e["not_before_us"].as_i64()?;
        out.insert(
            (scope, target),
            (nb, e["id"].as_str().unwrap_or("").to_string()),
        );
    }
    Some(out)
}

/// Every node's listing, once they agree (or after 30 s).
async fn converged_listings(ctx: &Ctx) -> Vec<Listing> {
    let t0 = Instant::now();
    loop {
        let all = join_all((0..ctx.fleet.n()).map(|i| listing(ctx, i))).await;
        let all: Vec<Listing> = all.into_iter().map(Option::unwrap_or_default).collect();
        let agree = all.windows(2).all(|w| w[0] == w[1]) && !all[0].is_empty();
        if agree || t0.elapsed() > Duration::from_secs(30) {
            if !agree {
                ctx.rec.with(|h| {
                    h.problems.push(
                        "the nodes' revocation lists still differed 30 s after the final restart"
                            .into(),
                    )
                });
            }
            return all;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A logout's instant and node, from the audit log of the node that took it.
fn resolve_logouts(h: &mut History, dirs: &[std::path::PathBuf]) {
    let mut lines: Vec<(usize, Value)> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let text = std::fs::read_to_string(d.join("state/audit.log")).unwrap_or_default();
        lines.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["reason"] == "logout" && v["scope"] == "session")
                .map(|v| (i, v)),
        );
    }
    let wall0 = h.wall0_us;
    for r in h
        .revocations
        .iter_mut()
        .filter(|r| r.entry == Entry::Logout && r.done > 0)
    {
        let found = lines
            .iter()
            .filter(|(_, v)| v["target"].as_str() == Some(r.target.as_str()))
            .filter_map(|(i, v)| {
                Some((
                    *i,
                    parse_rfc3339_us(v["time"].as_str()?)?,
                    v["id"].as_str()?.to_string(),
                ))
            })
            .min_by_key(|(_, t, _)| (t - (wall0 + r.done)).abs());
        if let Some((i, t, id)) = found
            && r.failure == "logout page shown"
        {
            r.node = Some(i);
            r.failure.clear();
            r.ack = Some(Ack {
                status: 200,
                id,
                nb_lo: t,
                nb_hi: t + 999,
                peers_acked: 0,
                peers: 0,
                propagated: false,
            });
        }
    }
}

/// Where a node lists an acknowledged revocation under its own id, its exact instant.
fn exact_instants(h: &mut History, listings: &[Listing]) {
    for r in h.revocations.iter_mut() {
        let key = key_of(r);
        let Some(a) = r.ack.as_mut() else { continue };
        if let Some((nb, _)) = listings
            .iter()
            .find_map(|l| l.get(&key).filter(|(_, id)| *id == a.id))
        {
            a.nb_lo = *nb;
            a.nb_hi = *nb;
        }
    }
}

/// Sends, for every acknowledged revocation, a token it covers to every node: each
/// must refuse it.
async fn final_refusals(ctx: &Ctx) {
    let picks: Vec<(usize, usize)> = ctx.rec.with(|h| {
        h.revocations
            .iter()
            .filter_map(|r| {
                let a = r.ack.as_ref()?;
                let t = h
                    .tokens
                    .iter()
                    .rposition(|t| t.in_scope(r.scope, &r.target) && t.iat_us < a.nb_lo)?;
                Some((r.n, t))
            })
            .collect()
    });
    for chunk in picks.chunks(8) {
        let checks = chunk.iter().flat_map(|&(r, t)| {
            (0..ctx.fleet.n()).map(move |i| async move { (r, t, i, refused(ctx, t, i).await) })
        });
        for (r, t, i, status) in join_all(checks).await {
            if status != 401 {
                ctx.rec.with(|h| {
                    h.lost.push(format!(
                        "node {} answered {status} (not 401) at the end for token {} covered by revocation #{r} ({} {:?})",
                        i + 1,
                        h.tokens[t].jti,
                        h.revocations[r].scope.as_str(),
                        h.revocations[r].target
                    ))
                });
            }
        }
    }
}

/// The token sent to node `i` until it answers (a few tries): its status.
async fn refused(ctx: &Ctx, tok: usize, i: usize) -> u16 {
    let mut s = 0;
    for _ in 0..5 {
        s = send(ctx, tok, Via::Node(i), Kind::Final).await;
        if s != 0 && s != 503 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s
}

/// Which node answered each request sent through the balancer, from the access logs
/// (each request has a path of its own).
fn attribute(ctx: &Ctx) {
    let mut by_id: HashMap<u64, usize> = HashMap::new();
    for (i, n) in ctx.fleet.nodes.iter().enumerate() {
        let text = std::fs::read_to_string(n.dir.join("access.log")).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.split(" path=/soak/").nth(1) else {
                continue;
            };
            if let Some(id) = rest.split(' ').next().and_then(|s| s.parse().ok()) {
                by_id.insert(id, i);
            }
        }
    }
    ctx.rec.with(|h| {
        for q in h.requests.iter_mut().filter(|q| q.via == Via::Balancer) {
            q.node = by_id.get(&q.id).copied();
        }
    });
}
