//! Property tests of the revocation set (proptest): the merge is a join-semilattice
//! (commutative, associative, idempotent: any order, any repetition, one or many at a
//! time give the same digests and the same answers), anti-entropy over the wire format
//! converges from any two sets, and a token is refused exactly when a revocation of its
//! scope is at or after its issue time.

use portcullis::clock::{ManualClock, Ticker};
use portcullis::revocation::Scope;
use portcullis::revocation::meta::MetaIndex;
use portcullis::revocation::set::{BUCKETS, RevocationSet};
use portcullis::session::token::Subject;
use portcullis::sync::journal::{Journal, Target};
use portcullis::sync::wire::{
    Entries, differing_buckets, encode_buckets, encode_set, entries_body, put_entry,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Entry = (Scope, String, i64);

/// A few targets per scope, so entries collide on keys often.
fn target(scope: Scope) -> BoxedStrategy<String> {
    match scope {
        Scope::All => Just("*".to_string()).boxed(),
        Scope::User => prop::sample::select(vec![
            "alice@example.com",
            "bob@example.com",
            "é@example.com",
        ])
        .prop_map(str::to_string)
        .boxed(),
        Scope::Session => "[A-Za-z0-9_-]{1,3}".boxed(),
        Scope::Group => prop::sample::select(vec!["staff", "ops", "contractors", "Ünïcode"])
            .prop_map(str::to_string)
            .boxed(),
        Scope::App => prop::sample::select(vec!["echo", "wiki"])
            .prop_map(str::to_string)
            .boxed(),
        // `<email>:<group>`, `*` for every group (the users and groups above).
        Scope::Member => (
            prop::sample::select(vec![
                "alice@example.com",
                "bob@example.com",
                "é@example.com",
            ]),
            prop::sample::select(vec!["staff", "ops", "contractors", "Ünïcode", "*"]),
        )
            .prop_map(|(u, g)| format!("{u}:{g}"))
            .boxed(),
    }
}

fn instant() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -5i64..40,
        1 => Just(i64::MAX),
        1 => (i64::MIN + 1)..i64::MAX,
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop::sample::select(Scope::ALL.to_vec()).prop_flat_map(|s| (Just(s), target(s), instant()))
}

fn entries(max: usize) -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(entry(), 0..max)
}

fn set_of(es: &[Entry]) -> RevocationSet {
    let s = RevocationSet::new();
    for (scope, t, nb) in es {
        s.apply(*scope, t, *nb);
    }
    s
}

/// The model: for each key, the latest instant (`all` ignores its target).
fn model(es: &[Entry]) -> BTreeMap<(u8, String), i64> {
    let mut m = BTreeMap::new();
    for (scope, t, nb) in es {
        let key = (
            *scope as u8,
            if *scope == Scope::All {
                "*".into()
            } else {
                t.clone()
            },
        );
        let v = m.entry(key).or_insert(*nb);
        *v = (*v).max(*nb);
    }
    // `all` at the smallest instant is no revocation at all.
    m.retain(|(s, _), nb| !(*s == Scope::All as u8 && *nb == i64::MIN));
    m
}

fn contents(s: &RevocationSet) -> BTreeMap<(u8, String), i64> {
    s.entries()
        .into_iter()
        .map(|(scope, t, nb)| ((scope as u8, t), nb))
        .collect()
}

/// Merges `from` into `into`, one entry at a time.
fn merge(into: &RevocationSet, from: &RevocationSet) {
    for (scope, t, nb) in from.entries() {
        into.apply(scope, &t, nb);
    }
}

fn same(a: &RevocationSet, b: &RevocationSet) {
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.bucket_digests(), b.bucket_digests());
    assert_eq!(contents(a), contents(b));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        a in entries(24), b in entries(24), c in entries(24)
    ) {
        let (sa, sb, sc) = (set_of(&a), set_of(&b), set_of(&c));
        // Commutative: a ∪ b = b ∪ a.
        let ab = set_of(&a);
        merge(&ab, &sb);
        let ba = set_of(&b);
        merge(&ba, &sa);
        same(&ab, &ba);
        // Associative: (a ∪ b) ∪ c = a ∪ (b ∪ c).
        merge(&ab, &sc);
        let bc = set_of(&b);
        merge(&bc, &sc);
        let a_bc = set_of(&a);
        merge(&a_bc, &bc);
        same(&ab, &a_bc);
        // Idempotent: a ∪ a = a, and merging again changes nothing.
        let aa = set_of(&a);
        merge(&aa, &sa);
        same(&aa, &sa);
        let before = ab.version();
        merge(&ab, &sa);
        merge(&ab, &sc);
        prop_assert_eq!(ab.version(), before, "a repeated merge moved the set");
        // The contents are the model's, and the digest depends on the contents only.
        let all = [a.clone(), b, c].concat();
        prop_assert_eq!(contents(&ab), model(&all));
        same(&ab, &set_of(&ab.entries()));
    }

    #[test]
    fn order_repetition_and_batching_do_not_matter(
        es in entries(40),
        order in any::<prop::sample::Index>(),
        reps in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let one = set_of(&es);
        // Any permutation (rotations and a reversal), with repeated entries.
        let mut shuffled = es.clone();
        if !shuffled.is_empty() {
            let k = order.index(shuffled.len());
            shuffled.rotate_left(k);
            if k % 2 == 1 {
                shuffled.reverse();
            }
            for r in &reps {
                shuffled.push(es[r.index(es.len())].clone());
            }
        }
        same(&one, &set_of(&shuffled));
        // In batches, as a catch-up applies them: the same digests and answers.
        let batched = RevocationSet::new();
        let k = if shuffled.is_empty() { 0 } else { cut.index(shuffled.len()) };
        for part in [&shuffled[..k], &shuffled[k..], &shuffled[..]] {
            batched.apply_batch(part.iter().map(|(s, t, nb)| (*s, t.as_str(), *nb)));
        }
        same(&one, &batched);
        for (scope, t, _) in &es {
            prop_assert_eq!(one.get(*scope, t), batched.get(*scope, t));
        }
    }
}

/// One node: its set, the meta it knows, its sync journal.
struct Node {
    set: RevocationSet,
    meta: MetaIndex,
    journal: Journal,
    dir: tempfile::TempDir,
}

fn node(es: &[Entry]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let set = set_of(es);
    let meta = MetaIndex::default();
    let ticker = Ticker::new(ManualClock::new(0));
    let target = Target {
        set: &set,
        meta: &meta,
        ticker: &ticker,
        horizon: i64::MIN,
    };
    let (journal, _) = Journal::open(dir.path(), &target).unwrap();
    Node {
        set,
        meta,
        journal,
        dir,
    }
}

/// One anti-entropy pull, as `sync::peer::reconcile` and `sync::apply` do it: compare
/// digests, then bucket digests (everything when empty or far behind), pull the entries
/// of the differing buckets in the wire format, keep those that move the set forward,
/// make them durable in the journal and apply them.
fn pull(into: &Node, from: &Node) -> usize {
    if into.set.digest() == from.set.digest() || from.set.is_empty() {
        return 0;
    }
    let want = if into.set.is_empty() {
        None
    } else {
        let diff = differing_buckets(&into.set, &encode_buckets(&from.set)).unwrap();
        let n = diff.iter().filter(|d| **d).count();
        assert!(n > 0, "digests differ but no bucket does");
        (n <= BUCKETS / 4).then_some(diff)
    };
    let msg = encode_set(&from.set, &from.meta, want.as_deref());
    let (count, body) = entries_body(&msg).unwrap();
    let mut fresh = Vec::new();
    let mut n = 0;
    for e in Entries::new(body) {
        let e = e.unwrap();
        n += 1;
        if into
            .set
            .get(e.scope, e.target)
            .is_some_and(|have| have >= e.nb)
        {
            continue;
        }
        put_entry(&mut fresh, e.scope, e.target, e.nb, e.record().as_ref());
    }
    assert_eq!(count, n, "the header's count");
    into.journal
        .append_then(&fresh, || {
            let decoded: Vec<_> = Entries::new(&fresh).map(Result::unwrap).collect();
            into.set
                .apply_batch(decoded.iter().map(|e| (e.scope, e.target, e.nb)))
        })
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn anti_entropy_converges_from_any_two_sets(
        shared in entries(16), only_a in entries(24), only_b in entries(24)
    ) {
        let shared_a = shared.clone();
        let a = node(&[shared.clone(), only_a.clone()].concat());
        let b = node(&[shared.clone(), only_b.clone()].concat());
        pull(&a, &b);
        pull(&b, &a);
        same(&a.set, &b.set);
        let all = [shared, only_a.clone(), only_b].concat();
        prop_assert_eq!(contents(&a.set), model(&all));
        // Nothing left to pull either way.
        prop_assert_eq!(pull(&a, &b), 0);
        prop_assert_eq!(pull(&b, &a), 0);
        // What a pulled is durable: its own entries plus its journal replayed give the
        // set it has now.
        let reopened = set_of(&[shared_a, only_a].concat());
        let meta = MetaIndex::default();
        let ticker = Ticker::new(ManualClock::new(0));
        let target = Target { set: &reopened, meta: &meta, ticker: &ticker, horizon: i64::MIN };
        Journal::open(a.dir.path(), &target).unwrap();
        same(&reopened, &a.set);
    }
}

/// Claims of a token, for the check.
#[derive(Debug, Clone)]
struct Token {
    sid: String,
    sub: String,
    aud: String,
    groups: Vec<String>,
    iat_us: i64,
}

impl Subject for Token {
    fn iat_us(&self) -> i64 {
        self.iat_us
    }
    fn sid(&self) -> &str {
        &self.sid
    }
    fn sub(&self) -> &str {
        &self.sub
    }
    fn aud(&self) -> &str {
        &self.aud
    }
    fn groups(&self) -> &[String] {
        &self.groups
    }
}

fn token() -> impl Strategy<Value = Token> {
    (
        target(Scope::Session),
        target(Scope::User),
        target(Scope::App),
        prop::collection::vec(target(Scope::Group), 0..3),
        // Any issue time but the very first instant, which no clock gives.
        prop_oneof![8 => -5i64..40, 1 => (i64::MIN + 1)..=i64::MAX],
    )
        .prop_map(|(sid, sub, aud, groups, iat_us)| Token {
            sid,
            sub,
            aud,
            groups,
            iat_us,
        })
}

/// The scope that refuses `t`, as the README states the rule: a revocation of the
/// token's session, user, app (app tokens only), one of its groups, its user in one of
/// its groups or in every group (`member`, app tokens only), or `all`, at or after its
/// issue time. The check names them in this order.
fn refused_by(es: &[Entry], t: &Token, app: bool) -> Option<Scope> {
    let m = model(es);
    let covers = |scope: Scope, key: &str| {
        m.get(&(scope as u8, key.to_string()))
            .is_some_and(|nb| *nb >= t.iat_us)
    };
    if covers(Scope::All, "*") {
        return Some(Scope::All);
    }
    if covers(Scope::Session, &t.sid) {
        return Some(Scope::Session);
    }
    if covers(Scope::User, &t.sub) {
        return Some(Scope::User);
    }
    if app && covers(Scope::App, &t.aud) {
        return Some(Scope::App);
    }
    if t.groups.iter().any(|g| covers(Scope::Group, g)) {
        return Some(Scope::Group);
    }
    // `member`: app tokens only, the token's subject and one of its groups, or `*`.
    let member = |g: &str| covers(Scope::Member, &format!("{}:{g}", t.sub));
    (app && (member("*") || t.groups.iter().any(|g| member(g)))).then_some(Scope::Member)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_token_is_refused_iff_a_revocation_of_its_scope_is_not_older(
        es in entries(20), t in token(), app in any::<bool>(), prune in any::<bool>()
    ) {
        let s = set_of(&es);
        if prune {
            // Pruning below every entry drops none, and rebuilds the filter.
            prop_assert_eq!(s.prune(i64::MIN), 0);
        }
        prop_assert_eq!(s.check(&t, app), refused_by(&es, &t, app), "{:?}", t);
        let m = model(&es);
        let covers = |scope: Scope, key: &str| {
            m.get(&(scope as u8, key.to_string())).is_some_and(|nb| *nb >= t.iat_us)
        };
        let session_over = covers(Scope::All, "*")
            || covers(Scope::Session, &t.sid)
            || covers(Scope::User, &t.sub)
            || t.groups.iter().any(|g| covers(Scope::Group, g));
        prop_assert_eq!(s.revokes_session(&t.sid, &t.sub, &t.groups, t.iat_us), session_over);
    }
}
