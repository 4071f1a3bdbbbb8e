//! The cluster's time, shared through Redis. Nodes on the Redis backend never talk to
//! each other, yet they compare each other's stamps (a token's issue time with a
//! revocation's instant). Each node now and then writes its reading of the cluster's
//! time into `<p>:clocks` with Redis's time (`TIME`) and reads back the latest reading
//! written in the last minute, carried forward on Redis's time to now: a lower bound of
//! that node's reading now, which the caller hands to its [`crate::clock::Ticker`]. (A
//! node that restarts finds its own reading there too.)
//!
//! A reading is carried forward only when it was seen running at Redis's pace between
//! the node's last two writes (within 10 %): a clock just stepped, or one a test moves by
//! hand, counts as it read.

use super::{RedisError, RedisStore, Req};
use crate::clock::Micros;
use ::redis::Script;
use std::sync::LazyLock;

/// Readings older than this (in Redis time) are from nodes that left.
const FORGET_AFTER_US: i64 = 60_000_000;

/// KEYS: clocks. ARGV: node, the node's reading of the cluster's time (µs), forget-after
/// (µs). Stores `<reading>,<redis time>,<runs: 0|1>` for the node; answers the latest
/// reading still remembered (this node's at least), carried forward to Redis's time now.
static CLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wall = tonumber(ARGV[2])
local runs = 0
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev then
  local pw, pr = string.match(prev, '^(-?%d+),(%d+),')
  if pw and now > tonumber(pr) then
    local pace = (wall - tonumber(pw)) / (now - tonumber(pr))
    if pace > 0.9 and pace < 1.1 then runs = 1 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d,%d,%d', wall, now, runs))
local fastest = wall
local horizon = now - tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 2, #all, 2 do
  local w, r, k = string.match(all[i], '^(-?%d+),(%d+),([01])$')
  if w and tonumber(r) >= horizon then
    local v = tonumber(w) + tonumber(k) * (now - tonumber(r))
    if v > fastest then fastest = v end
  end
end
return fastest
"#,
    )
});

impl RedisStore {
    /// Writes this node's reading of the cluster's time `now_us` and answers the latest
    /// reading Redis knows of (a lower bound of it when the script ran).
    pub async fn fastest_clock(&self, node: &str, now_us: Micros) -> Result<Micros, RedisError> {
        let mut inv = CLOCK.prepare_invoke();
        inv.key(&self.keys().clocks)
            .arg(node)
            .arg(now_us)
            .arg(FORGET_AFTER_US);
        self.run("clock", Req::Script(&inv)).await
    }
}
