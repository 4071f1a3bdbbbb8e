//! Small cluster-wide guards for the browser flows: keys that can be claimed once
//! (hand-off codes, replay ids of SSF events, webhook deliveries and logout tokens) and
//! sliding-window failure counters (the sign-in throttle, per user and per address,
//! counted over the whole cluster).

use super::{RedisError, RedisStore, Req};
use crate::clock::Micros;
use std::time::Duration;

impl RedisStore {
    /// True for exactly one caller in the cluster until `ttl` has passed
    /// (`SET <p>:once:<key> 1 NX PX ttl`).
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, RedisError> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.keys().once(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        let reply: Option<String> = self.run("claim_once", Req::Cmd(&cmd)).await?;
        Ok(reply.is_some())
    }

    /// Records one failure at `now` and returns how many failures fall within the last
    /// `window` (this one included). One transaction: drop the expired members, add
    /// this one, count, and let the key expire with the window.
    pub async fn record_failure(
        &self,
        key: &str,
        now: Micros,
        window: Duration,
    ) -> Result<u32, RedisError> {
        let k = self.keys().fail(key);
        let window_us = window_us(window);
        // Unique even when two nodes fail the same user in the same microsecond.
        let member = format!("{now}-{:016x}", rand::random::<u64>());
        let mut p = ::redis::pipe();
        p.atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&k)
            .arg("-inf")
            .arg(now - window_us)
            .ignore()
            .cmd("ZADD")
            .arg(&k)
            .arg(now)
            .arg(&member)
            .ignore()
            .cmd("ZCARD")
            .arg(&k)
            .cmd("PEXPIRE")
            .arg(&k)
            .arg((window_us / 1000).max(1))
            .ignore();
        let (count,): (u32,) = self.run("record_failure", Req::Pipe(&p)).await?;
        Ok(count)
    }

    /// How many failures fall within the last `window` before `now` (read only).
    pub async fn failures(
        &self,
        key: &str,
        now: Micros,
        window: Duration,
    ) -> Result<u32, RedisError> {
        let min = format!("({}", now - window_us(window));
        let mut cmd = ::redis::cmd("ZCOUNT");
        cmd.arg(self.keys().fail(key)).arg(min).arg("+inf");
        self.run("failures", Req::Cmd(&cmd)).await
    }

    /// The times of the failures within the last `window` before `now`, oldest first.
    pub async fn failure_times(
        &self,
        key: &str,
        now: Micros,
        window: Duration,
    ) -> Result<Vec<Micros>, RedisError> {
        let min = format!("({}", now - window_us(window));
        let mut cmd = ::redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.keys().fail(key))
            .arg(min)
            .arg("+inf")
            .arg("WITHSCORES");
        let pairs: Vec<(String, f64)> = self.run("failure_times", Req::Cmd(&cmd)).await?;
        Ok(pairs.into_iter().map(|(_, t)| t as Micros).collect())
    }

    /// Forgets the failures of `key` (a successful sign-in).
    pub async fn clear_failures(&self, key: &str) -> Result<(), RedisError> {
        let mut cmd = ::redis::cmd("DEL");
        cmd.arg(self.keys().fail(key));
        self.run::<i64>("clear_failures", Req::Cmd(&cmd))
            .await
            .map(|_| ())
    }
}

fn window_us(window: Duration) -> Micros {
    window.as_micros().min(i64::MAX as u128) as Micros
}
