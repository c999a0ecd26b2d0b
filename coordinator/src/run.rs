//! One benchmark run: resolve the agents (or start local ones), check they
//! can take the run, run every profile of the sweep on all of them at once,
//! and assemble the result.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::local::LocalAgents;
use cwbench::scenario::{Distribution, Plan, Profile};

use crate::driver::{self, DriveOptions, HostRun, Share, Unavailable};
use crate::groups::Grouper;
use crate::observer::{Observers, RunStart, Slot};
use crate::result::{ProfileResult, RunResult, SCHEMA_VERSION, ThroughputBasis};
use crate::websocket::Server;

/// Where the agents are.
#[derive(Debug, Clone)]
pub enum Agents {
    /// Dial these addresses (host:port).
    Remote(Vec<String>),
    /// Start this many agents in this process on loopback, each with
    /// `threads` worker threads by default.
    Local { count: usize, threads: u32 },
}

/// How the run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub agents: Agents,
    pub drive: DriveOptions,
    /// Attempts to reach each agent before giving up (with backoff).
    pub connect_attempts: u32,
    pub run_id: Option<String>,
    /// Stream every interval histogram into this HdrHistogram interval log
    /// (`completion.hlog`) as snapshots arrive.
    pub hlog: Option<std::path::PathBuf>,
    /// Write a `job_done` JSON line per job here (`jobs.jsonl`).
    pub job_log: Option<std::path::PathBuf>,
    /// Fired by SIGINT/SIGTERM: the agents cancel, the rest of the sweep
    /// is not run, the result is marked interrupted.
    pub interrupt: crate::interrupt::Interrupt,
    /// A WebSocket run against a server cwbench did not start: every
    /// agent is a client of it.
    pub ws_target: Option<crate::websocket::Target>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            agents: Agents::Local {
                count: 2,
                threads: 1,
            },
            drive: DriveOptions::default(),
            connect_attempts: 3,
            run_id: None,
            hlog: None,
            job_log: None,
            interrupt: crate::interrupt::Interrupt::default(),
            ws_target: None,
        }
    }
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("cannot start a local agent: {0}")]
    Local(std::io::Error),
    /// A WebSocket run's roles cannot be assigned.
    #[error("{0}")]
    Roles(String),
}

/// A new run id: UTC time and a random suffix, e.g. `20261123-130501-3fa2`.
pub fn new_run_id() -> String {
    let now = Timestamp::now();
    let suffix =
        (now.subsec_nanosecond().unsigned_abs() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{}-{suffix:04x}", now.strftime("%Y%m%d-%H%M%S"))
}

/// RFC 3339 UTC timestamp of now, to the second.
pub fn rfc3339_now() -> String {
    rfc3339(Timestamp::now())
}

/// `2026-11-23T12:34:56Z`: RFC 3339, UTC, whole seconds.
fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Describes an agent, retrying unreachable ones with backoff (agents that
/// are still starting); busy or incompatible agents fail at once.
async fn preflight_with_retry(
    addr: &str,
    opts: &RunOptions,
) -> Result<cwbench::proto::AgentInfo, Unavailable> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match driver::preflight(addr, &opts.drive).await {
            Err(Unavailable::Unreachable { .. }) if attempt < opts.connect_attempts => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Fails before anything runs when a profile needs a runtime an agent does
/// not have (the BEAM without Erlang installed), with the agent's reason;
/// or when a class has its own compute placement and an agent would ignore
/// it (one older than `Plan.class_compute`), since it would then measure
/// another placement than the scenario's.
fn check_runtimes(
    plan: &Plan,
    addrs: &[String],
    infos: &[cwbench::proto::AgentInfo],
    ws_server: Option<&Server>,
) -> Result<(), Unavailable> {
    if let Some(i) = plan.classes.iter().position(|c| c.compute.is_some()) {
        for (addr, info) in addrs.iter().zip(infos) {
            if !info.class_compute {
                return Err(Unavailable::Runtime {
                    addr: addr.clone(),
                    runtime: format!("class[{i}].compute"),
                    profile: plan.profiles[0].label(),
                    reason: format!(
                        "it does not place CPU steps per class (cwbench {}): upgrade it, or leave class placements out",
                        info.agent_version
                    ),
                });
            }
        }
    }
    let Some(p) = plan
        .profiles
        .iter()
        .find(|p| p.runtime == cwbench::scenario::Flavor::Beam)
    else {
        return Ok(());
    };
    // A WebSocket run's profile is its server's: the clients run tokio.
    let runs_profile = |i: usize| match ws_server {
        None => true,
        Some(s) => s.agent() == Some(i),
    };
    for (i, (addr, info)) in addrs.iter().zip(infos).enumerate() {
        if !runs_profile(i) {
            continue;
        }
        if !info.runtimes_available.iter().any(|r| r == "beam") {
            let reason = if info.beam_unavailable_reason.is_empty() {
                format!(
                    "it does not offer runtime \"beam\" (cwbench {}; it offers: {})",
                    info.agent_version,
                    info.runtimes_available.join(", ")
                )
            } else {
                info.beam_unavailable_reason.clone()
            };
            return Err(Unavailable::Runtime {
                addr: addr.clone(),
                runtime: "beam".into(),
                profile: p.label(),
                reason,
            });
        }
    }
    Ok(())
}

/// Runs every profile of `plan` on every agent. Local agents live until the
/// run ends. `observer` hears of the run's start, each profile, every
/// snapshot and each host's end (not of the run's end: the caller writes
/// the files, then tells it).
pub async fn run(
    plan: Plan,
    opts: RunOptions,
    observer: Option<Observers>,
) -> Result<RunResult, RunError> {
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let started_at = rfc3339_now();
    let (local, addrs) = agents(&plan, &opts)?;
    let infos = check_agents(&addrs, &opts).await?;
    let labels = labels(&addrs, &infos, matches!(opts.agents, Agents::Local { .. }));
    let ws_server = ws_server(&plan, &opts, &addrs, &labels, &infos)?;
    check_runtimes(&plan, &addrs, &infos, ws_server.as_ref())?;
    let plan = Arc::new(plan);
    if let Some(o) = &observer {
        o.run_started(&RunStart {
            run_id: &run_id,
            plan: &plan,
            hosts: &labels,
        });
    }
    let (hlog, job_log, hlog_warning) = open_logs(&opts, &run_id, &plan);
    let class_names: Vec<String> = plan.classes.iter().map(|c| c.name.clone()).collect();
    let mut profiles = Vec::new();
    let n = addrs.len() as u64;
    for (pi, profile) in plan.profiles.iter().enumerate() {
        if opts.interrupt.token().is_cancelled() {
            break;
        }
        tracing::info!(
            "profile {}/{}: {} on {} agent(s)",
            pi + 1,
            plan.profiles.len(),
            profile.label(),
            n
        );
        if let Some(o) = &observer {
            o.profile_started(pi);
        }
        let mut hrs = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let hr = HostRun {
                addr: addr.clone(),
                label: labels[i].clone(),
                run_id: format!("{run_id}-p{pi}"),
                plan: plan.clone(),
                profile: profile.clone(),
                share: Share {
                    index: i as u64,
                    of: if plan.scenario.run.distribution == Distribution::Shard {
                        n
                    } else {
                        1
                    },
                },
                hlog: hlog.as_ref().and_then(|w| w.sink(&labels[i], pi)),
                job_log: job_log
                    .as_ref()
                    .map(|l| l.sink(&labels[i], pi, class_names.clone())),
                interrupt: opts.interrupt.token().clone(),
                ws: None,
                slot: Slot {
                    profile: pi,
                    host: i,
                },
            };
            hrs.push(hr);
        }
        let (tasks, ws_row) = match (&plan.scenario.websocket, &ws_server) {
            (Some(ws), Some(server)) => {
                let (t, url) =
                    crate::websocket::spawn(hrs, server, ws, &opts.drive, observer.clone()).await;
                (t, Some(crate::websocket::Row::new(server.agent(), url)))
            }
            _ => {
                let spawn =
                    |hr| tokio::spawn(driver::drive(hr, opts.drive.clone(), observer.clone()));
                (hrs.into_iter().map(spawn).collect(), None)
            }
        };
        let in_process = matches!(opts.agents, Agents::Local { .. });
        let basis = match plan.scenario.run.distribution {
            Distribution::Shard => ThroughputBasis::Sum,
            Distribution::Replicate => ThroughputBasis::PerHostMean,
        };
        profiles.push(collect(profile, tasks, &infos, in_process, basis, ws_row).await);
    }
    local.stop();
    let mut warnings = warnings(&profiles);
    warnings.extend(close_logs(hlog, job_log, hlog_warning));
    let interrupted = opts.interrupt.signal().map(String::from);
    if let Some(sig) = &interrupted {
        warnings.insert(0, format!(
            "the run was interrupted by {sig}: the agents cancelled the jobs they held; {} of {} profile(s) ran",
            profiles.len(),
            plan.profiles.len()
        ));
    }
    Ok(RunResult {
        schema_version: SCHEMA_VERSION,
        run_id,
        cwbench_version: cwbench::VERSION.into(),
        started_at,
        scenario: plan.scenario.clone(),
        scenario_source: plan.source.clone(),
        sizing: Some(plan.sizing),
        scaling: crate::scaling::dimensions(&profiles),
        profiles,
        warnings,
        interrupted,
    })
}

/// The agents' addresses, and the local agents started for the run (two
/// at least for a WebSocket run with its server among them).
fn agents(plan: &Plan, opts: &RunOptions) -> Result<(LocalAgents, Vec<String>), RunError> {
    match &opts.agents {
        Agents::Remote(a) => Ok((LocalAgents::default(), a.clone())),
        Agents::Local { count, threads } => {
            let count = if plan.scenario.websocket.is_some() && opts.ws_target.is_none() {
                (*count).max(2)
            } else {
                *count
            };
            check_local_fds(plan, count)?;
            LocalAgents::start(count, *threads).map_err(RunError::Local)
        }
    }
}

/// Who serves a WebSocket run: `--target`, or the agent the scenario
/// names (the first by default). None for other runs.
fn ws_server(
    plan: &Plan,
    opts: &RunOptions,
    addrs: &[String],
    labels: &[String],
    infos: &[cwbench::proto::AgentInfo],
) -> Result<Option<Server>, RunError> {
    let Some(ws) = &plan.scenario.websocket else {
        return Ok(None);
    };
    if let Some(t) = &opts.ws_target {
        return Ok(Some(Server::Target(t.clone())));
    }
    let agent_labels: Vec<&str> = infos.iter().map(|i| i.label.as_str()).collect();
    crate::websocket::server_index(ws.server.as_deref(), addrs, labels, &agent_labels)
        .map(|i| Some(Server::Agent(i)))
        .map_err(RunError::Roles)
}

/// The interval log and the job log the options ask for; what could not
/// be opened, as a warning.
fn open_logs(
    opts: &RunOptions,
    run_id: &str,
    plan: &Plan,
) -> (
    Option<crate::hlog::HlogWriter>,
    Option<Arc<crate::joblog::JobLog>>,
    Option<String>,
) {
    let mut warning = None;
    let hlog = opts.hlog.as_ref().and_then(|path| {
        open_hlog(path, run_id, plan)
            .map_err(|e| {
                warning = Some(format!(
                    "cannot write the interval log {}: {e}",
                    path.display()
                ));
            })
            .ok()
    });
    let job_log = opts.job_log.as_ref().and_then(|path| {
        crate::joblog::JobLog::create(path)
            .map_err(|e| {
                warning = Some(format!("cannot write the job log {}: {e}", path.display()));
            })
            .ok()
    });
    (hlog, job_log, warning)
}

/// In-process agents share one open-file limit: a WebSocket run's
/// connections must fit in it twice (server and client sides).
fn check_local_fds(plan: &Plan, count: usize) -> Result<(), RunError> {
    let Some(ws) = &plan.scenario.websocket else {
        return Ok(());
    };
    let clients = count.saturating_sub(1).max(1) as u64;
    let per = plan
        .profiles
        .iter()
        .filter_map(|p| p.connections)
        .chain([ws.connections])
        .max()
        .unwrap_or(ws.connections);
    let need = 2 * u64::from(per) * clients + 1024;
    match LocalAgents::fd_limit_below(need) {
        None => Ok(()),
        Some(limit) => Err(RunError::Roles(format!(
            "websocket.connections = {per}: {count} agents in this process need about {need} open files, and this process may open {limit}: run the agents as their own processes (docs/websocket.md)"
        ))),
    }
}

/// One profile's hosts as their drivers finish, each placed in its group
/// (whose histogram it joins at once).
async fn collect(
    profile: &Profile,
    tasks: Vec<tokio::task::JoinHandle<driver::HostOutcome>>,
    infos: &[cwbench::proto::AgentInfo],
    in_process: bool,
    basis: ThroughputBasis,
    mut ws: Option<crate::websocket::Row>,
) -> ProfileResult {
    let mut hosts = Vec::new();
    let mut groups = Grouper::new(basis);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(mut h) => {
                if h.result.info.logical_cores == 0 {
                    // Lost or failed before Ready: the check before the run
                    // said what it is, so it joins its group.
                    h.result.info = driver::host_info(&infos[i]);
                    h.result.threads = profile.threads.unwrap_or(infos[i].default_threads);
                }
                h.result.info.in_process = in_process;
                // A WebSocket run's groups are its clients.
                let server = h
                    .result
                    .websocket
                    .as_ref()
                    .is_some_and(|w| w.role == "server");
                if !server {
                    groups.add(hosts.len(), &h.result, &h.completion);
                }
                if let Some(row) = &mut ws {
                    row.add(i, &h);
                }
                hosts.push(h.result);
            }
            Err(e) => tracing::error!("driver for host {i} failed: {e}"),
        }
    }
    ProfileResult {
        label: profile.label(),
        profile: profile.clone(),
        groups: groups.finish(&hosts),
        websocket: ws.map(|row| row.finish(&hosts)),
        hosts,
    }
}

/// Finishes the interval log and the job log; what could not be written, as
/// warnings (a log that could not be opened is `hlog_warning`).
fn close_logs(
    hlog: Option<crate::hlog::HlogWriter>,
    job_log: Option<Arc<crate::joblog::JobLog>>,
    mut hlog_warning: Option<String>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(w) = hlog {
        let path = w.path().display().to_string();
        if let Err(e) = w.finish() {
            hlog_warning = Some(format!("cannot write the interval log {path}: {e}"));
        }
    }
    if let Some(l) = job_log
        && let Err(e) = l.finish()
    {
        warnings.push(format!(
            "cannot write the job log {}: {e}",
            l.path().display()
        ));
    }
    warnings.extend(hlog_warning);
    warnings
}

/// Every agent must be reachable and idle before anything starts: their
/// descriptions, in the order of `addrs`.
async fn check_agents(
    addrs: &[String],
    opts: &RunOptions,
) -> Result<Vec<cwbench::proto::AgentInfo>, RunError> {
    let checks: Vec<_> = addrs
        .iter()
        .map(|a| {
            let (a, o) = (a.clone(), opts.clone());
            tokio::spawn(async move { preflight_with_retry(&a, &o).await })
        })
        .collect();
    let mut infos = Vec::new();
    for (c, addr) in checks.into_iter().zip(addrs) {
        let info = c.await.map_err(|e| Unavailable::Unreachable {
            addr: addr.clone(),
            reason: format!("check failed: {e}"),
        })??;
        infos.push(info);
    }
    Ok(infos)
}

/// The interval log (`completion.hlog`), its header comments naming the run,
/// the scenario and each profile's index.
fn open_hlog(
    path: &std::path::Path,
    run_id: &str,
    plan: &Plan,
) -> std::io::Result<crate::hlog::HlogWriter> {
    let mut comments = vec![
        format!(
            "cwbench {} run {run_id}: completion latency in microseconds, per snapshot interval",
            cwbench::VERSION
        ),
        format!(
            "scenario {} seed {}; tags host=<label>;profile=<index>;class=<class>; timestamps: seconds since that host's run of that profile started (agent clock)",
            plan.scenario.name, plan.scenario.seed
        ),
    ];
    for (pi, p) in plan.profiles.iter().enumerate() {
        comments.push(format!("profile={pi}: {}", p.label()));
    }
    crate::hlog::HlogWriter::create(path, &comments)
}

/// Unique row labels: host names, qualified by address where they repeat.
fn labels(addrs: &[String], infos: &[cwbench::proto::AgentInfo], local: bool) -> Vec<String> {
    if local {
        return (1..=addrs.len()).map(|i| format!("local-{i}")).collect();
    }
    addrs
        .iter()
        .zip(infos)
        .map(|(a, i)| {
            let dup = infos.iter().filter(|o| o.hostname == i.hostname).count() > 1;
            if dup || i.hostname.is_empty() {
                format!("{}@{a}", i.hostname)
            } else {
                i.hostname.clone()
            }
        })
        .collect()
}

/// Problems a reader must know about, one line per (profile, cause): the
/// hosts a cause hit are listed once, so 200 lost hosts make one line.
fn warnings(profiles: &[ProfileResult]) -> Vec<String> {
    let mut causes: Vec<(String, Vec<String>)> = Vec::new();
    let mut hit = |cause: String, host: String| match causes.iter_mut().find(|(c, _)| *c == cause) {
        Some((_, hosts)) => hosts.push(host),
        None => causes.push((cause, vec![host])),
    };
    for p in profiles {
        for h in &p.hosts {
            if !h.status.checked() {
                // The host's own name and address, and the figures that
                // differ from host to host, go in the host list.
                let why = h
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .replace(&h.addr, "<host>")
                    .replace(&h.label, "<host>");
                let (why, figures) = figures_out(&why);
                let host = if figures.is_empty() {
                    h.label.clone()
                } else {
                    format!("{} ({})", h.label, figures.join(", "))
                };
                hit(format!("[{}] {:?}: {why}", p.label, h.status), host);
            }
            if h.window_s > 0.0 && h.feed_stall_ms > 0.01 * h.window_s * 1000.0 {
                hit(
                    format!(
                        "[{}] feed stall over 1% of the window: the coordinator did not keep the agent fed",
                        p.label
                    ),
                    format!(
                        "{} ({:.1} ms, {:.1}%)",
                        h.label,
                        h.feed_stall_ms,
                        h.feed_stall_ms / (h.window_s * 10.0)
                    ),
                );
            }
        }
    }
    causes
        .into_iter()
        .map(|(cause, hosts)| match hosts.as_slice() {
            [one] => format!("{one} {cause}"),
            many => format!("{} hosts {cause} — {}", many.len(), many.join(", ")),
        })
        .collect()
}

/// A message with its standalone numbers (`2.3` in `lost 2.3 s after`)
/// replaced by `#`, and those numbers, so that messages differing only in
/// them group together.
fn figures_out(msg: &str) -> (String, Vec<String>) {
    let mut figures = Vec::new();
    let words: Vec<String> = msg
        .split(' ')
        .map(|w| {
            let n = w.trim_end_matches([',', ':', ';', ')']);
            let numeric = !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit() || c == '.')
                && n.chars().next().is_some_and(|c| c.is_ascii_digit());
            if numeric {
                figures.push(n.to_string());
                format!("#{}", &w[n.len()..])
            } else {
                w.to_string()
            }
        })
        .collect();
    (words.join(" "), figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_out_of_messages() {
        let (m, f) = figures_out(
            "agent <host> connection lost 2.3 s after its last message: h2 protocol error",
        );
        assert_eq!(
            m,
            "agent <host> connection lost # s after its last message: h2 protocol error"
        );
        assert_eq!(f, ["2.3"]);
        let (m, f) = figures_out("sent 10, got 9: mismatch");
        assert_eq!((m.as_str(), f.len()), ("sent #, got #: mismatch", 2));
    }

    /// A WebSocket run whose server is the BEAM needs Erlang on the server
    /// only: its clients run tokio.
    #[test]
    fn only_a_beam_server_needs_the_beam() {
        let ws = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ws-beam.toml");
        let limits = cwbench::scenario::Limits::default();
        let plan = cwbench::scenario::load(std::path::Path::new(ws), &limits).unwrap();
        let addrs = ["a:1".to_string(), "b:2".to_string()];
        let tokio = cwbench::proto::AgentInfo {
            runtimes_available: vec!["tokio".into()],
            beam_unavailable_reason: "no erl".into(),
            ..Default::default()
        };
        let beam = cwbench::proto::AgentInfo {
            runtimes_available: vec!["tokio".into(), "beam".into()],
            ..Default::default()
        };
        let infos = [tokio.clone(), beam];
        assert!(check_runtimes(&plan, &addrs, &infos, Some(&Server::Agent(1))).is_ok());
        let e = check_runtimes(&plan, &addrs, &infos, Some(&Server::Agent(0)))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("agent a:1 cannot run beam"), "{e}");
        assert!(e.contains("no erl"), "{e}");
        let target = Server::Target(crate::websocket::Target {
            url: "ws://h/".into(),
            tls_ca: Vec::new(),
        });
        assert!(check_runtimes(&plan, &addrs, &[tokio.clone(), tokio], Some(&target)).is_ok());
    }

    /// An agent that would ignore Plan.class_compute (older than it) is
    /// refused before anything runs, naming the class's key.
    #[test]
    fn class_placements_need_an_agent_that_honours_them() {
        let starvation = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/starvation.toml");
        let limits = cwbench::scenario::Limits::default();
        let plan = cwbench::scenario::load(std::path::Path::new(starvation), &limits).unwrap();
        let addrs = ["a:1".to_string(), "b:2".to_string()];
        let new = cwbench::proto::AgentInfo {
            class_compute: true,
            runtimes_available: vec!["tokio".into()],
            ..Default::default()
        };
        let old = cwbench::proto::AgentInfo {
            class_compute: false,
            agent_version: "0.0.9".into(),
            ..new.clone()
        };
        assert!(check_runtimes(&plan, &addrs, &[new.clone(), new.clone()], None).is_ok());
        let e = check_runtimes(&plan, &addrs, &[new, old], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "agent b:2 cannot run class[1].compute (profile t1 w16 q256 p1 pool/inline)"
            ) && e.contains("does not place CPU steps per class (cwbench 0.0.9)"),
            "{e}"
        );
    }

    #[test]
    fn utc_timestamps() {
        let at = |s| Timestamp::from_second(s).unwrap();
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_437_296)), "2026-11-23T12:34:56Z");
        let id = new_run_id();
        let (stamp, suffix) = id.rsplit_once('-').unwrap();
        assert!(
            Timestamp::strptime("%Y%m%d-%H%M%S%z", format!("{stamp}+0000")).is_ok(),
            "{id}"
        );
        assert!(
            suffix.len() == 4 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
    }
}
