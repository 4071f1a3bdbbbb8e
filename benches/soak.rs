//! The soak with faults: `benches/soak.sh [--minutes N] [--backend peers|redis|both]`
//! (or `cargo bench --bench soak -- ...`). For each backend: three real `portcullis run`
//! processes on loopback behind a round-robin balancer, many simulated browsers signing
//! in and calling the app, revocations of every scope through every entry point, and
//! faults (kill -9 and restart of nodes and of Redis, partitions through cuttable TCP
//! links, clock steps); then every process is killed at once and restarted, and a
//! checker reads the whole history and reports against the goals. Exits non-zero when
//! a goal is missed. Not part of the test suite: it runs for minutes.
//!
//! Options: `--minutes N` (per backend, default 10; fractions allowed), `--backend`
//! (default both), `--browsers N` (default 36), `--users N` (default 24),
//! `--max-skew-ms N` (largest clock offset, default 4000), `--seed N`, `--keep` (keep
//! the work folder even when every goal is met), `--binary PATH` (the gateway binary;
//! default the one cargo built with this benchmark), `--check history.json` (only run
//! the checker on the history a soak kept).
//!
//! The modules live in `benches/soak/`.

#[path = "soak/browser.rs"]
mod browser;
#[path = "soak/check.rs"]
mod check;
#[path = "soak/ctx.rs"]
mod ctx;
#[path = "soak/faults.rs"]
mod faults;
#[path = "soak/finale.rs"]
mod finale;
#[path = "soak/fleet.rs"]
mod fleet;
#[path = "soak/history.rs"]
mod history;
#[path = "soak/model.rs"]
mod model;
#[path = "soak/net.rs"]
mod net;
#[path = "soak/revoker.rs"]
mod revoker;
#[path = "soak/selftest.rs"]
mod selftest;

use check::{Report, dist};
use ctx::Ctx;
use fleet::{Backend, Fleet, MAX_STALENESS_S};
use history::{Entry, Event, History, Kind, Recorder, SEC, Scope};
use model::Params;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

struct Args {
    minutes: f64,
    backends: Vec<Backend>,
    browsers: usize,
    users: usize,
    max_skew_ms: i64,
    seed: u64,
    keep: bool,
    binary: PathBuf,
    check: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        minutes: 10.0,
        backends: vec![Backend::Peers, Backend::Redis],
        browsers: 36,
        users: 24,
        max_skew_ms: 4000,
        seed: std::process::id() as u64,
        keep: false,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_portcullis")),
        check: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or(format!("{k} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--bench" => {}
            "--minutes" => a.minutes = num(val()?)?,
            "--browsers" => a.browsers = num(val()?)? as usize,
            "--users" => a.users = num(val()?)? as usize,
            "--max-skew-ms" => a.max_skew_ms = num(val()?)? as i64,
            "--seed" => a.seed = num(val()?)? as u64,
            "--binary" => a.binary = PathBuf::from(val()?),
            "--keep" => a.keep = true,
            "--check" => a.check = Some(PathBuf::from(val()?)),
            "--backend" => {
                a.backends = match val()?.as_str() {
                    "peers" => vec![Backend::Peers],
                    "redis" => vec![Backend::Redis],
                    "both" => vec![Backend::Peers, Backend::Redis],
                    b => return Err(format!("unknown backend {b}")),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.minutes.is_nan() || a.minutes <= 0.0 || a.browsers == 0 || a.users == 0 {
        return Err("--minutes, --browsers and --users must be positive".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = selftest::run() {
        eprintln!("soak: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(path) = &a.check {
        return match recheck(&a, path) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("soak: {}: {e:#}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = rt.block_on(run_all(&a));
    rt.shutdown_timeout(Duration::from_secs(5));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_all(a: &Args) -> bool {
    let work = match tempfile::Builder::new()
        .prefix("portcullis-soak-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("soak: {e}");
            return false;
        }
    };
    println!("soak: work folder {}", work.path().display());
    let mut ok = true;
    let mut summaries = Vec::new();
    for (k, &b) in a.backends.iter().enumerate() {
        let root = work.path().join(b.name());
        let running: Arc<Mutex<Option<Arc<Fleet>>>> = Arc::default();
        // Bounded: the load phase, then at most five minutes for the rest.
        let limit = Duration::from_secs_f64(a.minutes * 60.0 + 300.0);
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, run_backend(a, b, &root, a.seed + k as u64, running.clone())) => {
                r.unwrap_or_else(|_| Err(anyhow::anyhow!("did not finish within {limit:?}")))
            }
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        if let Some(f) = running.lock().expect("fleet slot").take() {
            f.stop_all();
        }
        match outcome {
            Ok((rep, text)) => {
                ok &= rep.goals_met();
                summaries.push(text);
            }
            Err(e) => {
                eprintln!("soak {}: {e:#}", b.name());
                ok = false;
                if e.to_string() == "interrupted" {
                    break;
                }
            }
        }
    }
    for s in &summaries {
        println!("\n{s}");
    }
    if ok && !a.keep {
        println!("soak: every goal met");
    } else {
        let kept = work.keep();
        println!(
            "soak: {}; history and node logs kept in {}",
            if ok { "every goal met" } else { "GOALS MISSED" },
            kept.display()
        );
    }
    ok
}

async fn run_backend(
    a: &Args,
    backend: Backend,
    root: &std::path::Path,
    seed: u64,
    slot: Arc<Mutex<Option<Arc<Fleet>>>>,
) -> anyhow::Result<(Report, String)> {
    println!(
        "soak {}: starting 3 nodes ({} browsers, {} users, {} min)",
        backend.name(),
        a.browsers,
        a.users,
        a.minutes
    );
    let rec = Recorder::new(3, backend == Backend::Redis);
    let fleet = Arc::new(
        Fleet::start(
            backend,
            root,
            &a.binary,
            3,
            fleet::users(a.users),
            rec.clone(),
        )
        .await?,
    );
    *slot.lock().expect("fleet slot") = Some(fleet.clone());
    let lb =
        net::Balancer::start(fleet.nodes.iter().map(|n| net::loopback(n.https)).collect()).await?;
    let ctx = Arc::new(Ctx::new(
        rec.clone(),
        fleet.clone(),
        a.binary.clone(),
        lb.addr,
        a.minutes,
        a.max_skew_ms,
    )?);
    let mut tasks = JoinSet::new();
    for i in 0..a.browsers {
        let b = browser::Browser::new(&ctx, i, seed.wrapping_mul(1000) + i as u64);
        tasks.spawn(b.run(ctx.clone()));
    }
    tasks.spawn(revoker::run(ctx.clone(), seed ^ 0xdead));
    let faults = tokio::spawn(faults::run(ctx.clone(), seed ^ 0xfa17));
    let problems = faults
        .await
        .unwrap_or_else(|e| vec![format!("faults: {e}")]);
    let left = tokio::time::timeout(Duration::from_secs(60), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if left.is_err() {
        tasks.abort_all();
    }
    rec.with(|h| {
        h.load_end = rec.now();
        h.problems.extend(problems);
    });
    println!(
        "soak {}: load phase over; final crash and check",
        backend.name()
    );
    finale::run(&ctx).await;
    let spread = lb.connections();
    fleet.stop_all();
    let h = rec.h.lock().expect("history lock");
    std::fs::write(root.join("history.json"), serde_json::to_vec(&*h)?)?;
    let rep = check::check(&h, &params(backend));
    let text = summary(a, backend, &h, &rep, &spread);
    std::fs::write(root.join("report.txt"), &text)?;
    let details = details(&rep);
    if !details.is_empty() {
        std::fs::write(root.join("violations.txt"), &details)?;
        println!(
            "{}",
            details.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    let findings = findings(&rep);
    if !findings.is_empty() {
        std::fs::write(root.join("findings.txt"), &findings)?;
        println!(
            "{}",
            findings.lines().take(6).collect::<Vec<_>>().join("\n")
        );
    }
    Ok((rep, text))
}

fn params(backend: Backend) -> Params {
    Params {
        grace: SEC,
        push_window: 300_000,
        reconnect: match backend {
            Backend::Peers => 0,
            Backend::Redis => 2 * SEC,
        },
        max_staleness: MAX_STALENESS_S as i64 * SEC,
    }
}

/// `--check history.json`: the checker alone, on the history a soak kept.
fn recheck(a: &Args, path: &std::path::Path) -> anyhow::Result<bool> {
    let h: History = serde_json::from_slice(&std::fs::read(path)?)?;
    let b = if h.redis {
        Backend::Redis
    } else {
        Backend::Peers
    };
    let rep = check::check(&h, &params(b));
    println!("{}", details(&rep));
    println!("{}", findings(&rep));
    println!("{}", summary(a, b, &h, &rep, &[]));
    Ok(rep.goals_met())
}

fn count<T>(v: &[T], f: impl Fn(&T) -> bool) -> usize {
    v.iter().filter(|x| f(x)).count()
}

fn summary(a: &Args, b: Backend, h: &History, rep: &Report, spread: &[u64]) -> String {
    let q = &h.requests;
    let st = |s: u16| count(q, |r| r.status == s && r.kind == Kind::Browser);
    let mut out = format!(
        "soak {} ({:.1} min of load, 3 nodes, {} browsers, {} users, seed {})\n",
        b.name(),
        h.load_end as f64 / 60e6,
        a.browsers,
        a.users,
        a.seed
    );
    out += &format!(
        "  load: {} protected requests from browsers (200: {}, 401: {}, 503: {}, no answer: {}), {} more from the prober and the final check; {} tokens obtained; balancer connections per node {:?}\n",
        count(q, |r| r.kind == Kind::Browser),
        st(200),
        st(401),
        st(503),
        st(0),
        count(q, |r| r.kind != Kind::Browser),
        h.tokens.len(),
        spread
    );
    let rv = &h.revocations;
    let by_entry = |e: Entry| count(rv, |r| r.entry == e);
    let by_scope = |s: Scope| count(rv, |r| r.scope == s);
    out += &format!(
        "  revocations: {} sent (API {}, bulk rows {}, DELETE session {}, logout {}, CLI {}; session {}, user {}, group {}, app {}, all {}), {} acknowledged ({} with 202: held in the outbox)\n",
        rv.len(),
        by_entry(Entry::Api),
        by_entry(Entry::Bulk),
        by_entry(Entry::DeleteSession),
        by_entry(Entry::Logout),
        by_entry(Entry::Cli),
        by_scope(Scope::Session),
        by_scope(Scope::User),
        by_scope(Scope::Group),
        by_scope(Scope::App),
        by_scope(Scope::All),
        count(rv, |r| r.ack.is_some()),
        count(rv, |r| r.ack.as_ref().is_some_and(|a| a.status == 202)),
    );
    out += &format!("  faults: {}\n", faults_line(h));
    let goal = |n: usize| {
        if n == 0 {
            "0  ok".to_string()
        } else {
            format!("{n}  MISSED")
        }
    };
    out += "  goals:\n";
    out += &format!(
        "    revoked tokens accepted > 1 s after the node could know: {} ({} with no fault in the way)\n",
        goal(rep.late.len()),
        rep.late_fault_free
    );
    out += &format!(
        "    valid tokens refused: {}\n",
        goal(rep.valid_refused.len())
    );
    out += &format!(
        "    acknowledged revocations lost after the final kill -9 of everything: {} (checked {} x 3 nodes)\n",
        goal(rep.lost.len()),
        count(rv, |r| r.ack.is_some())
    );
    out += &format!(
        "    5xx other than documented 503s: {} (documented 503s: {})\n",
        goal(rep.bad_5xx.len()),
        rep.documented_503
    );
    out += &format!(
        "    the node that took a revocation accepting its tokens after acknowledging it: {}\n",
        goal(rep.origin_late.len())
    );
    out += &format!(
        "    cut-off nodes serving past max_staleness + 1 s: {}\n",
        goal(rep.stale_serving.len()),
    );
    if !rep.problems.is_empty() {
        out += &format!(
            "    problems running the soak: {}\n",
            goal(rep.problems.len())
        );
    }
    out += &format!(
        "  propagation, ack -> first refusal seen on each other node, no fault in the way: {}\n",
        dist(&rep.propagation)
    );
    out += &format!(
        "    with a fault in the way (a node down or cut off, Redis down): {}\n",
        dist(&rep.propagation_fault)
    );
    out += &format!(
        "    on the node that took it: {}\n",
        dist(&rep.propagation_origin)
    );
    out += &format!(
        "    clock skew: tokens obtained before a revocation was sent, stamped after its instant, accepted > 1 s after its ack: {} (largest gap {:.0} ms)\n",
        goal(rep.skew_misses.len()),
        rep.max_skew_miss_ms
    );
    out += &format!(
        "    clock skew: refusals of tokens obtained after every covering revocation's ack, stamped before its instant: {}\n",
        goal(rep.skew_refused.len())
    );
    out += &format!(
        "  result: {}\n",
        if rep.goals_met() {
            "every goal met"
        } else {
            "GOALS MISSED"
        }
    );
    out
}

fn faults_line(h: &History) -> String {
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut in_fault, mut since) = (0i64, None);
    for (t, e, note) in &h.events {
        match e {
            Event::FaultStart => {
                let kind = note.split('(').next().unwrap_or(note).to_string();
                *kinds.entry(kind).or_default() += 1;
                since = Some(*t);
            }
            Event::FaultEnd => {
                if let Some(s) = since.take() {
                    in_fault += t - s;
                }
            }
            _ => {}
        }
    }
    let steps = count(&h.events, |(t, e, _)| {
        matches!(e, Event::Clock(..)) && *t <= h.load_end
    });
    let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        "{} ({}), {:.0}% of the load phase in a fault; {} clock steps (largest offset {:.1} s)",
        kinds.values().sum::<usize>(),
        list.join(", "),
        100.0 * in_fault as f64 / h.load_end.max(1) as f64,
        steps,
        h.max_offset_us as f64 / 1e6
    )
}

fn details(rep: &Report) -> String {
    let mut out = String::new();
    for (what, v) in [
        ("LATE", &rep.late),
        ("VALID REFUSED", &rep.valid_refused),
        ("LOST", &rep.lost),
        ("5XX", &rep.bad_5xx),
        ("STALE SERVING", &rep.stale_serving),
        ("ORIGIN LATE", &rep.origin_late),
        ("PROBLEM", &rep.problems),
    ] {
        for line in v {
            out += &format!("{what}: {line}\n");
        }
    }
    out
}

/// Evidence for the clock-skew violations.
fn findings(rep: &Report) -> String {
    let mut misses: Vec<&String> = rep.skew_misses.values().collect();
    misses.sort();
    let mut out = String::new();
    for line in misses {
        out += &format!("SKEW ACCEPTED: {line}\n");
    }
    for line in &rep.skew_refused {
        out += &format!("SKEW REFUSED: {line}\n");
    }
    out
}
