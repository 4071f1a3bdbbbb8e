//! The checker checked: small made-up histories with known violations (and known
//! non-violations) that it must find (and not find). Runs before every soak, so a
//! checker that cannot fail never reports "all goals met".

use crate::check::{Listing, Report, check, lost_in_listings};
use crate::history::{
    Ack, Entry, Event, History, Kind, Request, Revocation, SEC, Scope, T, Token, Via,
};
use crate::model::Params;

fn params() -> Params {
    Params {
        grace: SEC,
        push_window: 300_000,
        reconnect: 2 * SEC,
        max_staleness: 3 * SEC,
    }
}

fn token(sid: &str, email: &str, iat_us: i64) -> Token {
    Token {
        jti: format!("jti-{sid}"),
        sid: sid.into(),
        email: email.into(),
        groups: vec!["g0".into()],
        app: "echo".into(),
        iat_us,
        obtained: 0,
        cookie: String::new(),
        host: String::new(),
    }
}

fn history(redis: bool) -> History {
    History {
        nodes: 3,
        redis,
        tokens: vec![
            token("s0", "u0@example.com", 1_000),
            token("s1", "u1@example.com", 1_000),
        ],
        ..Default::default()
    }
}

/// Session s0 revoked at node 1, acknowledged at 1 s (instant 5000).
fn revoke_s0(h: &mut History, propagated: bool) {
    h.revocations.push(Revocation {
        n: h.revocations.len(),
        scope: Scope::Session,
        target: "s0".into(),
        entry: Entry::Api,
        reason: "t".into(),
        node: Some(0),
        sent: 900_000,
        done: SEC,
        ack: Some(Ack {
            status: 200,
            id: "r0".into(),
            nb_lo: 5_000,
            nb_hi: 5_000,
            peers_acked: 0,
            peers: 2,
            propagated,
        }),
        failure: String::new(),
    });
}

fn req(h: &mut History, token: usize, node: usize, sent: T, status: u16, reason: &str) {
    req_as(h, Kind::Browser, token, node, sent, status, reason);
}

fn req_as(
    h: &mut History,
    kind: Kind,
    token: usize,
    node: usize,
    sent: T,
    status: u16,
    reason: &str,
) {
    h.requests.push(Request {
        id: h.requests.len() as u64,
        token,
        via: Via::Node(node),
        node: Some(node),
        sent,
        done: sent + 1_000,
        status,
        reason: reason.into(),
        kind,
    });
}

fn expect(what: &str, got: usize, want: usize, rep: &Report) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "checker self-test, {what}: found {got}, expected {want}: {rep:?}"
        ))
    }
}

/// A history with no violation: s0 revoked at node 1 (acknowledged at 1 s), accepted
/// before and within a second after, refused from then on everywhere (the prober saw
/// the first refusals), s1 accepted throughout, a documented 503. Every node lists the
/// revocation at the end.
pub fn good() -> Report {
    let mut h = history(false);
    revoke_s0(&mut h, true);
    req(&mut h, 0, 1, 500_000, 200, "");
    req(&mut h, 0, 2, 1_400_000, 200, "");
    for n in 0..3 {
        req_as(
            &mut h,
            Kind::Probe,
            0,
            n,
            SEC + 2_000 * n as T,
            401,
            "revoked",
        );
        req(&mut h, 1, n, 3 * SEC, 200, "");
    }
    req(&mut h, 0, 1, 2 * SEC, 401, "revoked");
    req(&mut h, 1, 0, 4 * SEC, 503, "catching up with the cluster");
    let mut rep = check(&h, &params());
    rep.lost = lost_in_listings(&h, &[listing(5_000), listing(5_000), listing(9_000)]);
    rep
}

fn listing(nb: i64) -> Listing {
    Listing::from([((Scope::Session, "s0".to_string()), (nb, "r0".to_string()))])
}

/// Goal 3's input: node 2 lists no revocation, node 3 only an older one of the key.
pub fn lost() -> Report {
    let mut h = history(false);
    revoke_s0(&mut h, true);
    let mut rep = check(&h, &params());
    rep.lost = lost_in_listings(&h, &[listing(5_000), Listing::new(), listing(4_999)]);
    rep
}

pub fn run() -> Result<(), String> {
    let rep = good();
    if !rep.goals_met() {
        return Err(format!(
            "checker self-test: a good history misses the goals: {rep:?}"
        ));
    }
    expect(
        "propagation to the other nodes",
        rep.propagation.len(),
        2,
        &rep,
    )?;
    expect(
        "propagation on the taking node",
        rep.propagation_origin.len(),
        1,
        &rep,
    )?;
    let rep = lost();
    expect("lost revocations", rep.lost.len(), 2, &rep)?;
    if rep.goals_met() {
        return Err("checker self-test: lost revocations meet the goals".into());
    }

    // Fault-free: accepted 0.5 s after the ack is fine, 1.5 s after is late.
    let mut h = history(false);
    revoke_s0(&mut h, true);
    req(&mut h, 0, 1, 1_500_000, 200, "");
    req(&mut h, 0, 2, 2_500_000, 200, "");
    req(&mut h, 0, 0, 1_200_000, 200, "");
    let rep = check(&h, &params());
    expect("late accept, fault-free", rep.late.len(), 1, &rep)?;
    expect(
        "late accept counted fault-free",
        rep.late_fault_free,
        1,
        &rep,
    )?;
    expect(
        "accepted where it was taken",
        rep.origin_late.len(),
        1,
        &rep,
    )?;

    // Node 3 cut off from 0.5 s to 10 s: it may serve s0 until 11 s (it could not
    // learn it before 10 s), but as a cut-off node only until 4.5 s.
    let mut h = history(false);
    for (a, b) in [(2, 0), (0, 2), (2, 1), (1, 2)] {
        h.events.push((500_000, Event::Cut(a, b), String::new()));
        h.events.push((10 * SEC, Event::Heal(a, b), String::new()));
    }
    revoke_s0(&mut h, true);
    req(&mut h, 0, 2, 3 * SEC, 200, "");
    req(&mut h, 0, 2, 10_500_000, 200, "");
    req(&mut h, 0, 2, 11_500_000, 200, "");
    req(&mut h, 1, 2, 5 * SEC, 200, "");
    let rep = check(&h, &params());
    expect("late accept after a partition", rep.late.len(), 1, &rep)?;
    expect("cut-off node serving", rep.stale_serving.len(), 1, &rep)?;

    // Cut off from 0.5 s with its clock stepped back 3 s at 1 s: the node measures
    // staleness on its monotonic clock, so serving at 6 s and at 9 s are both violations.
    let mut h = history(false);
    for (a, b) in [(2, 0), (0, 2), (2, 1), (1, 2)] {
        h.events.push((500_000, Event::Cut(a, b), String::new()));
    }
    h.events.push((SEC, Event::Clock(2, -3000), String::new()));
    req(&mut h, 1, 2, 6 * SEC, 200, "");
    req(&mut h, 1, 2, 9 * SEC, 200, "");
    let rep = check(&h, &params());
    expect(
        "cut-off node serving, clock stepped back",
        rep.stale_serving.len(),
        2,
        &rep,
    )?;

    // Only the push is cut (node 1 -> node 2): node 2 still pulls at once.
    let mut h = history(false);
    h.events.push((500_000, Event::Cut(0, 1), String::new()));
    revoke_s0(&mut h, true);
    req(&mut h, 0, 1, 2_500_000, 200, "");
    let rep = check(&h, &params());
    expect("late accept despite a one-way cut", rep.late.len(), 1, &rep)?;

    // Redis: node 2's link cut from 0.5 s to 3 s; it is reconnected by 5 s.
    let mut h = history(true);
    h.events.push((500_000, Event::RedisCut(1), String::new()));
    h.events.push((3 * SEC, Event::RedisHeal(1), String::new()));
    revoke_s0(&mut h, true);
    req(&mut h, 0, 1, 5_500_000, 200, "");
    req(&mut h, 0, 1, 6_500_000, 200, "");
    let rep = check(&h, &params());
    expect("late accept after a Redis cut", rep.late.len(), 1, &rep)?;

    // Refusals: s1 is covered by nothing until an unacknowledged user revocation.
    let mut h = history(false);
    revoke_s0(&mut h, true);
    req(&mut h, 0, 1, 2 * SEC, 401, "revoked");
    req(&mut h, 1, 1, 2 * SEC, 401, "revoked?");
    h.revocations.push(Revocation {
        n: 1,
        scope: Scope::User,
        target: "U1@example.com".into(),
        entry: Entry::Cli,
        reason: "t".into(),
        node: Some(1),
        sent: 4 * SEC,
        done: 4_100_000,
        ack: None,
        failure: "timed out".into(),
    });
    req(&mut h, 1, 2, 5 * SEC, 401, "revoked");
    let rep = check(&h, &params());
    expect("valid token refused", rep.valid_refused.len(), 1, &rep)?;

    // Clock skew: s0's token stamped after the revocation's instant (its node's clock
    // ahead) though obtained before it was sent, accepted 2 s after the ack; s1's token
    // obtained after a user revocation's ack, stamped before it, refused. Both are
    // violations (nodes stamp in the cluster's time), counted apart from the others.
    let mut h = history(false);
    h.tokens[0].iat_us = 9_000;
    h.tokens[1].obtained = 5 * SEC;
    revoke_s0(&mut h, true);
    h.revocations.push(Revocation {
        n: 1,
        scope: Scope::User,
        target: "u1@example.com".into(),
        entry: Entry::Api,
        reason: "t".into(),
        node: Some(1),
        sent: 3 * SEC,
        done: 3_100_000,
        ack: Some(Ack {
            status: 200,
            id: "r1".into(),
            nb_lo: 6_000,
            nb_hi: 6_000,
            peers_acked: 2,
            peers: 2,
            propagated: true,
        }),
        failure: String::new(),
    });
    req(&mut h, 0, 1, 3 * SEC, 200, "");
    req(&mut h, 1, 2, 6 * SEC, 401, "revoked");
    let rep = check(&h, &params());
    expect("skew: accepted", rep.skew_misses.len(), 1, &rep)?;
    expect("skew: refused", rep.skew_refused.len(), 1, &rep)?;
    expect("skew: goals missed", usize::from(rep.goals_met()), 0, &rep)?;
    expect("skew: no late accept", rep.late.len(), 0, &rep)?;
    expect(
        "skew: no valid token refused",
        rep.valid_refused.len(),
        0,
        &rep,
    )?;

    // 5xx: a documented 503 is fine, a 502 or a 503 without a reason is not.
    let mut h = history(false);
    req(
        &mut h,
        0,
        0,
        SEC,
        503,
        "refusing to serve: cut off from all 2 peers for 3s",
    );
    req(&mut h, 0, 0, SEC, 503, "");
    req(&mut h, 0, 0, SEC, 502, "the origin could not be reached");
    let rep = check(&h, &params());
    expect("undocumented 5xx", rep.bad_5xx.len(), 2, &rep)?;
    expect("documented 503", rep.documented_503, 1, &rep)?;
    Ok(())
}
