//! Memory per entry of the two structures that grow with traffic: the revocation set
//! (measured at 1,000,000 entries) and the verified-token cache (at 100,000 live tokens).
//!
//! A counting global allocator gives the bytes the heap holds (requested sizes, so malloc's
//! own rounding and headers come on top); resident set size from /proc/self/statm is
//! printed beside it as the figure the kernel sees.
//!
//! Run: `cargo bench --bench memory` (plain main, no criterion).

use portcullis::clock::{Clock, SystemClock};
use portcullis::revocation::Scope;
use portcullis::revocation::set::RevocationSet;
use portcullis::session::keys::KeyRing;
use portcullis::session::token::{Claims, Verifier, binding_claim, sign};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Resident bytes, from /proc/self/statm (second field, in pages).
fn rss() -> isize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = s
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Mark {
    heap: isize,
    rss: isize,
    allocs: usize,
}

fn mark() -> Mark {
    Mark {
        heap: live(),
        rss: rss(),
        allocs: ALLOCS.load(Ordering::Relaxed),
    }
}

fn report(what: &str, n: usize, before: &Mark) {
    let after = mark();
    let heap = after.heap - before.heap;
    let rss = after.rss - before.rss;
    println!(
        "{what}: {n} entries: heap {:.1} MiB = {:.0} bytes/entry ({:.1} allocation calls/entry, temporaries included); \
         RSS +{:.1} MiB = {:.0} bytes/entry",
        heap as f64 / 1048576.0,
        heap as f64 / n as f64,
        (after.allocs - before.allocs) as f64 / n as f64,
        rss as f64 / 1048576.0,
        rss as f64 / n as f64,
    );
}

/// The same mix as in hot_path.rs: mostly sessions, then users, some groups and apps.
/// Session ids are 22 characters like the gateway's (`random_b64(16)`).
fn fill_revocations(set: &RevocationSet, n: usize, base_us: i64) {
    for i in 0..n {
        let nb = base_us + i as i64;
        match i % 20 {
            0..=12 => set.apply(Scope::Session, &format!("sid{i:019}"), nb),
            13..=18 => set.apply(Scope::User, &format!("user{i}@example.com"), nb),
            _ if i % 40 == 19 => set.apply(Scope::Group, &format!("group-{i}"), nb),
            _ => set.apply(Scope::App, &format!("app-{i}"), nb),
        };
    }
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore any arguments.
    let now_us = SystemClock.now_us();

    // Revocation set.
    let n = 1_000_000;
    let before = mark();
    let set = RevocationSet::new();
    fill_revocations(&set, n, now_us - 3_600_000_000);
    assert_eq!(set.len(), n);
    report("revocation set", n, &before);
    for s in Scope::ALL {
        println!("  {:>8}: {} entries", s.as_str(), set.len_by_scope(s));
    }
    drop(set);

    // Token cache: 100,000 distinct live app tokens, verified once each.
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyRing::load_or_create(dir.path()).unwrap();
    let iss = "https://auth.localhost";
    let now = now_us / 1_000_000;
    let n = 100_000;
    let t0 = std::time::Instant::now();
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            let c = Claims {
                iss: iss.into(),
                aud: "app".into(),
                sub: format!("user{i}@example.com"),
                email: format!("user{i}@example.com"),
                groups: vec!["staff".into()],
                sid: format!("{i:022}"),
                jti: format!("{i:016}"),
                iat: now,
                exp: now + 24 * 3600,
                nbf: None,
                iat_us: now_us,
                bnd: Some(binding_claim(&format!("binding-secret-{i}"))),
            };
            sign(&keys, &c).unwrap()
        })
        .collect();
    let avg_len = tokens.iter().map(String::len).sum::<usize>() / n;
    println!(
        "signed {n} tokens in {:.1} s (average token {avg_len} bytes)",
        t0.elapsed().as_secs_f64()
    );
    let before = mark();
    let verifier = Verifier::new(n as u64);
    // One thread verifies every token, as a worker would. Its own cache (up to 4,096 of
    // the tokens it saw, with their text; it starts over when full) lives until the
    // thread ends.
    std::thread::scope(|s| {
        // Joined explicitly: the thread's own cache is freed with the thread.
        s.spawn(|| {
            let t0 = std::time::Instant::now();
            for t in &tokens {
                verifier.verify(&keys, t, "app", iss, now_us).unwrap();
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "verified {n} tokens in {secs:.1} s ({:.1} µs each, cache miss path); cache holds {}",
                secs * 1e6 / n as f64,
                verifier.entry_count()
            );
            report(
                "token cache, with the verifying thread's own cache",
                n,
                &before,
            );
        })
        .join()
        .unwrap();
    });
    report("token cache, shared part alone", n, &before);
    drop(verifier);
    println!(
        "(heap = bytes requested from the allocator, without malloc overhead. A shared entry \
         holds the claims the decision reads (issuer, audience and groups shared between \
         tokens; sub, email and sid inline up to 24 bytes), the binding hash, a 16-byte key \
         and quick_cache's slot; each worker thread's own cache also keeps the text of up \
         to 4,096 tokens it saw, as their assertion header values)"
    );
}
