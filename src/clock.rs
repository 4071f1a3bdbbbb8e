//! Injected time. Every expiry, lockout and revocation decision asks a `Clock`, so tests
//! can move time forward exactly instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time in microseconds since the Unix epoch.
    fn now_us(&self) -> Micros;
    /// A clock that never jumps, in microseconds from an arbitrary start: how much time
    /// passed between two readings, whatever steps the wall clock took meanwhile.
    fn mono_us(&self) -> Micros {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX)
    }
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
    /// Time passes only when the test moves it.
    fn mono_us(&self) -> Micros {
        self.now_us()
    }
}

/// Issues strictly increasing instants on this node, in the cluster's time.
///
/// Token issue times and revocation instants, stamped by different nodes, are compared
/// with each other: a token is refused when a revocation of its scope is at or after its
/// issue time. With node clocks apart, a token issued by a node whose clock is ahead
/// would be stamped after a revocation taken a moment later on a node whose clock is
/// behind, and outlive it. So every node stamps in the cluster's time: the latest of its
/// own clock and of the cluster's time as other nodes told it (through the peer protocol
/// or Redis), carried forward on this node's monotonic clock from when it was read. Each
/// reading is a lower bound (it was taken before it arrived), so nodes telling each
/// other their readings converge on the fastest clock without running ahead of it; a
/// node that restarts learns it back. That time only moves forward: a clock stepped back
/// keeps counting from what it said before. Instants learnt from elsewhere (a
/// revocation's) are a floor for later ticks, so a token minted after a node applied a
/// revocation is always later than it.
pub struct Ticker {
    clock: Arc<dyn Clock>,
    last: AtomicI64,
    /// The latest reading of the cluster's time known (this node's own clock included),
    /// and when it was taken on the monotonic clock.
    fastest: Mutex<Option<Reading>>,
}

/// A wall-clock reading and the monotonic instant it applies to.
#[derive(Clone, Copy, Debug)]
struct Reading {
    us: Micros,
    mono: Micros,
}

impl Reading {
    /// The reading carried forward to monotonic instant `mono`.
    fn at(&self, mono: Micros) -> Micros {
        self.us.saturating_add((mono - self.mono).max(0))
    }
}

/// Readings that took longer than this to arrive are too vague to use.
pub const MAX_READING_RTT: Duration = Duration::from_millis(50);

impl Ticker {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            last: AtomicI64::new(0),
            fastest: Mutex::new(None),
        }
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    /// This node's wall clock (expiry, lockouts, ages).
    pub fn now_us(&self) -> Micros {
        self.clock.now_us()
    }
    /// The cluster's time: the latest reading known, carried forward, or this node's
    /// clock when that is later.
    pub fn cluster_now_us(&self) -> Micros {
        let (wall, mono) = (self.clock.now_us(), self.clock.mono_us());
        let Ok(mut fastest) = self.fastest.lock() else {
            return wall;
        };
        match *fastest {
            Some(r) if r.at(mono) >= wall => r.at(mono),
            _ => {
                *fastest = Some(Reading { us: wall, mono });
                wall
            }
        }
    }
    /// How far the cluster's time is ahead of this node's clock.
    pub fn lead_us(&self) -> Micros {
        let wall = self.clock.now_us();
        self.cluster_now_us() - wall
    }
    /// A fresh instant in the cluster's time, later than every instant this ticker
    /// handed out or observed before.
    pub fn tick(&self) -> Micros {
        let now = self.cluster_now_us();
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
    /// Another node's reading of the cluster's time was at least `us` (a lower bound: it
    /// was read before it reached here) in an exchange that took `rtt`. Kept when it is
    /// ahead of the cluster's time as this node knew it, and at most `max_lead` ahead of
    /// this node's clock (a clock further off is a misconfiguration, not the cluster's
    /// time). Returns whether it was kept.
    pub fn heard_clock(&self, us: Micros, rtt: Duration, max_lead: Duration) -> bool {
        if rtt > MAX_READING_RTT {
            return false;
        }
        let (wall, mono) = (self.clock.now_us(), self.clock.mono_us());
        let cap = wall.saturating_add(i64::try_from(max_lead.as_micros()).unwrap_or(i64::MAX));
        let us = us.min(cap);
        let Ok(mut fastest) = self.fastest.lock() else {
            return false;
        };
        if us <= wall || fastest.is_some_and(|r| r.at(mono) >= us) {
            return false;
        }
        *fastest = Some(Reading { us, mono });
        true
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
    fn ticks_follow_the_fastest_clock_heard_of_and_never_go_back() {
        let clock = ManualClock::new(10_000_000);
        let t = Ticker::new(clock.clone());
        let skew = Duration::from_secs(300);
        let ms = Duration::from_millis(1);
        // A peer 4 s ahead: ticks carry its time forward as this node's time passes.
        assert!(t.heard_clock(14_000_000, ms, skew));
        assert_eq!(t.tick(), 14_000_000);
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.tick(), 15_000_000);
        assert_eq!(t.lead_us(), 4_000_000);
        // The peer's clock steps back: what it said before still holds.
        assert!(!t.heard_clock(11_000_000, ms, skew));
        assert_eq!(t.cluster_now_us(), 15_000_000);
        // A reading that took too long, or one behind, changes nothing.
        assert!(!t.heard_clock(20_000_000, MAX_READING_RTT * 2, skew));
        assert!(!t.heard_clock(9_000_000, Duration::ZERO, skew));
        // A clock further ahead than the allowed skew counts as that far ahead only.
        assert!(t.heard_clock(10_000_000_000, Duration::ZERO, skew));
        assert_eq!(t.lead_us(), 300_000_000);
        // It runs on with this node's time: the lead stays.
        clock.advance(Duration::from_secs(400));
        assert_eq!(t.lead_us(), 300_000_000);
    }

    #[test]
    fn a_clock_stepped_back_keeps_its_ticks_going_forward() {
        let clock = ManualClock::new(50_000_000);
        let t = Ticker::new(clock.clone());
        assert_eq!(t.tick(), 50_000_000);
        // The wall clock steps back 4 s while 1 s passes (the manual clock is its own
        // monotonic clock, so model the step as a jump of the wall only: a fresh ticker
        // over an offset wall).
        let stepped = Arc::new(Stepped {
            inner: clock.clone(),
            offset_us: AtomicI64::new(0),
        });
        let t = Ticker::new(stepped.clone());
        assert_eq!(t.tick(), 50_000_000);
        stepped.offset_us.store(-4_000_000, Ordering::SeqCst);
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.tick(), 51_000_000, "counts on from before the step");
        assert_eq!(t.lead_us(), 4_000_000);
    }

    /// A wall clock that can be stepped while its monotonic clock runs on.
    struct Stepped {
        inner: Arc<ManualClock>,
        offset_us: AtomicI64,
    }

    impl Clock for Stepped {
        fn now_us(&self) -> Micros {
            self.inner.now_us() + self.offset_us.load(Ordering::SeqCst)
        }
        fn mono_us(&self) -> Micros {
            self.inner.now_us()
        }
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
