//! The fault schedule: one fault at a time, at random, with healthy spells between
//! them: kill -9 of one or two nodes (restarted after a while; or of the node that
//! acknowledges the next revocation, right after its acknowledgement), partitions between
//! nodes (one node cut off from all, a pair cut both ways, one direction only), and on
//! the Redis backend kill -9 of Redis and cuts between nodes and Redis. Beside it, clock
//! steps: now and then one node's clock jumps to a random offset within `max_skew_ms`
//! (well within `[session] clock_skew`, 5 minutes by default).

use crate::ctx::Ctx;
use crate::fleet::Backend;
use crate::history::Event;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(usize),
    /// kill -9 of the node that acknowledges the next revocation, right after it did.
    KillOnAck,
    KillTwo(usize, usize),
    Isolate(usize),
    Pair(usize, usize),
    OneWay(usize, usize),
    KillAndIsolate(usize, usize),
    RedisKill,
    RedisCut(usize),
    RedisCutTwo(usize, usize),
    RedisKillAndNode(usize),
}

/// Runs faults until the load phase ends; returns what went wrong doing so (a node
/// that did not come back after a restart, say).
pub async fn run(ctx: Arc<Ctx>, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let clock = tokio::spawn(clock_steps(ctx.clone(), seed ^ 0x5eed));
    let mut problems = Vec::new();
    // A quiet start, so browsers are signed in before the first fault.
    ctx.pause(Duration::from_secs(3)).await;
    while !ctx.load_over() {
        ctx.pause(Duration::from_millis(rng.random_range(2000..6000)))
            .await;
        if ctx.load_over() {
            break;
        }
        let f = pick(&ctx, &mut rng);
        ctx.rec.event(Event::FaultStart, format!("{f:?}"));
        apply(&ctx, f);
        ctx.pause(Duration::from_millis(rng.random_range(1000..6000)))
            .await;
        if let Err(e) = undo(&ctx, f).await {
            problems.push(format!("{f:?}: {e}"));
        }
        ctx.rec.event(Event::FaultEnd, format!("{f:?}"));
    }
    let _ = clock.await;
    problems
}

fn pick(ctx: &Ctx, rng: &mut StdRng) -> Fault {
    let n = ctx.fleet.n();
    let a = rng.random_range(0..n);
    let b = (a + rng.random_range(1..n)) % n;
    match ctx.fleet.backend {
        Backend::Peers => match rng.random_range(0..100) {
            0..20 => Fault::Kill(a),
            20..30 => Fault::KillOnAck,
            30..38 => Fault::KillTwo(a, b),
            38..58 => Fault::Isolate(a),
            58..76 => Fault::Pair(a, b),
            76..92 => Fault::OneWay(a, b),
            _ => Fault::KillAndIsolate(a, b),
        },
        Backend::Redis => match rng.random_range(0..100) {
            0..20 => Fault::Kill(a),
            20..30 => Fault::KillOnAck,
            30..38 => Fault::KillTwo(a, b),
            38..60 => Fault::RedisKill,
            60..82 => Fault::RedisCut(a),
            82..92 => Fault::RedisCutTwo(a, b),
            _ => Fault::RedisKillAndNode(a),
        },
    }
}

fn isolate(ctx: &Ctx, i: usize, cut: bool) {
    for j in 0..ctx.fleet.n() {
        ctx.fleet.set_link(i, j, cut);
        ctx.fleet.set_link(j, i, cut);
    }
}

fn apply(ctx: &Ctx, f: Fault) {
    let fl = &ctx.fleet;
    match f {
        Fault::Kill(a) => fl.kill(a, "kill -9"),
        Fault::KillOnAck => ctx.arm_kill_on_ack(true),
        Fault::KillTwo(a, b) => {
            fl.kill(a, "kill -9");
            fl.kill(b, "kill -9");
        }
        Fault::Isolate(a) => isolate(ctx, a, true),
        Fault::Pair(a, b) => {
            fl.set_link(a, b, true);
            fl.set_link(b, a, true);
        }
        Fault::OneWay(a, b) => fl.set_link(a, b, true),
        Fault::KillAndIsolate(a, b) => {
            fl.kill(a, "kill -9");
            isolate(ctx, b, true);
        }
        Fault::RedisKill => fl.redis_kill(),
        Fault::RedisCut(a) => fl.set_redis_link(a, true),
        Fault::RedisCutTwo(a, b) => {
            fl.set_redis_link(a, true);
            fl.set_redis_link(b, true);
        }
        Fault::RedisKillAndNode(a) => {
            fl.redis_kill();
            fl.kill(a, "kill -9");
        }
    }
}

async fn undo(ctx: &Ctx, f: Fault) -> anyhow::Result<()> {
    let fl = &ctx.fleet;
    ctx.arm_kill_on_ack(false);
    fl.heal_all();
    if matches!(f, Fault::RedisKill | Fault::RedisKillAndNode(_)) {
        fl.redis_start().await?;
    }
    for i in 0..fl.n() {
        if !fl.running(i) {
            fl.restart(i, "restart").await?;
        }
    }
    Ok(())
}

async fn clock_steps(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let max = ctx.max_skew_ms;
    while !ctx.load_over() {
        ctx.pause(Duration::from_millis(rng.random_range(8000..20000)))
            .await;
        if ctx.load_over() || max == 0 {
            break;
        }
        let i = rng.random_range(0..ctx.fleet.n());
        let ms = if rng.random_bool(0.25) {
            0
        } else {
            rng.random_range(-max..=max)
        };
        ctx.fleet.set_clock(i, ms);
    }
}
