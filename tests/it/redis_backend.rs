//! The Redis backend's storage layer against a real `redis-server` (one per test, on a
//! free loopback port, append-only file fsynced on every write): revocations published,
//! snapshotted and tailed in order; a tail that survives `kill -9` and resumes; the
//! cluster-wide guards (single-use keys, failure windows), sessions and documents seen
//! the same from two clients; and calls that fail fast while Redis is away.

use crate::support::lb::Lb;
use crate::support::redis::{RedisOpts, RedisServer};
use portcullis::clock::{Clock, ManualClock, SystemClock};
use portcullis::cluster::redis::{
    Outbox, RedisConfig, RedisError, RedisStore, ResyncReason, SessionRecord, StreamId, Tail,
    TailEvent,
};
use portcullis::revocation::{RevocationRecord, Scope};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const OP_TIMEOUT: Duration = Duration::from_millis(1000);

fn config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.op_timeout = OP_TIMEOUT;
    c.connect_timeout = Duration::from_millis(500);
    c.block = Duration::from_millis(500);
    c
}

fn store(r: &RedisServer) -> RedisStore {
    RedisStore::new(config(r.url()), Arc::new(SystemClock)).expect("store")
}

fn rec(scope: Scope, target: &str, nb: i64) -> RevocationRecord {
    RevocationRecord {
        id: format!("{}-{target}-{nb}", scope.as_str()),
        scope,
        target: target.to_owned(),
        not_before_us: nb,
        reason: "test".into(),
        actor: "ops".into(),
        node: "gw-1".into(),
        external_id: None,
    }
}

fn user(i: usize) -> RevocationRecord {
    rec(Scope::User, &format!("u{i}@example.com"), 1_000 + i as i64)
}

/// Tail events until `n` records came by Records events (panics after `within`).
async fn take_records(
    tail: &mut Tail,
    n: usize,
    within: Duration,
) -> Vec<(StreamId, RevocationRecord)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, tail.next()).await {
            Ok(Some(TailEvent::Records(v))) => got.extend(v),
            Ok(other) => panic!("unexpected tail event {other:?} after {got:?}"),
            Err(_) => panic!("tail gave {} of {n} records within {within:?}", got.len()),
        }
    }
    got
}

fn sorted(mut v: Vec<RevocationRecord>) -> Vec<RevocationRecord> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_snapshot_and_tail_keep_order_and_the_newest_record() {
    let r = RedisServer::start();
    let (a, b) = (store(&r), store(&r));
    let first = a
        .publish(&[
            rec(Scope::User, "x@example.com", 100),
            rec(Scope::User, "y@example.com", 200),
        ])
        .await
        .unwrap();
    assert!(first[0] < first[1]);
    // An older record for x arrives late: the stream has it, the snapshot keeps the newer.
    let late = a
        .publish(&[rec(Scope::User, "x@example.com", 50)])
        .await
        .unwrap();

    let (snap, pos) = b.snapshot().await.unwrap();
    let recs = snap.records();
    assert_eq!(pos, late[0], "the position is the newest entry");
    assert_eq!(
        sorted(recs),
        sorted(vec![
            rec(Scope::User, "x@example.com", 100),
            rec(Scope::User, "y@example.com", 200)
        ])
    );

    let mut tail = b.tail(pos);
    let next = vec![
        rec(Scope::App, "echo", 300),
        rec(Scope::Session, "sid-1", 301),
        rec(Scope::All, "", 302),
    ];
    a.publish(&next[..1]).await.unwrap();
    a.publish(&next[1..]).await.unwrap();
    let got = take_records(&mut tail, 3, Duration::from_secs(5)).await;
    assert_eq!(got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(), next);
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase: {got:?}"
    );

    // From the start, the stream has every published record in publish order.
    let mut all = b.tail(StreamId::ZERO);
    let got = take_records(&mut all, 6, Duration::from_secs(5)).await;
    assert_eq!(got[2].1, rec(Scope::User, "x@example.com", 50));
    assert_eq!(got[5].1, rec(Scope::All, "", 302));

    let h = b.health();
    assert!(h.connected);
    assert_eq!(h.last_applied, Some(got[5].0));
    assert_eq!(h.lag_ms, Some(0));
    assert!(h.last_applied_at_us.is_some() && h.last_contact_us.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_resumes_after_kill9_and_restart_and_misses_nothing_acked() {
    let mut r = RedisServer::start();
    let (publisher, follower) = (store(&r), store(&r));
    let mut tail = follower.tail(StreamId::ZERO);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        if i == 10 {
            r.kill9();
        }
        if i == 20 {
            r.restart();
        }
        let started = Instant::now();
        match publisher.publish(&[user(i)]).await {
            Ok(_) => acked.push(user(i)),
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert!(started.elapsed() < OP_TIMEOUT + Duration::from_millis(300));
                refused += 1;
            }
        }
    }
    assert_eq!(
        refused, 10,
        "exactly the publishes while Redis was dead fail"
    );
    assert_eq!(acked.len(), 20);

    let got = take_records(&mut tail, acked.len(), Duration::from_secs(15)).await;
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "in order, no repeats"
    );
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), acked);

    let (snap, _) = follower.snapshot().await.unwrap();
    assert_eq!(
        sorted(snap.records()),
        sorted(acked.clone()),
        "the AOF kept every acked record"
    );
    let h = follower.health();
    assert!(h.connected);
    assert!(h.reconnects >= 1, "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_once_is_single_use_across_clients_until_its_ttl() {
    let r = RedisServer::start();
    let (a, b) = (store(&r), store(&r));
    let mut claims = tokio::task::JoinSet::new();
    for i in 0..10 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        claims.spawn(async move {
            s.claim_once("code:abc", Duration::from_secs(60))
                .await
                .unwrap()
        });
    }
    let wins = claims.join_all().await.into_iter().filter(|w| *w).count();
    assert_eq!(wins, 1, "one claim wins, nine lose");
    assert!(
        a.claim_once("code:other", Duration::from_secs(60))
            .await
            .unwrap()
    );

    assert!(
        b.claim_once("jti:1", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(
        !a.claim_once("jti:1", Duration::from_millis(300))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        a.claim_once("jti:1", Duration::from_millis(300))
            .await
            .unwrap(),
        "free again after its TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_window_counts_across_clients_and_slides() {
    let r = RedisServer::start();
    let (a, b) = (store(&r), store(&r));
    let t0 = SystemClock.now_us();
    let s = 1_000_000;
    let w = Duration::from_secs(60);
    assert_eq!(a.record_failure("user:x", t0, w).await.unwrap(), 1);
    assert_eq!(b.record_failure("user:x", t0 + s, w).await.unwrap(), 2);
    assert_eq!(a.record_failure("user:x", t0 + 2 * s, w).await.unwrap(), 3);
    assert_eq!(b.failures("user:x", t0 + 2 * s, w).await.unwrap(), 3);
    assert_eq!(
        b.failures("ip:10.0.0.1", t0, w).await.unwrap(),
        0,
        "keys are separate"
    );
    // 60.5 s after the first: it slid out, the other two still count.
    assert_eq!(
        a.failures("user:x", t0 + 60 * s + s / 2, w).await.unwrap(),
        2
    );
    assert_eq!(
        b.record_failure("user:x", t0 + 61 * s + s / 2, w)
            .await
            .unwrap(),
        2
    );
    assert_eq!(a.failures("user:x", t0 + 200 * s, w).await.unwrap(), 0);

    // Concurrent failures from both clients at the same instant are all counted, once.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let st = if i % 2 == 0 { a.clone() } else { b.clone() };
        set.spawn(async move { st.record_failure("user:y", t0, w).await.unwrap() });
    }
    let mut counts = set.join_all().await;
    counts.sort();
    assert_eq!(counts, (1..=10).collect::<Vec<u32>>());
    a.clear_failures("user:y").await.unwrap();
    assert_eq!(b.failures("user:y", t0, w).await.unwrap(), 0);
}

fn session(sid: &str, user: &str, created: i64, expires: i64) -> SessionRecord {
    SessionRecord {
        sid: sid.into(),
        user: user.into(),
        groups: vec!["staff".into()],
        apps: vec!["echo".into()],
        ip: "127.0.0.1".into(),
        user_agent: "test".into(),
        created_us: created,
        last_seen_us: created,
        expires_us: expires,
        node: "gw-1".into(),
        ended_us: None,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_registry_is_one_for_all_clients() {
    let r = RedisServer::start();
    let (a, b) = (store(&r), store(&r));
    let now = SystemClock.now_us();
    let hour = 3_600_000_000;
    let keep = now + 24 * hour;
    a.put_session(&session("s1", "Demo@Example.com", now, now + hour), keep)
        .await
        .unwrap();
    b.put_session(
        &session("s2", "demo@example.com", now + 1, now + hour),
        keep,
    )
    .await
    .unwrap();
    b.put_session(
        &session("s3", "bob@example.com", now + 2, now + hour),
        now + hour,
    )
    .await
    .unwrap();

    assert!(b.add_app("s1", "wiki", now + 10).await.unwrap());
    assert!(
        a.add_app("s1", "echo", now + 5).await.unwrap(),
        "known app: no duplicate"
    );
    assert!(!a.add_app("nope", "wiki", now).await.unwrap());

    let mine = a.sessions_of("DEMO@example.com", now).await.unwrap();
    assert_eq!(
        mine.iter().map(|s| s.sid.as_str()).collect::<Vec<_>>(),
        ["s2", "s1"]
    );
    assert_eq!(mine[1].apps, ["echo", "wiki"]);
    assert_eq!(mine[1].last_seen_us, now + 10);

    assert!(b.end_session("s1", now + 20).await.unwrap());
    assert!(!a.end_session("s1", now + 30).await.unwrap(), "ends once");
    let s1 = a.get_session("s1").await.unwrap().unwrap();
    assert_eq!(s1.ended_us, Some(now + 20));
    assert!(!s1.is_live(now + 21));

    // A stale put (another node's older copy) cannot undo the app or the end.
    a.put_session(&session("s1", "demo@example.com", now, now + hour), keep)
        .await
        .unwrap();
    let s1 = b.get_session("s1").await.unwrap().unwrap();
    assert_eq!((s1.apps.len(), s1.ended_us), (2, Some(now + 20)));

    assert_eq!(b.all_sessions(now).await.unwrap().len(), 3);
    let later = b.all_sessions(now + 2 * hour).await.unwrap();
    assert_eq!(
        later.iter().map(|s| s.sid.as_str()).collect::<Vec<_>>(),
        ["s2", "s1"],
        "s3 was kept for an hour only"
    );

    // Redis itself drops a session at its keep-until time.
    let soon = SystemClock.now_us() + 300_000;
    a.put_session(&session("s4", "eve@other.org", now, soon), soon)
        .await
        .unwrap();
    assert!(b.get_session("s4").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.get_session("s4").await.unwrap().is_none());
    assert!(
        b.sessions_of("eve@other.org", SystemClock.now_us())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_last_writer_wins_with_tombstones() {
    let r = RedisServer::start();
    let (a, b) = (store(&r), store(&r));
    assert!(a.put_doc("users", "u1", r#"{"v":2}"#, 2).await.unwrap());
    assert!(
        !b.put_doc("users", "u1", r#"{"v":1}"#, 1).await.unwrap(),
        "older loses"
    );
    assert!(
        !b.put_doc("users", "u1", r#"{"v":"2b"}"#, 2).await.unwrap(),
        "a tie keeps the first"
    );
    assert_eq!(
        b.get_doc("users", "u1").await.unwrap().unwrap().json,
        r#"{"v":2}"#
    );
    assert!(b.put_doc("users", "u1", r#"{"v":3}"#, 3).await.unwrap());

    assert!(
        !a.delete_doc("users", "u1", 2).await.unwrap(),
        "an old delete loses"
    );
    assert!(a.delete_doc("users", "u1", 4).await.unwrap());
    assert_eq!(b.get_doc("users", "u1").await.unwrap(), None);
    assert!(
        !b.put_doc("users", "u1", r#"{"v":3}"#, 3).await.unwrap(),
        "no resurrection by a late write"
    );
    assert!(b.put_doc("users", "u1", r#"{"v":5}"#, 5).await.unwrap());

    // Versions compare exactly across the whole u64 range (9 < 10, not as text).
    assert!(a.put_doc("users", "u2", "{}", 9).await.unwrap());
    assert!(a.put_doc("users", "u2", "{}", 10).await.unwrap());
    assert!(a.put_doc("users", "u2", "{}", u64::MAX).await.unwrap());
    assert!(!a.put_doc("users", "u2", "{}", u64::MAX - 1).await.unwrap());
    a.put_doc("groups", "g1", "{}", 1).await.unwrap();

    let mut users = b.list_docs("users").await.unwrap();
    users.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        users
            .iter()
            .map(|d| (d.id.as_str(), d.version))
            .collect::<Vec<_>>(),
        [("u1", 5), ("u2", u64::MAX)]
    );
    assert!(a.delete_doc("groups", "g1", 2).await.unwrap());
    assert!(
        b.list_docs("groups").await.unwrap().is_empty(),
        "tombstones are not listed"
    );

    // Every winning write stepped the counter (losing ones did not), and the change
    // list names each document once, at its last winning write, oldest first.
    let all = b.doc_changes(0, 100).await.unwrap();
    assert_eq!(all.seq, 9, "{all:?}");
    let named: Vec<_> = all
        .changed
        .iter()
        .map(|(n, ns, id)| (*n, ns.as_str(), id.as_str()))
        .collect();
    assert_eq!(
        named,
        [(4, "users", "u1"), (7, "users", "u2"), (9, "groups", "g1")]
    );
    let since = b.doc_changes(7, 100).await.unwrap();
    assert_eq!(since.changed.len(), 1);
    assert_eq!(b.doc_changes(9, 100).await.unwrap().changed, vec![]);
    assert_eq!(
        b.doc_changes(0, 2).await.unwrap().changed.len(),
        2,
        "at most the limit"
    );
}

/// Asserts `call` fails as unavailable within the op timeout (plus scheduling slack).
async fn fails_fast<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, RedisError>>,
) {
    let started = Instant::now();
    let res = call.await;
    let took = started.elapsed();
    match res {
        Err(e) => assert!(e.is_unavailable(), "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded with Redis down: {v:?}"),
    }
    assert!(
        took < OP_TIMEOUT + Duration::from_millis(400),
        "{what} took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_every_call_fails_fast_and_health_says_so() {
    let mut r = RedisServer::start();
    let s = store(&r);
    s.ping().await.unwrap();
    assert!(s.health().connected);
    r.kill9();
    let now = SystemClock.now_us();
    fails_fast("ping", s.ping()).await;
    fails_fast("publish", s.publish(&[user(1)])).await;
    fails_fast("snapshot", s.snapshot()).await;
    fails_fast("claim_once", s.claim_once("k", Duration::from_secs(1))).await;
    fails_fast(
        "record_failure",
        s.record_failure("k", now, Duration::from_secs(1)),
    )
    .await;
    fails_fast("sessions_of", s.sessions_of("a@b", now)).await;
    fails_fast("put_doc", s.put_doc("n", "i", "{}", 1)).await;
    let h = s.health();
    assert!(!h.connected);
    assert_eq!(h.reconnects, 0);

    r.restart();
    s.ping().await.unwrap();
    let h = s.health();
    assert!(h.connected);
    assert_eq!(h.reconnects, 1);

    // Something that accepts connections but never answers (a black hole), which then
    // turns into a working Redis (the balancer in front is re-pointed).
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = Lb::start(vec![hole.local_addr().unwrap()]).await;
    let s = RedisStore::new(
        config(format!("redis://{}/0", lb.addr)),
        Arc::new(SystemClock),
    )
    .unwrap();
    fails_fast("ping (black hole)", s.ping()).await;
    fails_fast(
        "claim_once (black hole)",
        s.claim_once("k", Duration::from_secs(1)),
    )
    .await;
    lb.set_backend(0, r.addr());
    eventually("ping after the black hole", async || s.ping().await.is_ok()).await;
    drop(hole);
}

/// Polls `check` every 50 ms until it holds (panics after 10 s).
async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_calls_out_and_the_tail_recovers_when_it_wakes() {
    let r = RedisServer::start();
    let (publisher, follower) = (store(&r), store(&r));
    let (_, pos) = follower.snapshot().await.unwrap();
    let mut tail = follower.tail(pos);
    publisher.publish(&[user(1)]).await.unwrap();
    assert_eq!(
        take_records(&mut tail, 1, Duration::from_secs(5)).await[0].1,
        user(1)
    );

    r.pause();
    fails_fast("publish (hung)", publisher.publish(&[user(2)])).await;
    fails_fast("snapshot (hung)", follower.snapshot()).await;
    // The tail's blocking read gives up after block + op timeout and says so.
    eventually("tail notices", async || !follower.health().connected).await;
    r.resume();

    eventually("publish after waking", async || {
        publisher.publish(&[user(3)]).await.is_ok()
    })
    .await;
    let mut got = Vec::new();
    while !got.contains(&user(3)) {
        got.extend(
            take_records(&mut tail, 1, Duration::from_secs(10))
                .await
                .into_iter()
                .map(|g| g.1),
        );
    }
    // user(2) timed out for its caller (who keeps it in the outbox) but was still in the
    // socket when Redis woke, so it may have been applied: then it comes first.
    assert!(got == [user(3)] || got == [user(2), user(3)], "{got:?}");
    eventually("tail reconnected", async || follower.health().connected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_the_url_or_the_file() {
    let r = RedisServer::start_with(RedisOpts {
        password: Some("s3cret-pw".into()),
        ..RedisOpts::default()
    });
    let without = store(&r);
    let err = without.ping().await.expect_err("no password, no entry");
    assert!(!err.to_string().contains("s3cret-pw"));

    let in_url = RedisStore::new(config(r.url_with_password()), Arc::new(SystemClock)).unwrap();
    in_url.ping().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis.password");
    std::fs::write(&file, "s3cret-pw\n").unwrap();
    let mut cfg = config(r.url());
    cfg.password = Some(RedisConfig::read_password_file(&file).unwrap());
    assert!(!format!("{cfg:?}").contains("s3cret-pw"));
    let from_file = RedisStore::new(cfg, Arc::new(SystemClock)).unwrap();
    from_file.publish(&[user(1)]).await.unwrap();
    assert_eq!(
        from_file.snapshot().await.unwrap().0.records(),
        vec![user(1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_forgets_old_revocations_except_all_and_late_tails_resync() {
    let r = RedisServer::start();
    let s = store(&r);
    let now = SystemClock.now_us();
    let hour = 3_600_000_000;
    let old_user = rec(Scope::User, "old@example.com", now - hour);
    let old_all = rec(Scope::All, "", now - hour);
    let new_user = rec(Scope::User, "new@example.com", now + hour);
    s.publish(&[old_user, old_all.clone(), new_user.clone()])
        .await
        .unwrap();

    let stats = s.prune(now + 1_000_000).await.unwrap();
    assert_eq!(stats.hash_removed, 1);
    assert_eq!(
        stats.stream_trimmed, 3,
        "every entry was added before the horizon"
    );
    let (snap, pos) = s.snapshot().await.unwrap();
    assert_eq!(
        sorted(snap.records()),
        sorted(vec![old_all.clone(), new_user.clone()])
    );

    // A tail that wanted entries that were trimmed gets the snapshot instead.
    let mut tail = s.tail(StreamId::ZERO);
    match tokio::time::timeout(Duration::from_secs(5), tail.next()).await {
        Ok(Some(TailEvent::Resync {
            records,
            position,
            reason,
        })) => {
            assert_eq!(reason, ResyncReason::Trimmed);
            assert_eq!(position, pos);
            assert_eq!(sorted(records), sorted(vec![old_all, new_user]));
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    s.publish(&[user(7)]).await.unwrap();
    assert_eq!(
        take_records(&mut tail, 1, Duration::from_secs(5)).await[0].1,
        user(7)
    );
}

/// The snapshot keeps entries in buckets of many keys, edited by a Lua script: with
/// 20,000 keys (about five per bucket) published in batches, then newer records for some
/// and older ones for others (also within one batch), it holds exactly the newest record
/// of every key; pruning drops exactly the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucketed_snapshot_keeps_exactly_the_newest_record_of_every_key() {
    let r = RedisServer::start();
    let s = store(&r);
    let target = |i: usize| match i % 4 {
        0 => format!("u{i}@example.com"),
        1 => format!("sid-{i}-ßé✓"),
        2 => format!("group-{i}-{}", "x".repeat(i % 300)),
        _ => format!("app{i}"),
    };
    let scope = |i: usize| [Scope::User, Scope::Session, Scope::Group, Scope::App][i % 4];
    let mut want = std::collections::HashMap::new();
    for batch in (0..20_000).collect::<Vec<_>>().chunks(2_000) {
        let recs: Vec<_> = batch
            .iter()
            .map(|&i| rec(scope(i), &target(i), 1_000_000 + i as i64))
            .collect();
        s.publish(&recs).await.unwrap();
        for r in recs {
            want.insert((r.scope, r.target.clone()), r);
        }
    }
    // Newer for every third key, older for every fifth, both for every fifteenth (in one
    // batch: the newer wins whatever the order).
    let mut later = Vec::new();
    for i in (0..20_000).step_by(3) {
        let newer = rec(scope(i), &target(i), 5_000_000 + i as i64);
        want.insert((newer.scope, newer.target.clone()), newer.clone());
        later.push(newer);
    }
    for i in (0..20_000).step_by(5) {
        later.push(rec(scope(i), &target(i), 10 + i as i64));
    }
    for chunk in later.chunks(1_500) {
        s.publish(chunk).await.unwrap();
    }
    let (snap, _) = s.snapshot().await.unwrap();
    assert_eq!(snap.count, 20_000);
    let got: std::collections::HashMap<_, _> = snap
        .records()
        .into_iter()
        .map(|r| ((r.scope, r.target.clone()), r))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the snapshot differs from the newest records");

    // Pruning below 5,000,000 keeps exactly the newer third.
    let stats = s.prune(5_000_000).await.unwrap();
    assert_eq!(stats.hash_removed, 20_000 - 20_000_u64.div_ceil(3));
    let (snap, _) = s.snapshot().await.unwrap();
    assert_eq!(snap.count as u64, 20_000_u64.div_ceil(3));
    assert!(snap.records().iter().all(|r| r.not_before_us >= 5_000_000));
}

/// Earlier versions kept one JSON record per field in `<prefix>:revset`: those records
/// are still in the snapshot (and pruned) after an upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_the_earlier_snapshot_layout_are_still_read_and_pruned() {
    let r = RedisServer::start();
    let s = store(&r);
    let (old, kept) = (
        rec(Scope::User, "old@example.com", 100),
        rec(Scope::Group, "eng", 9_000_000),
    );
    for x in [&old, &kept] {
        let field = format!("{}:{}", x.scope.as_str(), x.target);
        let json = serde_json::to_string(x).unwrap();
        r.cli(&["HSET", "portcullis:revset", &field, &json]);
    }
    s.publish(&[user(1)]).await.unwrap();
    let (snap, _) = s.snapshot().await.unwrap();
    assert_eq!(
        sorted(snap.records()),
        sorted(vec![old, kept.clone(), user(1)])
    );
    let stats = s.prune(1_000_000).await.unwrap();
    assert_eq!(stats.hash_removed, 2, "old and user(1)");
    let (snap, _) = s.snapshot().await.unwrap();
    assert_eq!(snap.records(), vec![kept]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_resyncs_when_redis_comes_back_without_its_data() {
    let mut r = RedisServer::start();
    let s = store(&r);
    s.publish(&[user(1), user(2)]).await.unwrap();
    let (_, pos) = s.snapshot().await.unwrap();
    let mut tail = s.tail(pos);
    // Let the tail connect and block on its read, then lose Redis and its files.
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.kill9();
    let aof = r.dir().join("appendonlydir");
    std::fs::remove_dir_all(&aof).unwrap();
    r.restart();
    assert_eq!(r.cli(&["EXISTS", "portcullis:revocations"]), "0");

    match tokio::time::timeout(Duration::from_secs(10), tail.next()).await {
        Ok(Some(TailEvent::Resync {
            records, reason, ..
        })) => {
            assert_eq!(reason, ResyncReason::StreamRegressed);
            assert!(records.is_empty(), "Redis has nothing left: {records:?}");
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    s.publish(&[user(3)]).await.unwrap();
    assert_eq!(
        take_records(&mut tail, 1, Duration::from_secs(5)).await[0].1,
        user(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_hands_waiting_revocations_over_when_redis_is_back() {
    let mut r = RedisServer::start();
    let s = store(&r);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("redis-outbox")).unwrap());
    r.kill9();
    let waiting = vec![user(1), user(2), user(3)];
    let err = s.publish(&waiting).await.unwrap_err();
    assert!(err.is_unavailable());
    outbox.push(&waiting).unwrap();
    let err = s.flush_outbox(&outbox).await.unwrap_err();
    assert!(err.is_unavailable());
    assert_eq!(
        outbox.pending().unwrap(),
        waiting,
        "nothing leaves while Redis is down"
    );

    // The node restarts too: the outbox is read back from disk.
    drop(outbox);
    let outbox = Arc::new(Outbox::open(&dir.path().join("redis-outbox")).unwrap());
    r.restart();
    assert_eq!(s.flush_outbox(&outbox).await.unwrap(), 3);
    assert!(outbox.is_empty().unwrap());
    assert_eq!(s.flush_outbox(&outbox).await.unwrap(), 0);
    assert_eq!(sorted(s.snapshot().await.unwrap().0.records()), waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let r = RedisServer::start_with(RedisOpts {
        tls: true,
        ..RedisOpts::default()
    });
    let mut cfg = config(r.url());
    assert!(cfg.url.starts_with("rediss://127.0.0.1:"));
    cfg.ca_pem = r.ca_pem();
    let s = RedisStore::new(cfg, ManualClock::starting_now()).unwrap();
    s.publish(&[user(1)]).await.unwrap();
    let (snap, pos) = s.snapshot().await.unwrap();
    assert_eq!(snap.records(), vec![user(1)]);
    let mut tail = s.tail(pos);
    s.publish(&[user(2)]).await.unwrap();
    assert_eq!(
        take_records(&mut tail, 1, Duration::from_secs(5)).await[0].1,
        user(2)
    );

    // Without the CA the server's certificate is not trusted: a prompt error, no hang.
    let untrusted = RedisStore::new(config(r.url()), Arc::new(SystemClock)).unwrap();
    let started = Instant::now();
    assert!(untrusted.ping().await.is_err());
    assert!(started.elapsed() < OP_TIMEOUT + Duration::from_millis(400));
    assert_eq!(r.cli(&["XLEN", "portcullis:revocations"]), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_clusters_apart() {
    let r = RedisServer::start();
    let a = store(&r);
    let mut cfg = config(r.url());
    cfg.prefix = "other".into();
    let b = RedisStore::new(cfg, Arc::new(SystemClock)).unwrap();
    a.publish(&[user(1)]).await.unwrap();
    assert_eq!(b.snapshot().await.unwrap().0.count, 0);
    assert!(b.claim_once("k", Duration::from_secs(5)).await.unwrap());
    assert!(a.claim_once("k", Duration::from_secs(5)).await.unwrap());
    let keys: HashSet<String> = r.cli(&["--scan"]).lines().map(str::to_owned).collect();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("portcullis:") || k.starts_with("other:")),
        "{keys:?}"
    );
}
