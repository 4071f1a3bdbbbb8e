//! The built-in identity provider: `[[user]]` entries with argon2id password hashes.
//! Hashing is slow by design (CPU and ~19 MiB each), so it runs on the blocking pool,
//! never on the executor, and [`PasswordChecks`] bounds how many run at once and how
//! many sign-ins may wait for one: a sign-in flood gets 503s, not the CPUs and memory
//! the proxy needs.

use crate::metrics::{self, Metrics};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// An argon2id PHC string for `password` with the library's recommended parameters.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    let salt = SaltString::encode_b64(&raw)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC string `phc` (slow: call it off the executor).
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user is unknown or disabled, so the answer takes
/// as long as for a real user and does not reveal which accounts exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never matches").unwrap_or_default())
}

/// The password-check queue is full; answer 503 with a Retry-After.
#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins are waiting for a password check")]
pub struct Busy;

/// At most `slots` password checks run at once and `queue` more wait; the rest are
/// refused at once with [`Busy`].
pub struct PasswordChecks {
    slots: Arc<Semaphore>,
    queue: usize,
    waiting: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Leaves the queue (and its gauge) however the wait ends.
struct Waiting<'a>(&'a PasswordChecks);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        metrics::dec(&self.0.metrics.limits.password_checks_waiting);
    }
}

/// Marks a check running until the blocking task that holds it ends.
struct Active(Arc<Metrics>);

impl Drop for Active {
    fn drop(&mut self) {
        metrics::dec(&self.0.limits.password_checks_active);
    }
}

impl PasswordChecks {
    pub fn new(slots: usize, queue: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            queue,
            waiting: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Checks `password` against `phc` (or the decoy when `phc` is None, so the answer
    /// takes as long as for a real user) on the blocking pool, within the bounds;
    /// `Err(Busy)` when the queue is full.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Busy> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let queued = self
                    .waiting
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < self.queue).then_some(n + 1)
                    });
                if queued.is_err() {
                    metrics::inc(&self.metrics.limits.password_checks_refused);
                    return Err(Busy);
                }
                metrics::inc(&self.metrics.limits.password_checks_waiting);
                let _waiting = Waiting(self);
                // The semaphore is never closed.
                self.slots.clone().acquire_owned().await.map_err(|_| Busy)?
            }
        };
        metrics::inc(&self.metrics.limits.password_checks_active);
        let active = Active(self.metrics.clone());
        let real = phc.is_some();
        // The slot stays taken while the hash runs, even if the sign-in is abandoned.
        let res = tokio::task::spawn_blocking(move || {
            let _held = (permit, active);
            let hash = phc.unwrap_or_else(|| decoy_hash().to_string());
            verify_blocking(&password, &hash)
        })
        .await;
        Ok(real && res.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let checks = PasswordChecks::new(2, 2, Arc::new(Metrics::default()));
        let verify = |pw: &str, h: Option<String>| checks.verify(pw.into(), h);
        assert!(verify("s3cret", Some(h.clone())).await.unwrap());
        assert!(!verify("nope", Some(h)).await.unwrap());
        assert!(!verify("s3cret", None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounded_checks_refuse_past_the_queue() {
        let h = hash_password("pw").unwrap();
        let m = Arc::new(Metrics::default());
        let checks = Arc::new(PasswordChecks::new(1, 2, m.clone()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (c, h) = (checks.clone(), h.clone());
                tokio::spawn(async move { c.verify("pw".into(), Some(h)).await })
            })
            .collect();
        let (mut ok, mut busy) = (0u64, 0u64);
        for t in tasks {
            match t.await.unwrap() {
                Ok(true) => ok += 1,
                Ok(false) => panic!("right password refused"),
                Err(Busy) => busy += 1,
            }
        }
        // One runs, two wait, the others are turned away (all spawned before the first
        // check can finish: a check takes tens of milliseconds).
        assert!(ok >= 3 && busy >= 1, "ok {ok}, busy {busy}");
        assert_eq!(ok + busy, 8);
        assert_eq!(metrics::get(&m.limits.password_checks_refused), busy);
        assert_eq!(metrics::get(&m.limits.password_checks_waiting), 0);
        assert_eq!(metrics::get(&m.limits.password_checks_active), 0);
    }
}
