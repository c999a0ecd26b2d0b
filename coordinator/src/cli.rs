//! Command-line interface of the `coordinator` binary and its exit codes.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use cwbench::scenario::{self, Distribution, Limits, Plan};

use crate::compare::{self, Gate};
use crate::dashboard::{self, Dashboard};
use crate::discovery;
use crate::driver::{BearerToken, DriveOptions};
use crate::observer::{self, Observers, RunEnd};
use crate::result::{self, HostStatus, RunResult};
use crate::run::{self, Agents, RunError, RunOptions};
use crate::{hlog, output, progress, report};

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
    /// `compare`: a `--fail-if` gate tripped (same value as RUN_FAILED; the
    /// command tells which one it is).
    pub const GATE_TRIPPED: u8 = 1;
}

/// cwbench coordinator: runs a seeded concurrency workload on agents and
/// compares how each host handled it.
///
/// With no command, runs the benchmark: with no --agent, starts two agents in
/// this process on loopback ports (real gRPC, each with its own runtime) and
/// runs the built-in parity scenario.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub run: Args,
}

/// Commands other than the run.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Re-render report.md, report.html, summary.csv and intervals.csv from
    /// a saved result.json, and print the table.
    Report(ReportArgs),
    /// Compare two saved results per group, host, profile and metric; exit 1 when a
    /// --fail-if gate trips.
    Compare(CompareArgs),
    /// Write a scenario's exact job stream as JSON Lines (one job per line;
    /// docs/workload.md), for replay by a harness in any language. The
    /// digest goes to stderr.
    Trace(TraceArgs),
}

/// Flags of `coordinator trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Scenario file (TOML); default: the built-in scenarios/parity.toml.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Use this seed instead of the scenario's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Jobs to write (default: the scenario's warm-up + measured jobs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub jobs: Option<u64>,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Raise a safety limit of the scenario check, e.g. `jobs=5000000000`
    /// (jobs, threads, workers, queue-bound, producers, work-units,
    /// sleep-us, rate, profiles). Repeatable.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
}

/// Flags of `coordinator report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A result.json written by a run.
    #[arg(value_name = "RESULT.json")]
    pub result: PathBuf,
    /// Directory for the files (default: the result's directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Flags of `coordinator compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The baseline result.json.
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// The result.json to judge against the baseline.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// Fail (exit 1) when a metric changes past a limit: METRIC>+PCT% or
    /// METRIC<-PCT%, e.g. 'p99>+10%' or 'throughput<-5%', on every host and
    /// group; prefixed 'group:' or 'host:', on those only (fleets whose
    /// hosts are renamed between runs: 'group:p99>+10%'). Metrics:
    /// throughput, p50, p95, p99, p99.9, max, errors. Repeatable.
    #[arg(long = "fail-if", value_name = "GATE")]
    pub fail_if: Vec<String>,
    /// Compare even when the two runs ran different job streams (digest,
    /// scenario name or seed differ).
    #[arg(long)]
    pub allow_digest_mismatch: bool,
}

/// Flags of the run (the default command).
#[derive(Debug, clap::Args)]
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
    /// Raise a safety limit of the scenario check, e.g. `jobs=5000000000`
    /// (jobs, threads, workers, queue-bound, producers, work-units,
    /// sleep-us, rate, profiles). Repeatable.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
    /// Also write jobs.jsonl: one `job_done` line per job (id, class, host,
    /// origin, start, end, outcome). For small runs: at most 10 million jobs.
    #[arg(long)]
    pub job_log: bool,
    /// Print only the table and the result paths. Without it: progress
    /// bars on a terminal (a total and up to 8 hosts, those furthest
    /// behind), else a line per host and snapshot.
    #[arg(long, short)]
    pub quiet: bool,
    /// Load a WebSocket server cwbench did not start, at ws://HOST:PORT/PATH
    /// or wss://HOST:PORT/PATH, if it speaks docs/websocket.md: every agent
    /// is a client (the scenario's [websocket] settings, or their
    /// defaults). The report then has everything measured client-side and
    /// no server-side figures.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// CA certificates (PEM) the agents trust for a wss:// --target,
    /// besides the system's; the agents get them from the coordinator.
    #[arg(long, value_name = "FILE", requires = "target")]
    pub target_ca: Option<PathBuf>,
    /// Serve a live view of the run in a browser at IP:PORT (port 0: any
    /// free port; the URL is printed at start), e.g. 127.0.0.1:8080. Off by
    /// default. An address other than loopback needs the token (--token /
    /// CWBENCH_TOKEN), which the page then requires.
    #[arg(long, value_name = "IP:PORT")]
    pub dashboard: Option<String>,
    /// Seconds the dashboard keeps serving the final page and report.html
    /// after the run (Ctrl-C ends it sooner; 0: exit at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "dashboard", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub dashboard_linger: u64,
}

/// A run that took place: its result, the directory its files went to, and
/// the dashboard still serving them (`Dashboard::linger`).
#[derive(Debug)]
pub struct Ran {
    pub result: RunResult,
    pub dir: PathBuf,
    pub dashboard: Option<Dashboard>,
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

/// The safety limits, raised by `--limit NAME=VALUE` flags.
fn limits_of(specs: &[String]) -> Result<Limits, CliError> {
    let mut l = Limits::default();
    for spec in specs {
        l.set(spec).map_err(CliError::BadInput)?;
    }
    Ok(l)
}

/// Loads the scenario named on the command line, or the built-in default.
pub fn load_plan(path: Option<&Path>, limits: &[String]) -> Result<Plan, CliError> {
    let l = limits_of(limits)?;
    let r = match path {
        Some(p) => scenario::load(p, &l),
        None => scenario::parse(scenario::PARITY_TOML, scenario::PARITY_NAME, &l),
    };
    r.map_err(|e| CliError::BadInput(e.to_string()))
}

/// Runs the benchmark as the flags say; returns the result and where it
/// went. `interrupt` stops it early (results still written, marked so).
pub async fn execute(args: Args, interrupt: crate::interrupt::Interrupt) -> Result<Ran, CliError> {
    let mut plan = load_plan(args.scenario.as_deref(), &args.limits)?;
    check_job_log(&args, &plan)?;
    let ws_target = target(&args)?;
    if ws_target.is_some() {
        plan.scenario.websocket.get_or_insert_with(Default::default);
    }
    let token = args
        .token
        .as_deref()
        .map(BearerToken::new)
        .transpose()
        .map_err(|e| CliError::BadInput(format!("--token / CWBENCH_TOKEN: {e}")))?;
    let tls = client_tls(&args)?;
    let dashboard = start_dashboard(&args).await?;
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
    let run_id = args.run_id.clone().unwrap_or_else(run::new_run_id);
    let dir = args.out.join(&run_id);
    let per_host = match plan.scenario.run.distribution {
        // Timed: unknown before the run.
        _ if plan.sizing.timed() => 0,
        Distribution::Replicate => plan.total_jobs(),
        Distribution::Shard => {
            let n = if args.agents.is_empty() {
                u64::from(args.local_agents)
            } else {
                args.agents.len() as u64
            };
            plan.total_jobs().div_ceil(n.max(1))
        }
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
        run_id: Some(run_id),
        hlog: Some(dir.join(hlog::FILE_NAME)),
        job_log: args.job_log.then(|| dir.join(crate::joblog::FILE_NAME)),
        interrupt,
        ws_target,
        ..RunOptions::default()
    };
    if !args.quiet {
        announce(&plan, &opts.agents);
    }
    let mut observers: Vec<Observers> = Vec::new();
    if !args.quiet {
        observers.push(observer::lines(progress::reporter(per_host)));
    }
    observers.extend(dashboard.as_ref().map(Dashboard::observer));
    let result = run_and_write(plan, opts, observer::all(observers), &dir).await?;
    Ok(Ran {
        result,
        dir,
        dashboard,
    })
}

/// `--dashboard`: listening, its URL printed (even with --quiet: it was
/// asked for, and is where to look).
async fn start_dashboard(args: &Args) -> Result<Option<Dashboard>, CliError> {
    let Some(a) = &args.dashboard else {
        return Ok(None);
    };
    let bad = |e: dashboard::BindError| CliError::BadInput(e.to_string());
    let bind = dashboard::parse_bind(a, args.token.as_deref()).map_err(bad)?;
    let linger = std::time::Duration::from_secs(args.dashboard_linger);
    let d = Dashboard::start(bind, linger).await.map_err(bad)?;
    eprintln!("{}", d.announcement());
    Ok(Some(d))
}

/// Runs the plan, writes its files into `dir`, and tells the observers how
/// the run ended (with the error, when it did not start or its files could
/// not be written).
async fn run_and_write(
    plan: Plan,
    opts: RunOptions,
    observer: Option<Observers>,
    dir: &Path,
) -> Result<RunResult, CliError> {
    let finished = |result: Option<&RunResult>, dir: Option<&Path>, error: Option<&CliError>| {
        if let Some(o) = &observer {
            o.run_finished(&RunEnd {
                result,
                dir,
                error: error.map(ToString::to_string).as_deref(),
            });
        }
    };
    let result = match run::run(plan, opts, observer.clone()).await {
        Ok(r) => r,
        Err(e) => {
            let e = match e {
                RunError::Unavailable(u) => CliError::Unavailable(u.to_string()),
                RunError::Local(e) => CliError::Failed(format!("cannot start a local agent: {e}")),
                RunError::Roles(m) => CliError::BadInput(m),
            };
            finished(None, None, Some(&e));
            return Err(e);
        }
    };
    if let Err(e) = output::write_all(&result, dir) {
        let e = CliError::Failed(format!("cannot write results to {}: {e}", dir.display()));
        finished(Some(&result), None, Some(&e));
        return Err(e);
    }
    finished(Some(&result), Some(dir), None);
    Ok(result)
}

/// `--target` (a ws:// or wss:// URL) and `--target-ca` (for wss:// only),
/// checked and read.
fn target(args: &Args) -> Result<Option<crate::websocket::Target>, CliError> {
    let Some(url) = &args.target else {
        return Ok(None);
    };
    let bad = |why: &str| Err(CliError::BadInput(format!("--target {url:?}: {why}")));
    let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return bad("must be a ws://HOST:PORT/PATH or wss://HOST:PORT/PATH URL"),
    };
    if rest.is_empty() || rest.starts_with('/') {
        return bad("names no host");
    }
    let tls_ca = match &args.target_ca {
        None => Vec::new(),
        Some(_) if !tls => {
            return bad("--target-ca is for a wss:// server; this one speaks plain ws://");
        }
        Some(path) => cwbench::tls::read_pem("--target-ca", path, "CA certificates")
            .map_err(|e| CliError::BadInput(e.to_string()))?,
    };
    Ok(Some(crate::websocket::Target {
        url: url.clone(),
        tls_ca,
    }))
}

/// `--job-log` keeps every job's record: only for runs sized in jobs, and
/// not too many of them.
fn check_job_log(args: &Args, plan: &Plan) -> Result<(), CliError> {
    if args.job_log && plan.sizing.timed() {
        return Err(CliError::BadInput(format!(
            "--job-log: scenario {} is timed ({}), so its job count is not known before the run; the job log is for runs sized in jobs (at most {})",
            plan.scenario.name,
            plan.sizing.describe(),
            crate::joblog::MAX_JOBS
        )));
    }
    if args.job_log && plan.total_jobs() > crate::joblog::MAX_JOBS {
        return Err(CliError::BadInput(format!(
            "--job-log: the scenario has {} jobs per agent; the job log is for runs of at most {}",
            plan.total_jobs(),
            crate::joblog::MAX_JOBS
        )));
    }
    Ok(())
}

/// The TLS material of `--tls-ca` (and `--tls-cert`, `--tls-key`), read and
/// checked.
fn client_tls(args: &Args) -> Result<Option<crate::driver::ClientTls>, CliError> {
    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => {
            use cwbench::tls::read_pem;
            let bad = |e: cwbench::tls::TlsFileError| CliError::BadInput(e.to_string());
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
    Ok(tls)
}

/// What is about to run and roughly how long it takes, on stderr.
fn announce(plan: &Plan, agents: &Agents) {
    let (work, sleep) = plan.mean_job();
    let length = if plan.sizing.timed() {
        format!("timed on each agent, {}", plan.sizing.describe())
    } else {
        format!(
            "{} jobs each ({} warm-up)",
            plan.total_jobs(),
            plan.sizing.warmup_jobs
        )
    };
    eprintln!(
        "cwbench: scenario {} from {}: {} profile(s), {length}, mean job {:.0} work units + {:.2} ms sleep",
        plan.scenario.name,
        plan.source,
        plan.profiles.len(),
        work,
        sleep / 1000.0
    );
    let default_threads = match agents {
        Agents::Local { threads, .. } => *threads,
        Agents::Remote(_) => cwbench::sysinfo::logical_cores(),
    };
    let mut total = 0.0;
    let mut how = "";
    for p in &plan.profiles {
        let (s, h) = plan.estimate_secs(p, default_threads);
        total += s;
        how = h;
    }
    eprintln!(
        "cwbench: {} profile(s) to run one after another, about {} in all ({how}; agents that leave threads unset counted with {default_threads})",
        plan.profiles.len(),
        fmt_secs(total)
    );
}

fn fmt_secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// The exit code a finished run deserves: 130 or 143 after SIGINT or
/// SIGTERM, whatever the hosts did.
pub fn run_exit_code(r: &RunResult, allow_partial: bool) -> u8 {
    if let Some(sig) = &r.interrupted {
        return crate::interrupt::exit_code_of(sig);
    }
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

/// `coordinator trace`: writes the job stream; returns the exit code.
pub fn trace_command(a: &TraceArgs) -> u8 {
    let mut plan = match load_plan(a.scenario.as_deref(), &a.limits) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("coordinator trace: {e}");
            return exit::BAD_INPUT;
        }
    };
    if let Some(seed) = a.seed {
        // Re-validated: an open loop's durations resolve to a seed's jobs.
        let reseeded = limits_of(&a.limits).and_then(|l| {
            plan.reseed(seed, &l)
                .map_err(|e| CliError::BadInput(e.to_string()))
        });
        plan = match reseeded {
            Ok(p) => p,
            Err(e) => {
                eprintln!("coordinator trace: --seed {seed}: {e}");
                return exit::BAD_INPUT;
            }
        };
    }
    if a.jobs.is_none() && plan.sizing.timed() {
        eprintln!(
            "coordinator trace: scenario {} is timed in closed loop ({}): its length depends on the host; give --jobs N",
            plan.scenario.name,
            plan.sizing.describe()
        );
        return exit::BAD_INPUT;
    }
    let mut sink: Box<dyn std::io::Write> = match &a.out {
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("coordinator trace: --out {}: {e}", p.display());
                return exit::BAD_INPUT;
            }
        },
    };
    match crate::trace::write_trace(&plan, a.jobs, &mut sink) {
        Ok((digest, n)) => {
            eprintln!("digest {} of {n} jobs", cwbench::digest::hex(digest));
            exit::OK
        }
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("coordinator trace: cannot write: {e}");
            exit::RUN_FAILED
        }
    }
}

/// `coordinator report`: re-renders the derived files of a saved result and
/// prints its table. Returns the exit code.
pub fn report_command(a: &ReportArgs) -> u8 {
    let r = match result::load(&a.result) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coordinator report: {e}");
            return exit::BAD_INPUT;
        }
    };
    let dir = a.out.clone().unwrap_or_else(|| {
        a.result
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    match output::write_derived(&r, &dir) {
        Ok(files) => {
            print!("{}", report::table(&r));
            for f in files {
                println!("wrote {}", f.display());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("coordinator report: cannot write to {}: {e}", dir.display());
            exit::RUN_FAILED
        }
    }
}

/// `coordinator compare`: prints the side-by-side table; 0 when no gate
/// tripped, 1 when one did, 2 on bad input (files, gates, workloads that
/// differ).
pub fn compare_command(a: &CompareArgs) -> u8 {
    let gates: Result<Vec<Gate>, _> = a.fail_if.iter().map(|g| g.parse::<Gate>()).collect();
    let gates = match gates {
        Ok(g) => g,
        Err(e) => {
            eprintln!("coordinator compare: {e}");
            return exit::BAD_INPUT;
        }
    };
    let (base, new) = match (result::load(&a.base), result::load(&a.new)) {
        (Ok(b), Ok(n)) => (b, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("coordinator compare: {e}");
            return exit::BAD_INPUT;
        }
    };
    let c = match compare::compare(&base, &new, &gates, a.allow_digest_mismatch) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("coordinator compare: {e}");
            return exit::BAD_INPUT;
        }
    };
    println!("base: {} ({})", base.run_id, a.base.display());
    println!("new:  {} ({})", new.run_id, a.new.display());
    print!("{}", compare::table(&c));
    for u in &c.unmatched {
        println!("not compared: {u}");
    }
    let (only_base, only_new) = c.unmatched_hosts;
    if only_base + only_new > 0 {
        println!(
            "not compared: {only_base} host(s) only in BASE, {only_new} only in NEW (host names differ between the runs; groups match by name)"
        );
    }
    for m in &c.mismatches {
        eprintln!("warning: different workloads (allowed): {m}");
    }
    let tripped: Vec<_> = c.tripped().collect();
    if tripped.is_empty() {
        if !gates.is_empty() {
            println!("all {} gate(s) passed", gates.len());
        }
        exit::OK
    } else {
        for r in &tripped {
            eprintln!(
                "gate tripped: {} on {}{} [{}]: {} -> {} ({})",
                r.tripped.join(" "),
                if r.scope == compare::Scope::Group {
                    "group "
                } else {
                    ""
                },
                r.name,
                r.profile,
                r.metric.show(r.base),
                r.metric.show(r.new),
                if r.change.is_infinite() {
                    "from 0".to_string()
                } else {
                    format!("{:+.1}%", r.change)
                }
            );
        }
        exit::GATE_TRIPPED
    }
}
