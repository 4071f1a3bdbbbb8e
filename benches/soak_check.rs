//! The soak's checker, checked in the normal test suite (`cargo test` runs this target:
//! `test = true` in Cargo.toml). It feeds the checker of `benches/soak.rs` made-up
//! histories: bad ones, each with known violations it must report (late acceptance of a
//! revoked token, fault-free and after partitions or a Redis cut; the taking node
//! accepting after its acknowledgement; cut-off nodes serving; valid tokens refused;
//! undocumented 5xx; lost revocations), and a good one it must pass. The soak binary
//! runs the same cases before every run, so a checker that cannot fail never reports
//! "every goal met".

// Only the checker's half of the soak is compiled here; the recorder is not used.
#![allow(dead_code)]

#[path = "soak/check.rs"]
mod check;
#[path = "soak/history.rs"]
mod history;
#[path = "soak/model.rs"]
mod model;
#[path = "soak/selftest.rs"]
mod selftest;

#[test]
fn the_checker_reports_every_violation_in_bad_histories() {
    if let Err(e) = selftest::run() {
        panic!("{e}");
    }
}

#[test]
fn the_checker_passes_a_good_history() {
    let rep = selftest::good();
    assert!(rep.goals_met(), "{rep:?}");
    assert_eq!(rep.propagation.len(), 2, "{rep:?}");
}

#[test]
fn a_lost_revocation_misses_the_goals() {
    let rep = selftest::lost();
    assert!(!rep.goals_met(), "{rep:?}");
    assert_eq!(rep.lost.len(), 2, "{rep:?}");
}
