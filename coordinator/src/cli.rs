//! Command-line interface of the `coordinator` binary and its exit codes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use cwbench::scenario::{self, Limits, Plan};

use crate::discovery;
use crate::driver::{BearerToken, DriveOptions, Progress};
use crate::output;
use crate::result::{HostStatus, RunResult};
use crate::run::{self, Agents, RunError, RunOptions};

/// Exit codes (README "Exit codes").
pub mod exit {
    /// Every host finished and every check passed.
    pub const OK: u8 = 0;
    /// The run took place but a host failed or was lost, or a check failed.
    pub const RUN_FAILED: u8 = 1;
    /// Bad input: scenario file or flags.
    pub const BAD_INPUT: u8 = 2;
    /// An agent could not take the run: unreachable, busy, other version.
    pub const UNAVAILABLE: u8 = 3;
    /// A host was lost mid-run (the others finished; its data up to then is
    /// kept). `--allow-partial` turns this into 0.
    pub const HOST_LOST: u8 = 4;
}

/// cwbench coordinator: runs a seeded concurrency workload on agents and
/// compares how each host handled it.
///
/// With no --agent, starts two agents in this process on loopback ports (real
/// gRPC, each with its own runtime) and runs the built-in parity scenario.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version)]
pub struct Args {
    /// Scenario file (TOML); default: the built-in scenarios/parity.toml.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Agent address host:port; repeat for several hosts. With no --agent,
    /// --agents-file or --agents: local agents.
    #[arg(long = "agent", value_name = "HOST:PORT")]
    pub agents: Vec<String>,
    /// File of agents: one host:port per line; `#` comments and blank lines
    /// are ignored. Repeatable; combined with --agent and --agents.
    #[arg(long = "agents-file", value_name = "FILE")]
    pub agents_files: Vec<PathBuf>,
    /// Agents behind a DNS name: `dns:NAME:PORT` resolves NAME at start to
    /// all its A/AAAA addresses, one agent per address (e.g. a Kubernetes
    /// headless Service). Repeatable.
    #[arg(long = "agents", value_name = "dns:NAME:PORT")]
    pub agents_dns: Vec<String>,
    /// Shared token sent to every agent as `authorization: Bearer <token>`.
    /// Prefer the environment variable: flags show up in `ps`.
    #[arg(long, env = "CWBENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Dial agents over TLS, trusting this CA (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Name to expect in the agents' certificates (default: the host part
    /// of each agent address).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_domain: Option<String>,
    /// Client certificate (PEM) for agents that require one; needs --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Local agents to start when no agent is named.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub local_agents: u32,
    /// Default worker threads of each local agent (default: logical cores ÷
    /// local agents, at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub local_threads: Option<u32>,
    /// Directory for results; each run writes OUT/<run-id>/.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,
    /// Run id (default: UTC time and a random suffix).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Jobs per JobBatch message.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1048576))]
    pub batch_jobs: u32,
    /// Seconds to wait for an agent to accept a connection.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub connect_timeout: u64,
    /// Exit 0 when hosts were lost mid-run but every other host finished.
    #[arg(long)]
    pub allow_partial: bool,
    /// Print only the table and the result paths.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Why the coordinator stopped, mapped to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_) => exit::BAD_INPUT,
            CliError::Unavailable(_) => exit::UNAVAILABLE,
            CliError::Failed(_) => exit::RUN_FAILED,
        }
    }
}

/// Loads the scenario named on the command line, or the built-in default.
pub fn load_plan(path: Option<&Path>) -> Result<Plan, CliError> {
    let r = match path {
        Some(p) => scenario::load(p, &Limits::default()),
        None => scenario::parse(
            scenario::PARITY_TOML,
            scenario::PARITY_NAME,
            &Limits::default(),
        ),
    };
    r.map_err(|e| CliError::BadInput(e.to_string()))
}

/// Runs the benchmark as the flags say; returns the result and where it went.
pub async fn execute(args: Args) -> Result<(RunResult, PathBuf), CliError> {
    let plan = load_plan(args.scenario.as_deref())?;
    let token = args
        .token
        .as_deref()
        .map(BearerToken::new)
        .transpose()
        .map_err(|e| CliError::BadInput(format!("--token / CWBENCH_TOKEN: {e}")))?;
    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => {
            use cwbench_agent::tls::read_pem;
            let bad = |e: cwbench_agent::tls::TlsFileError| CliError::BadInput(e.to_string());
            let ca = read_pem("--tls-ca", ca, "a CA certificate").map_err(bad)?;
            let identity = match (&args.tls_cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((
                    read_pem("--tls-cert", c, "a certificate").map_err(bad)?,
                    read_pem("--tls-key", k, "a private key").map_err(bad)?,
                )),
                _ => None,
            };
            Some(crate::driver::ClientTls {
                ca,
                domain: args.tls_domain.clone(),
                identity,
            })
        }
    };
    let connect_timeout = std::time::Duration::from_secs(args.connect_timeout);
    let remote = discovery::discover(
        &args.agents,
        &args.agents_files,
        &args.agents_dns,
        connect_timeout,
    )
    .await
    .map_err(|e| {
        if e.is_unavailable() {
            CliError::Unavailable(e.to_string())
        } else {
            CliError::BadInput(e.to_string())
        }
    })?;
    let named =
        !(args.agents.is_empty() && args.agents_files.is_empty() && args.agents_dns.is_empty());
    if let Some(id) = &args.run_id
        && (id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(CliError::BadInput(format!(
            "--run-id {id:?}: must be 1..=64 characters of [A-Za-z0-9_-]"
        )));
    }
    let agents = if !named {
        let threads = args
            .local_threads
            .unwrap_or_else(|| (cwbench::sysinfo::logical_cores() / args.local_agents).max(1));
        Agents::Local {
            count: args.local_agents as usize,
            threads,
        }
    } else {
        Agents::Remote(remote)
    };
    let opts = RunOptions {
        agents,
        drive: DriveOptions {
            batch_jobs: args.batch_jobs as usize,
            connect_timeout,
            token,
            tls,
            ..DriveOptions::default()
        },
        run_id: args.run_id.clone(),
        ..RunOptions::default()
    };
    if !args.quiet {
        let (work, sleep) = plan.mean_job();
        eprintln!(
            "cwbench: scenario {} from {}: {} profile(s), {} jobs each ({} warm-up), mean job {:.0} work units + {:.2} ms sleep",
            plan.scenario.name,
            plan.source,
            plan.profiles.len(),
            plan.total_jobs(),
            plan.scenario.run.warmup_jobs,
            work,
            sleep / 1000.0
        );
    }
    let progress: Option<Progress> = if args.quiet {
        None
    } else {
        Some(Arc::new(|host: &str, s: &cwbench::proto::Snapshot| {
            let c = s.counters.unwrap_or_default();
            eprintln!(
                "  {host}: t={:.1}s done {} received {} queue {}",
                s.elapsed_us as f64 / 1e6,
                c.completed + c.crashed,
                c.received,
                s.gauges.map_or(0, |g| g.queue_depth)
            );
        }))
    };
    let result = run::run(plan, opts, progress).await.map_err(|e| match e {
        RunError::Unavailable(u) => CliError::Unavailable(u.to_string()),
        RunError::Local(e) => CliError::Failed(format!("cannot start a local agent: {e}")),
    })?;
    let dir = args.out.join(&result.run_id);
    output::write_all(&result, &dir)
        .map_err(|e| CliError::Failed(format!("cannot write results to {}: {e}", dir.display())))?;
    Ok((result, dir))
}

/// The exit code a finished run deserves.
pub fn run_exit_code(r: &RunResult, allow_partial: bool) -> u8 {
    let hosts = || r.profiles.iter().flat_map(|p| p.hosts.iter());
    if r.profiles.iter().any(|p| p.hosts.is_empty())
        || hosts().any(|h| h.status == HostStatus::Failed)
    {
        exit::RUN_FAILED
    } else if hosts().any(|h| h.status == HostStatus::Lost) {
        if allow_partial && hosts().any(|h| h.status == HostStatus::Ok) {
            exit::OK
        } else {
            exit::HOST_LOST
        }
    } else {
        exit::OK
    }
}
