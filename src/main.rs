//! The `portcullis` binary: run, check, hash-password, revoke, sessions, keys, audit.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use http::Method;
use portcullis::config::{Config, Secrets};
use portcullis::control::client::{ControlClient, table};
use std::io::Read;
use std::path::PathBuf;
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
    /// Revoke a user, app, session, group or everything, through the control port.
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match Config::load(&cli.config, Secrets::ReadOnly) {
            Ok(c) => {
                println!(
                    "{}: ok ({} apps, {} users, {} peers)",
                    cli.config.display(),
                    c.apps.len(),
                    c.users.len(),
                    c.sync.peers.len()
                );
                Ok(std::process::ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(std::process::ExitCode::FAILURE)
            }
        },
        Command::HashPassword => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            let pw = s.strip_suffix('\n').unwrap_or(&s);
            let pw = pw.strip_suffix('\r').unwrap_or(pw);
            if pw.is_empty() {
                bail!("empty password on stdin");
            }
            let h =
                portcullis::login::users::hash_password(pw).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{h}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Run => {
            let config =
                Config::load(&cli.config, Secrets::Create).map_err(|e| anyhow::anyhow!("{e}"))?;
            init_tracing(Some(&config));
            // Stops (and flushes) the access log when `run` returns, after the runtime.
            let _access_log = start_access_log(&config)?;
            let rt = runtime(config.workers)?;
            rt.block_on(async {
                let handle =
                    portcullis::server::start(config, Arc::new(portcullis::clock::SystemClock))
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                portcullis::server::run_until_signal(handle).await;
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Revoke {
            target,
            reason,
            conn,
        } => {
            let (scope, t) = match target {
                RevokeTarget { user: Some(u), .. } => ("user", u),
                RevokeTarget { app: Some(a), .. } => ("app", a),
                RevokeTarget {
                    session: Some(s), ..
                } => ("session", s),
                RevokeTarget { group: Some(g), .. } => ("group", g),
                _ => ("all", String::new()),
            };
            let client = client(&cli.config, &conn)?;
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
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Selftest { timeout, conn } => {
            let client = client(&cli.config, &conn)?;
            let body = serde_json::json!({"timeout_ms": timeout.as_millis() as u64});
            let out = block(client.call(Method::POST, "/v1/selftest", Some(body)))?;
            let (text, ok) = portcullis::sync::selftest::render(&out);
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{text}");
            }
            Ok(if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Sessions { user, conn } => {
            let client = client(&cli.config, &conn)?;
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
                return Ok(std::process::ExitCode::SUCCESS);
            }
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            let rows: Vec<Vec<String>> = out["sessions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            let apps: Vec<String> = x["apps"]
                                .as_array()
                                .map(|a| a.iter().map(s).collect())
                                .unwrap_or_default();
                            vec![
                                s(&x["sid"]),
                                s(&x["user"]),
                                apps.join(","),
                                s(&x["ip"]),
                                s(&x["created"]),
                                s(&x["last_seen"]),
                                s(&x["node"]),
                                s(&x["user_agent"]).chars().take(40).collect(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                table(
                    &[
                        "SID",
                        "USER",
                        "APPS",
                        "IP",
                        "CREATED",
                        "LAST SEEN",
                        "NODE",
                        "USER AGENT"
                    ],
                    &rows
                )
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Keys { action } => {
            let config =
                Config::load(&cli.config, Secrets::ReadOnly).map_err(|e| anyhow::anyhow!("{e}"))?;
            let dir = config.state_dir.join("keys");
            match action {
                KeysAction::Rotate => {
                    let kid = portcullis::session::keys::KeyRing::rotate(&dir)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!(
                        "new signing key {kid} is active; reload or restart the nodes (SIGHUP) to use it"
                    );
                }
                KeysAction::List => {
                    let ring = portcullis::session::keys::KeyRing::load(&dir)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let mut kids: Vec<&String> = ring.kids().collect();
                    kids.sort();
                    for k in kids {
                        println!(
                            "{k}{}",
                            if k == ring.active_kid() {
                                "  (active)"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Audit {
            action: AuditAction::Verify { file },
        } => {
            let path = match file {
                Some(f) => f,
                None => Config::load(&cli.config, Secrets::ReadOnly)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .state_dir
                    .join("audit.log"),
            };
            match portcullis::audit::verify_chain(&path) {
                Ok(r) => {
                    println!("{}: chain intact ({} lines)", path.display(), r.lines);
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
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

fn client(config: &std::path::Path, conn: &ConnArgs) -> Result<ControlClient> {
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
