//! The `portcullis` binary: run, check, hash-password, revoke, sessions, keys, audit.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use http::Method;
use portcullis::config::{Config, Secrets};
use portcullis::control::client::ControlClient;
use portcullis::session::keys::KeyRing;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

// mimalloc's per-thread free lists make the request path's short-lived allocations
// (header maps, body frames, futures) cheaper than glibc malloc does.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Identity-aware reverse proxy with instant, cluster-wide revocation"
)]
struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "gateway.toml",
        env = "PORTCULLIS_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config: exit 0, or 1 with file, field and reason.
    Check,
    /// Read a password on stdin and print its argon2id PHC string.
    HashPassword,
    /// Revoke a user, app, session, group, a user's group membership or everything, through the control port.
    Revoke {
        #[command(flatten)]
        target: RevokeTarget,
        /// A reason code recorded in the audit log (e.g. offboarding).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List live sessions across the cluster.
    Sessions {
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Revoke a canary session here and check that every peer refuses it (exit 1 if not).
    Selftest {
        /// How long each peer may take to refuse the canary.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct RevokeTarget {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    app: Option<String>,
    #[arg(long)]
    session: Option<String>,
    #[arg(long)]
    group: Option<String>,
    /// EMAIL:GROUP: the user's app tokens carrying GROUP (EMAIL:* for all of them); the
    /// global session stays, so the next navigation re-issues a token silently.
    #[arg(long, value_name = "EMAIL:GROUP")]
    member: Option<String>,
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args)]
struct ConnArgs {
    /// Control port URL (default: from [control] listen).
    #[arg(long)]
    url: Option<String>,
    /// Admin bearer token (default: the first [[control.admin]] token_file).
    /// Generated tokens are base64url and may start with '-'.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<String>,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Add a new signing key and make it active; older keys keep verifying.
    Rotate,
    /// List the keys and which one signs.
    List,
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the audit log's hash chain.
    Verify {
        /// The audit log (default: <state_dir>/audit.log).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn init_tracing(config: Option<&Config>) {
    use tracing_subscriber::EnvFilter;
    let level = config.map_or("info".to_string(), |c| c.log.level.clone());
    let filter =
        EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let json = config.is_some_and(|c| c.log.format == portcullis::config::file::LogFormat::Json);
    // Colour codes only for a person at a terminal, never in a file or a pipe.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

/// The process's access log, in `[log] format`, to `[log] access_log_file` or stderr.
/// Started even with `access_log = false`, since a reload may turn it on.
fn start_access_log(config: &Config) -> Result<portcullis::access_log::Guard> {
    use portcullis::access_log::{self, AccessLog, Destination, Settings};
    let dest = match &config.log.access_log_file {
        Some(p) => Destination::File(p.clone()),
        None => Destination::Stderr,
    };
    let log = AccessLog::start(
        Settings::new(config.log.format),
        &dest,
        Arc::new(portcullis::clock::SystemClock),
    )
    .with_context(|| format!("cannot open the access log ({dest:?})"))?;
    access_log::install(log).map_err(|_| anyhow::anyhow!("an access log is already installed"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&config),
        Command::HashPassword => hash_password(),
        Command::Run => run(&config),
        Command::Revoke {
            target,
            reason,
            conn,
        } => revoke(&config, target, reason, &conn),
        Command::Selftest { timeout, conn } => selftest(&config, timeout, &conn),
        Command::Sessions { user, conn } => sessions(&config, user, &conn),
        Command::Keys { action } => keys(&config, action),
        Command::Audit {
            action: AuditAction::Verify { file },
        } => audit_verify(&config, file),
    }
}

fn load(config: &Path) -> Result<Config> {
    Config::load(config, Secrets::ReadOnly).map_err(|e| anyhow::anyhow!("{e}"))
}

fn check(config: &Path) -> Result<ExitCode> {
    match Config::load(config, Secrets::ReadOnly) {
        Ok(c) => {
            println!(
                "{}: ok ({} apps, {} users, {} peers)",
                config.display(),
                c.apps.len(),
                c.users.len(),
                c.sync.peers.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn hash_password() -> Result<ExitCode> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    let pw = s.strip_suffix('\n').unwrap_or(&s);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        bail!("empty password on stdin");
    }
    let h = portcullis::login::users::hash_password(pw).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{h}");
    Ok(ExitCode::SUCCESS)
}

fn run(config: &Path) -> Result<ExitCode> {
    let config = Config::load(config, Secrets::Create).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(Some(&config));
    // Stops (and flushes) the access log when `run` returns, after the runtime.
    let _access_log = start_access_log(&config)?;
    let rt = runtime(config.workers)?;
    rt.block_on(async {
        let handle = portcullis::server::start(config, process_clock()?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        portcullis::server::run_until_signal(handle).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The system clock; or, only when the test hook's environment variable is set (the
/// soak benchmark steps nodes' clocks with it), the system clock plus a file's offset.
fn process_clock() -> Result<Arc<dyn portcullis::clock::Clock>> {
    use portcullis::clock::{OFFSET_FILE_ENV, OffsetFileClock, SystemClock};
    match std::env::var_os(OFFSET_FILE_ENV) {
        Some(path) => {
            tracing::warn!(
                file = %Path::new(&path).display(),
                "TEST HOOK: this process's clock is offset by the milliseconds in {OFFSET_FILE_ENV}"
            );
            Ok(OffsetFileClock::watching(path.into())?)
        }
        None => Ok(Arc::new(SystemClock)),
    }
}

fn revoke(
    config: &Path,
    target: RevokeTarget,
    reason: String,
    conn: &ConnArgs,
) -> Result<ExitCode> {
    let (scope, t) = match target {
        RevokeTarget { user: Some(u), .. } => ("user", u),
        RevokeTarget { app: Some(a), .. } => ("app", a),
        RevokeTarget {
            session: Some(s), ..
        } => ("session", s),
        RevokeTarget { group: Some(g), .. } => ("group", g),
        RevokeTarget {
            member: Some(m), ..
        } => ("member", m),
        _ => ("all", String::new()),
    };
    let client = client(config, conn)?;
    let body = serde_json::json!({"scope": scope, "target": t, "reason": reason});
    let out = block(client.call(Method::POST, "/v1/revocations", Some(body)))?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "revoked {} {} (id {}): tokens issued before {} are refused; {} sessions ended; {} of {} peers confirmed",
            out["scope"].as_str().unwrap_or("?"),
            out["target"].as_str().unwrap_or(""),
            out["id"].as_str().unwrap_or("?"),
            out["not_before"].as_str().unwrap_or("?"),
            out["sessions_revoked"],
            out["peers_acked"],
            out["peers"],
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn selftest(config: &Path, timeout: std::time::Duration, conn: &ConnArgs) -> Result<ExitCode> {
    let client = client(config, conn)?;
    let body = serde_json::json!({"timeout_ms": timeout.as_millis() as u64});
    let out = block(client.call(Method::POST, "/v1/selftest", Some(body)))?;
    let (text, ok) = portcullis::control::client::render_selftest(&out);
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{text}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn sessions(config: &Path, user: Option<String>, conn: &ConnArgs) -> Result<ExitCode> {
    let client = client(config, conn)?;
    let path = match &user {
        Some(u) => format!(
            "/v1/sessions?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("user", u)
                .finish()
        ),
        None => "/v1/sessions".into(),
    };
    let out = block(client.call(Method::GET, &path, None))?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", portcullis::control::client::render_sessions(&out));
    }
    Ok(ExitCode::SUCCESS)
}

fn keys(config: &Path, action: KeysAction) -> Result<ExitCode> {
    let dir = load(config)?.state_dir.join("keys");
    match action {
        KeysAction::Rotate => {
            let kid = KeyRing::rotate(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "new signing key {kid} is active; reload or restart the nodes (SIGHUP) to use it"
            );
        }
        KeysAction::List => {
            let ring = KeyRing::load(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut kids: Vec<&String> = ring.kids().collect();
            kids.sort();
            for k in kids {
                let active = if k == ring.active_kid() {
                    "  (active)"
                } else {
                    ""
                };
                println!("{k}{active}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(config: &Path, file: Option<PathBuf>) -> Result<ExitCode> {
    let path = match file {
        Some(f) => f,
        None => load(config)?.state_dir.join("audit.log"),
    };
    match portcullis::audit::verify_chain(&path) {
        Ok(r) => {
            println!("{}: chain intact ({} lines)", path.display(), r.lines);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The async runtime: one worker thread per CPU the process may use by default (its
/// affinity mask and cgroup CPU quota, see `cpus`; `TOKIO_WORKER_THREADS` or
/// `[gateway] workers` override). With a single worker the current-thread scheduler is
/// used: it skips the work-stealing machinery and its wake-ups, which a one-core
/// deployment never benefits from.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match (
        workers,
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok()),
    ) {
        (n, _) if n > 0 => n,
        (_, Some(n)) => n,
        _ => portcullis::cpus::usable(),
    };
    tracing::debug!(workers, "async runtime");
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

fn client(config: &Path, conn: &ConnArgs) -> Result<ControlClient> {
    let cfg = if conn.url.is_some() && conn.token.is_some() {
        None
    } else {
        Some(Config::load(config, Secrets::ReadOnly).map_err(|e| anyhow::anyhow!("{e}"))?)
    };
    ControlClient::from_config(cfg.as_ref(), conn.url.clone(), conn.token.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn block<T>(
    f: impl std::future::Future<Output = Result<T, portcullis::control::client::ClientError>>,
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(f)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("control call failed")
}
