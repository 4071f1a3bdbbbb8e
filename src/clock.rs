//! Injected time. Every expiry, lockout and revocation decision asks a `Clock`, so tests
//! can move time forward exactly instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time in microseconds since the Unix epoch.
    fn now_us(&self) -> Micros;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> Micros {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as Micros)
            .unwrap_or(0)
    }
}

/// TEST HOOK, for the soak benchmark (`benches/soak.rs`) only: the system clock plus
/// the signed number of milliseconds written in a file, so a test can step one
/// process's clock without touching the machine's. The binary installs it only when
/// the environment variable [`OFFSET_FILE_ENV`] names the file; no config setting
/// reaches it. A thread re-reads the file every 100 ms; a missing or unreadable file
/// counts as 0.
pub struct OffsetFileClock {
    offset_us: Arc<AtomicI64>,
}

/// The environment variable that installs [`OffsetFileClock`] (a test hook).
pub const OFFSET_FILE_ENV: &str = "PORTCULLIS_CLOCK_OFFSET_FILE";

impl OffsetFileClock {
    /// Reads `path` now and then every 100 ms on a thread of its own.
    pub fn watching(path: std::path::PathBuf) -> std::io::Result<Arc<Self>> {
        let offset_us = Arc::new(AtomicI64::new(read_offset_us(&path)));
        let shared = offset_us.clone();
        std::thread::Builder::new()
            .name("clock-offset".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    shared.store(read_offset_us(&path), Ordering::Relaxed);
                }
            })?;
        Ok(Arc::new(Self { offset_us }))
    }
}

/// The file's milliseconds as microseconds (0 when missing or not a number).
fn read_offset_us(path: &std::path::Path) -> Micros {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(0, |ms| ms.saturating_mul(1_000))
}

impl Clock for OffsetFileClock {
    fn now_us(&self) -> Micros {
        SystemClock.now_us() + self.offset_us.load(Ordering::Relaxed)
    }
}

/// A clock tests set and advance by hand.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn new(start_us: Micros) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicI64::new(start_us),
        })
    }
    /// Starts at the real current time, so tokens look plausible to other libraries.
    pub fn starting_now() -> Arc<Self> {
        Self::new(SystemClock.now_us())
    }
    pub fn advance(&self, d: std::time::Duration) {
        self.now
            .fetch_add(d.as_micros() as Micros, Ordering::SeqCst);
    }
    pub fn set(&self, us: Micros) {
        self.now.store(us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> Micros {
        self.now.load(Ordering::SeqCst)
    }
}

/// Issues strictly increasing instants on this node. Token issue times and revocation
/// instants both come from here, so a token minted after a revocation on the same node
/// is always later than it, even within the same microsecond of wall time.
pub struct Ticker {
    clock: Arc<dyn Clock>,
    last: AtomicI64,
}

impl Ticker {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            last: AtomicI64::new(0),
        }
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    pub fn now_us(&self) -> Micros {
        self.clock.now_us()
    }
    /// A fresh instant, later than every instant this ticker handed out before.
    pub fn tick(&self) -> Micros {
        let now = self.clock.now_us();
        let prev = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(if now > last { now } else { last + 1 })
            })
            .unwrap_or(now);
        if now > prev { now } else { prev + 1 }
    }
    /// Make sure later ticks come after `us` (an instant learnt from elsewhere).
    pub fn observe(&self, us: Micros) {
        self.last.fetch_max(us, Ordering::SeqCst);
    }
}

pub fn secs(us: Micros) -> i64 {
    us.div_euclid(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_under_a_frozen_clock() {
        let clock = ManualClock::new(1_000);
        let t = Ticker::new(clock.clone());
        let a = t.tick();
        let b = t.tick();
        assert_eq!(a, 1_000);
        assert_eq!(b, 1_001);
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(t.tick(), 1_001_000);
        t.observe(5_000_000);
        assert_eq!(t.tick(), 5_000_001);
    }

    #[test]
    fn offset_file_clock_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("offset");
        let c = OffsetFileClock::watching(f.clone()).unwrap();
        let skew = |c: &OffsetFileClock| c.now_us() - SystemClock.now_us();
        assert!(skew(&c).abs() < 50_000, "no file: no offset");
        std::fs::write(&f, "-3000\n").unwrap();
        let t0 = std::time::Instant::now();
        while (skew(&c) + 3_000_000).abs() > 50_000 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(2),
                "not re-read"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::write(&f, "oops").unwrap();
        while skew(&c).abs() > 50_000 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(4),
                "not reset"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
