//! `ws`: the WebSocket targets of docs/performance.md ("WebSocket
//! targets") through the real pipeline: two agent processes (the release
//! `agent` binary beside this one), the first the server and the second
//! the client, driven by the coordinator library; the figures are the
//! run's own `profiles[].websocket`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cwbench::scenario::{Limits, parse};
use cwbench_coordinator::driver::DriveOptions;
use cwbench_coordinator::result::WsProfile;
use cwbench_coordinator::run::{Agents, RunOptions};

use crate::load_avg;

#[derive(Debug, Clone, clap::Args)]
pub struct WsArgs {
    /// Short runs: 300,000 closed-loop tasks, 5 s open loop, the 10,000
    /// connections held 10 s (the full run: 2,000,000, 20 s, 60 s).
    #[arg(long)]
    pub quick: bool,
    /// Only these targets (comma-separated: rate, p99, conns).
    #[arg(long, default_value = "rate,p99,conns")]
    pub only: String,
    /// Worker threads of the server's runtime (the profile's threads).
    #[arg(long, default_value_t = 2)]
    pub server_threads: u32,
    /// The client agent's threads (`agent --threads`: its runtime).
    #[arg(long, default_value_t = 2)]
    pub client_threads: u32,
}

/// An agent process on a loopback port, killed and reaped when dropped.
struct AgentProc {
    child: Child,
    addr: String,
    pid: u32,
}

impl AgentProc {
    fn start(threads: u32) -> Result<Self> {
        let bin = std::env::current_exe()?
            .with_file_name(format!("agent{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            bail!(
                "{} not found: cargo build --release --bin agent",
                bin.display()
            );
        }
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--threads", &threads.to_string()])
            .env_remove("CWBENCH_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut out = BufReader::new(child.stdout.take().context("agent stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        // Keep reading what else it prints, so it never blocks on a pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        // `agent listening on ADDR (threads N)`.
        let addr = line
            .split_whitespace()
            .nth(3)
            .with_context(|| format!("unexpected first agent line {line:?}"))?
            .to_string();
        Ok(Self { child, addr, pid })
    }

    fn rss(&self) -> u64 {
        cwbench::sysinfo::rss_bytes_of(&self.pid.to_string())
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A zero-work WebSocket scenario: task-per-job server, one class.
fn scenario(run: &str, arrival: &str, websocket: &str, server_threads: u32) -> String {
    format!(
        r#"name = "ws-target"
seed = 18

[run]
snapshot_interval_ms = 1000
{run}
{arrival}
[profile]
threads = {server_threads}
workers = 1
dispatch = "task-per-job"
compute = "inline"

[websocket]
{websocket}

[[class]]
name = "zero"
work_units = {{ dist = "constant", value = 0 }}
"#
    )
}

/// One run against a fresh server and client agent. (the profile's
/// websocket row, the server's idle RSS before the run, its peak RSS
/// sampled every 250 ms during the run, wall seconds).
fn run_ws(toml: &str, a: &WsArgs) -> Result<(WsProfile, u64, u64, f64)> {
    let limits = Limits {
        max_jobs: u64::MAX / 4,
        ..Limits::default()
    };
    let plan = parse(toml, "ws-target.toml", &limits).context("ws target scenario")?;
    let server = AgentProc::start(a.server_threads)?;
    let client = AgentProc::start(a.client_threads)?;
    let idle = server.rss();
    let stop = Arc::new(AtomicBool::new(false));
    let pid = server.pid.to_string();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            // Bounded: the run's end stops it; 30 minutes at most.
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(1800) {
                peak = peak.max(cwbench::sysinfo::rss_bytes_of(&pid));
                std::thread::sleep(Duration::from_millis(250));
            }
            peak
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cwbench_coordinator::driver::runtime_threads())
        .enable_all()
        .build()?;
    let opts = RunOptions {
        agents: Agents::Remote(vec![server.addr.clone(), client.addr.clone()]),
        drive: DriveOptions::default(),
        ..RunOptions::default()
    };
    let t0 = Instant::now();
    let r = rt.block_on(cwbench_coordinator::run::run(plan, opts, None));
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    drop((server, client));
    let r = r.map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = r.profiles.first().context("no profile")?;
    for h in &p.hosts {
        if h.status != cwbench_coordinator::result::HostStatus::Ok {
            bail!("host {} ended {:?}: {:?}", h.addr, h.status, h.error);
        }
    }
    let ws = p
        .websocket
        .clone()
        .context("no websocket row in the result")?;
    Ok((ws, idle, peak, wall))
}

fn errors(w: &WsProfile) -> u64 {
    let e = &w.errors;
    e.crashed + e.timed_out + e.refused + e.connection_lost + e.cancelled + e.connect_failed
}

fn line(name: &str, w: &WsProfile, wall: f64) {
    let e = &w.errors;
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!(
        "  {name}: {:.0} round trips/s, round trip p50 {} µs p99 {} µs max {} µs (p99 of: send delay {} µs, server queue wait {} µs, server service {} µs), {} connections, tasks sent {} served {} (digest {}), errors: crashed {} timed out {} refused {} lost {} cancelled {} connect failed {} reconnects {}; CPU µs per task client {} server {}; server bytes per connection {}; wall {wall:.1} s; load {}",
        w.round_trips_per_s,
        w.round_trip.p50,
        w.round_trip.p99,
        w.round_trip.max,
        w.send_delay.p99,
        w.server_queue_wait.p99,
        w.server_service.p99,
        w.connections,
        w.tasks_sent,
        w.tasks_served,
        match w.digest_match {
            Some(true) => "matches",
            Some(false) => "differs",
            None => "not compared",
        },
        e.crashed,
        e.timed_out,
        e.refused,
        e.connection_lost,
        e.cancelled,
        e.connect_failed,
        e.reconnects,
        opt(w.client_cpu_us_per_task),
        opt(w.server_cpu_us_per_task),
        opt(w.server_bytes_per_connection),
        load_avg()
    );
}

pub fn ws(a: &WsArgs) -> Result<()> {
    println!(
        "\n## ws: WebSocket targets, agents as processes (server threads {}, client threads {}), zero work, task-per-job server{}, load {}",
        a.server_threads,
        a.client_threads,
        if a.quick { ", quick" } else { "" },
        load_avg()
    );
    let only: Vec<&str> = a.only.split(',').collect();
    let mut rows: Vec<String> = Vec::new();
    let mut cpu: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    if only.contains(&"rate") {
        let jobs: u64 = if a.quick { 300_000 } else { 2_000_000 };
        let toml = scenario(
            &format!("warmup_jobs = {}\njobs = {jobs}", jobs / 10),
            "",
            "connections = 64\nin_flight = 16",
            a.server_threads,
        );
        let (w, _, _, wall) = run_ws(&toml, a)?;
        line("(1) closed loop, 64 connections x 16 in flight", &w, wall);
        rows.push(format!(
            "| (1) zero work, 64 connections, closed loop (16 in flight), {jobs} tasks | ≥ 100,000 round trips/s | {:.0} round trips/s (errors {}) | {} | {} |",
            w.round_trips_per_s,
            errors(&w),
            met(w.round_trips_per_s >= 100_000.0 && errors(&w) == 0),
            load_avg()
        ));
        cpu.push((
            "(1)".into(),
            w.client_cpu_us_per_task,
            w.server_cpu_us_per_task,
        ));
    }
    if only.contains(&"p99") {
        let secs: u64 = if a.quick { 5 } else { 20 };
        let rate = 10_000u64;
        let toml = scenario(
            &format!("warmup_jobs = {rate}\njobs = {}", rate * secs),
            &format!("[arrival]\nmode = \"open\"\nprocess = \"constant\"\nrate = {rate}.0\n"),
            "connections = 1000\nin_flight = 16",
            a.server_threads,
        );
        let (w, _, _, wall) = run_ws(&toml, a)?;
        line("(2) open loop 10,000 tasks/s, 1,000 connections", &w, wall);
        rows.push(format!(
            "| (2) open loop 10,000 tasks/s, 1,000 connections, {secs} s | round trip p99 ≤ 1 ms | p99 {} µs (p50 {} µs, max {} µs; {:.0} round trips/s, errors {}) | {} | {} |",
            w.round_trip.p99,
            w.round_trip.p50,
            w.round_trip.max,
            w.round_trips_per_s,
            errors(&w),
            met(w.round_trip.p99 <= 1000 && errors(&w) == 0),
            load_avg()
        ));
        cpu.push((
            "(2)".into(),
            w.client_cpu_us_per_task,
            w.server_cpu_us_per_task,
        ));
    }
    if only.contains(&"conns") {
        let hold: u64 = if a.quick { 10 } else { 60 };
        let (conns, connect_rate, rate) = (10_000u64, 2_000u64, 1_000u64);
        let ramp = conns / connect_rate;
        // Tasks keep every connection in use over the ramp and the hold.
        let toml = scenario(
            &format!("warmup_jobs = 0\njobs = {}", rate * (ramp + hold)),
            &format!("[arrival]\nmode = \"open\"\nprocess = \"constant\"\nrate = {rate}.0\n"),
            &format!("connections = {conns}\nconnect_rate = {connect_rate}\nin_flight = 4"),
            a.server_threads,
        );
        let (w, idle, peak, wall) = run_ws(&toml, a)?;
        line(
            &format!("(3) {conns} connections at {connect_rate}/s, held {hold} s"),
            &w,
            wall,
        );
        let sampled = peak.saturating_sub(idle) as f64 / conns as f64;
        println!(
            "  server RSS: idle {:.1} MiB, peak {:.1} MiB, (peak - idle) / {conns} = {sampled:.0} bytes per connection",
            idle as f64 / 1048576.0,
            peak as f64 / 1048576.0
        );
        let e = &w.errors;
        let conn_errors = e.connect_failed + e.connection_lost + e.reconnects;
        let per = w.server_bytes_per_connection.unwrap_or(sampled);
        rows.push(format!(
            "| (3) {conns} connections at {connect_rate}/s, held {hold} s, {rate} tasks/s | zero connection errors; server RSS ≤ 20 KiB per connection | {} connections at peak; connection errors {conn_errors} (connect failed {}, lost {}, reconnects {}); RSS per connection {} (report), {sampled:.0} bytes ((peak − idle) ÷ {conns}, sampled) | {} | {} |",
            w.connections,
            e.connect_failed,
            e.connection_lost,
            e.reconnects,
            w.server_bytes_per_connection
                .map_or("-".into(), |b| format!("{b:.0} bytes")),
            met(conn_errors == 0 && w.connections >= conns && per <= 20.0 * 1024.0 && sampled <= 20.0 * 1024.0),
            load_avg()
        ));
        cpu.push((
            "(3)".into(),
            w.client_cpu_us_per_task,
            w.server_cpu_us_per_task,
        ));
    }
    for (name, c, s) in &cpu {
        let ok = match (c, s) {
            (Some(c), Some(s)) => met(c <= s),
            _ => "not measured".into(),
        };
        rows.push(format!(
            "| (4) client CPU per round trip ≤ server's, run {name} | client ≤ server | client {} µs, server {} µs | {ok} | {} |",
            c.map_or("-".into(), |v| format!("{v:.2}")),
            s.map_or("-".into(), |v| format!("{v:.2}")),
            load_avg()
        ));
    }
    println!("\n| target | bound | measured | status | load |");
    println!("| --- | --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

fn met(ok: bool) -> String {
    if ok { "met" } else { "missed" }.into()
}
