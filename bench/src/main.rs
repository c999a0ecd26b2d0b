//! `cwbench-bench`: reproduces every figure of docs/performance.md — the
//! harness's own cost, side by side with the seed's dull in-process harness.
//!
//! `cargo run --release --bin cwbench-bench -- all` (or one figure by name).

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cwbench::batch::BatchBuilder;
use cwbench::generator::{Generator, Job};
use cwbench::histogram::{Hist, encode, new_hist, record};
use cwbench::proto;
use cwbench::scenario::{Limits, PARITY_NAME, PARITY_TOML, Plan, parse};
use cwbench::spec::Dispatch;
use cwbench_agent::span::End;
use cwbench_agent::workload::{Config, Outcome, Workload};
use cwbench_coordinator::driver::{DriveOptions, HostReplay, HostRun, Share};
use cwbench_coordinator::groups::Grouper;
use cwbench_coordinator::result::{ProfileResult, RunResult, SCHEMA_VERSION, ThroughputBasis};
use cwbench_coordinator::run::{Agents, RunOptions};
use prost::Message;

mod coord_scale;
mod ws_lib;
mod ws_targets;
use coord_scale::coord_scale;
use ws_lib::{WsLibArgs, ws_lib};
use ws_targets::{WsArgs, ws};

#[derive(Debug, Parser)]
#[command(
    name = "cwbench-bench",
    about = "cwbench's performance figures (docs/performance.md)"
)]
struct Cli {
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Debug, Clone, clap::Args)]
struct PipelineArgs {
    /// Measured jobs per run.
    #[arg(long, default_value_t = 5_000_000)]
    jobs: u64,
    /// Interleaved repeats of every variant.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Worker threads of the agent's workload runtime (and of the dull harness).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Jobs the agent keeps buffered (scenario run.prefetch_jobs).
    #[arg(long, default_value_t = 262_144)]
    prefetch: u32,
    /// Jobs per JobBatch message.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Only these variants (comma-separated: literal,dull,w1,w1k,w8,task;
    /// literal = the seed's harness as written, no timestamps; dull = the
    /// same with a timestamp and a histogram record per job; w1k = 1 worker
    /// with work drawn from uniform 0..=0, so every job's ChaCha block is
    /// computed).
    #[arg(long, default_value = PIPELINE_VARIANTS)]
    only: String,
}

/// The pipeline's variants, in the order each repeat runs them.
const PIPELINE_VARIANTS: &str = "literal,dull,w1,w1k,w8,task";

#[derive(Debug, Subcommand)]
enum Figure {
    /// The seed's in-process harnesses alone, interleaved: producer -> tokio
    /// mpsc(256) -> one worker; literal (counts) and dull (stamps and records).
    Dull {
        #[arg(long, default_value_t = 5_000_000)]
        jobs: u64,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
    /// Zero-work jobs, closed loop, coordinator -> one local agent over loopback
    /// gRPC (1 worker, 8 workers, task-per-job), interleaved with the dull harness.
    Pipeline(PipelineArgs),
    /// Bytes of JobBatch messages per job for parity.toml's real values.
    Wire {
        #[arg(long, default_value_t = 8192)]
        batch: usize,
    },
    /// Agent CPU per job (dispatch, timestamps, histogram records): the
    /// workload alone, fed in-process, zero-work jobs.
    Overhead {
        #[arg(long, default_value_t = 10_000_000)]
        jobs: u64,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Only these variants (comma-separated: w1,w2,w8,task,line; line:
        /// the floor of one cache line shared between the threads; w1t: 1 worker,
        /// a timed closed loop whose end is never reached, so every job
        /// passes the per-job stop decision).
        #[arg(long, default_value = "w1,w2,w8,task,line")]
        only: String,
    },
    /// A long zero-work run against an agent in a child process: agent RSS
    /// after warm-up and at the end; coordinator RSS.
    Memory {
        #[arg(long, default_value_t = 50_000_000)]
        jobs: u64,
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Jobs the agent keeps buffered (scenario run.prefetch_jobs).
        #[arg(long, default_value_t = 65_536)]
        prefetch: u32,
    },
    /// The coordinator's merge and report for many hosts' snapshot streams.
    CoordScale {
        #[arg(long, default_value_t = 256)]
        agents: usize,
        /// One-second snapshots per agent.
        #[arg(long, default_value_t = 600)]
        snapshots: u64,
    },
    /// Open loop, zero work: p99 completion latency from the intended start.
    Latency {
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
    /// WebSocket crates side by side: echo round trips of task frames over
    /// loopback, server and client in this process, closed loop.
    WsLib(WsLibArgs),
    /// The WebSocket targets through the real pipeline: a server and a
    /// client agent as processes (the release `agent` binary), zero work.
    Ws(WsArgs),
    /// Every figure with default sizes (memory with --memory-jobs; the
    /// documented figure is 50 M jobs).
    All {
        #[arg(long, default_value_t = 50_000_000)]
        memory_jobs: u64,
    },
    /// (internal) Serve an agent on 127.0.0.1:0 and print its address.
    #[command(hide = true)]
    ServeAgent {
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.figure {
        Figure::Dull {
            jobs,
            repeats,
            threads,
        } => {
            for _ in 0..repeats {
                let l = literal(jobs, threads);
                let r = dull(jobs, threads);
                println!(
                    "literal: {:.2} M jobs/s, dull: {:.2} M jobs/s",
                    l / 1e6,
                    r / 1e6
                );
            }
        }
        Figure::Pipeline(a) => pipeline(&a)?,
        Figure::Wire { batch } => wire(batch)?,
        Figure::Overhead {
            jobs,
            repeats,
            threads,
            only,
        } => overhead(jobs, repeats, threads, &only)?,
        Figure::Memory {
            jobs,
            threads,
            prefetch,
        } => memory(jobs, threads, prefetch)?,
        Figure::CoordScale { agents, snapshots } => coord_scale(agents, snapshots)?,
        Figure::Latency {
            rate,
            secs,
            threads,
        } => latency(rate, secs, threads)?,
        Figure::All { memory_jobs } => {
            machine();
            pipeline(&PipelineArgs {
                jobs: 5_000_000,
                repeats: 3,
                threads: 2,
                prefetch: 262_144,
                batch: 8192,
                only: PIPELINE_VARIANTS.into(),
            })?;
            wire(8192)?;
            overhead(10_000_000, 3, 2, "w1,w2,w8,task,line")?;
            latency(10_000.0, 10, 2)?;
            // Before coord-scale, whose 140 MiB would sit in this
            // process's (the coordinator's) RSS.
            memory(memory_jobs, 2, 65_536)?;
            coord_scale(256, 600)?;
        }
        Figure::WsLib(a) => ws_lib(&a)?,
        Figure::Ws(a) => ws(&a)?,
        Figure::ServeAgent { threads } => serve_agent(threads)?,
    }
    Ok(())
}

fn machine() {
    let cores = cwbench::sysinfo::logical_cores();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} ({} logical cores), {}; load average {}",
        cwbench::sysinfo::cpu_model(),
        cores,
        cwbench::sysinfo::os(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// The seed note's job, field for field.
#[derive(Clone)]
struct SeedJob {
    id: u64,
    work_units: u32,
    sleep_ms: u64,
}

/// The seed's harness as the note writes it (the literal baseline): a tokio
/// runtime, one producer task sending zero-work jobs through a tokio bounded
/// mpsc(256) to one worker task, which runs the black-box loop and counts;
/// no timestamps, no histogram. The note's sleep is left out for a 0 ms
/// job, as cwbench's workers leave it out (a 0 ms tokio sleep still waits
/// for the next 1 ms tick). Jobs per second.
fn literal(jobs: u64, threads: u32) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SeedJob>(256);
        let t0 = Instant::now();
        let worker = tokio::spawn(async move {
            let mut done = 0u64;
            while let Some(job) = rx.recv().await {
                for _ in 0..job.work_units {
                    black_box(job.id ^ u64::from(job.work_units));
                }
                if job.sleep_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
                }
                done += 1;
            }
            done
        });
        let producer = tokio::spawn(async move {
            for id in 0..jobs {
                let job = SeedJob {
                    id,
                    work_units: 0,
                    sleep_ms: 0,
                };
                if tx.send(job).await.is_err() {
                    break;
                }
            }
        });
        let _ = producer.await;
        assert_eq!(worker.await.expect("worker"), jobs);
        jobs as f64 / t0.elapsed().as_secs_f64()
    })
}

/// The recording baseline: the literal harness with what a measuring
/// harness adds. One producer task stamps each zero-work job and
/// sends it through a tokio bounded mpsc(256) to one worker task, which runs
/// the black-box loop and records the completion latency. Jobs per second.
fn dull(jobs: u64, threads: u32) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, u32, Instant)>(256);
        let t0 = Instant::now();
        let worker = tokio::spawn(async move {
            let mut h = new_hist();
            while let Some((id, units, at)) = rx.recv().await {
                for _ in 0..units {
                    black_box(id ^ u64::from(units));
                }
                record(&mut h, at.elapsed().as_micros() as u64);
            }
            h
        });
        let producer = tokio::spawn(async move {
            for id in 0..jobs {
                if tx.send((id, 0, Instant::now())).await.is_err() {
                    break;
                }
            }
        });
        let _ = producer.await;
        let h: Hist = worker.await.expect("worker");
        assert_eq!(h.len(), jobs);
        jobs as f64 / t0.elapsed().as_secs_f64()
    })
}

/// A zero-work scenario: closed loop unless `rate` is given.
fn zero_work_plan(
    jobs: u64,
    warmup: u64,
    workers: u32,
    dispatch: &str,
    threads: u32,
    prefetch: u32,
    rate: Option<f64>,
) -> Result<Plan> {
    zero_work_plan_of(
        jobs,
        warmup,
        workers,
        dispatch,
        threads,
        prefetch,
        rate,
        "constant",
        "value = 0",
    )
}

/// A zero-work scenario whose work is drawn from `dist` (`params`): a
/// uniform 0..=0 draw gives the same jobs as a constant 0, but the
/// generator must compute every job's ChaCha block to draw it.
#[allow(clippy::too_many_arguments)]
fn zero_work_plan_of(
    jobs: u64,
    warmup: u64,
    workers: u32,
    dispatch: &str,
    threads: u32,
    prefetch: u32,
    rate: Option<f64>,
    dist: &str,
    params: &str,
) -> Result<Plan> {
    let arrival = match rate {
        Some(r) => format!("[arrival]\nmode = \"open\"\nprocess = \"constant\"\nrate = {r:.1}\n\n"),
        None => String::new(),
    };
    let text = format!(
        r#"name = "zero-work"
seed = 42

[run]
warmup_jobs = {warmup}
jobs = {jobs}
snapshot_interval_ms = 1000
prefetch_jobs = {prefetch}

{arrival}[profile]
threads = {threads}
workers = {workers}
queue_bound = 256
producers = 1
dispatch = "{dispatch}"

[[class]]
name = "zero"
work_units = {{ dist = "{dist}", {params} }}
"#
    );
    let limits = Limits {
        max_jobs: u64::MAX / 4,
        ..Limits::default()
    };
    parse(&text, "zero-work.toml", &limits).context("zero-work scenario")
}

/// One coordinator run against one in-process agent. (throughput over the
/// measured window, jobs ÷ wall time of the whole run, the host result).
fn run_plan(
    plan: Plan,
    agents: Agents,
    batch: usize,
    progress: Option<cwbench_coordinator::observer::Progress>,
) -> Result<(f64, f64, RunResult)> {
    // The coordinator binary's runtime, thread for thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cwbench_coordinator::driver::runtime_threads())
        .enable_all()
        .build()?;
    let total = plan.total_jobs();
    let opts = RunOptions {
        agents,
        drive: DriveOptions {
            batch_jobs: batch,
            ..DriveOptions::default()
        },
        ..RunOptions::default()
    };
    let t0 = Instant::now();
    let observer = progress.map(cwbench_coordinator::observer::lines);
    let r = rt.block_on(cwbench_coordinator::run::run(plan, opts, observer))?;
    let wall = total as f64 / t0.elapsed().as_secs_f64();
    let h = &r.profiles[0].hosts[0];
    if h.status != cwbench_coordinator::result::HostStatus::Ok {
        bail!("run failed: {:?} {:?}", h.status, h.error);
    }
    if h.digest_received.as_deref() != Some(h.digest_sent.as_str()) {
        bail!("digest mismatch");
    }
    Ok((h.throughput, wall, r))
}

fn pipeline(a: &PipelineArgs) -> Result<()> {
    println!(
        "\n## pipeline: zero-work jobs, closed loop, bound 256, {} measured jobs per run, agent threads {}, load {}",
        a.jobs,
        a.threads,
        load_avg()
    );
    let variants: Vec<&str> = a.only.split(',').collect();
    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut push = |name: &str, tput: f64, wall: f64| {
        if let Some(r) = rows.iter_mut().find(|r| r.0 == name) {
            r.1.push(tput);
            r.2.push(wall);
        } else {
            rows.push((name.to_string(), vec![tput], vec![wall]));
        }
    };
    let warmup = a.jobs / 10;
    for rep in 0..a.repeats {
        for v in &variants {
            let (name, workers, dispatch) = match *v {
                "literal" => {
                    let r = literal(a.jobs, a.threads);
                    println!(
                        "  rep {rep} literal (in-process mpsc(256), 1 worker, counts): {:.2} M/s",
                        r / 1e6
                    );
                    push("literal", r, r);
                    continue;
                }
                "dull" => {
                    let r = dull(a.jobs, a.threads);
                    println!(
                        "  rep {rep} dull (in-process mpsc(256), 1 worker, stamps and records): {:.2} M/s",
                        r / 1e6
                    );
                    push("dull", r, r);
                    continue;
                }
                "w1" => ("pool, 1 worker", 1, "pool"),
                "w1k" => ("pool, 1 worker, every block computed", 1, "pool"),
                "w8" => ("pool, 8 workers", 8, "pool"),
                "task" => ("task-per-job", 1, "task-per-job"),
                other => bail!("unknown variant {other}"),
            };
            // w1k: work drawn from uniform 0..=0 (always 0), so the
            // coordinator computes each job's ChaCha block as any scenario
            // with a random value does; the others need no draw at all.
            let (dist, params) = if *v == "w1k" {
                ("uniform", "min = 0, max = 0")
            } else {
                ("constant", "value = 0")
            };
            let plan = zero_work_plan_of(
                a.jobs, warmup, workers, dispatch, a.threads, a.prefetch, None, dist, params,
            )?;
            let (tput, wall, _) = run_plan(
                plan,
                Agents::Local {
                    count: 1,
                    threads: a.threads,
                },
                a.batch,
                None,
            )?;
            println!(
                "  rep {rep} {name}: {:.2} M/s (measured window), {:.2} M/s (whole run, wall)",
                tput / 1e6,
                wall / 1e6
            );
            push(name, tput, wall);
        }
    }
    print_ratios(&rows, a.repeats);
    Ok(())
}

/// The pipeline's table: each variant's median, and its ratio to each
/// baseline that ran — of the medians, and repeat by repeat to the
/// baseline run of the same repeat (the two saw the same moment's load).
fn print_ratios(rows: &[(String, Vec<f64>, Vec<f64>)], repeats: usize) {
    let base = |b: &str| rows.iter().find(|r| r.0 == b).map(|r| r.1.clone());
    let bases: Vec<(&str, Vec<f64>)> = ["literal", "dull"]
        .into_iter()
        .filter_map(|b| Some((b, base(b)?)))
        .collect();
    let mut head = format!("| variant | jobs/s (median of {repeats}) | min..max |");
    for (b, _) in &bases {
        head += &format!(" to {b}: ratio of medians | per repeat (median) |");
    }
    println!("\n{head} whole-run jobs/s |");
    println!("|{}", " --- |".repeat(3 + 2 * bases.len() + 1));
    for (name, t, w) in rows {
        let m = median(t);
        let mut line = format!(
            "| {name} | {:.2} M | {:.2}..{:.2} M |",
            m / 1e6,
            t.iter().cloned().fold(f64::MAX, f64::min) / 1e6,
            t.iter().cloned().fold(0.0, f64::max) / 1e6,
        );
        for (_, d) in &bases {
            let r: Vec<f64> = t.iter().zip(d).map(|(x, y)| x / y).collect();
            let list: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
            line += &format!(
                " {:.2}× | {} ({:.2}×) |",
                m / median(d),
                list.join(", "),
                median(&r)
            );
        }
        println!("{line} {:.2} M |", median(w) / 1e6);
    }
}

/// The median; of an even count, the mean of the two middle values.
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A child process killed and reaped when dropped, on every way out.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn parity() -> Result<Plan> {
    parse(PARITY_TOML, PARITY_NAME, &Limits::default()).context("parity")
}

fn wire(batch: usize) -> Result<()> {
    println!(
        "\n## wire: JobBatch bytes per job, {batch} jobs per batch; coordinator CPU per job to generate, digest, pack and encode the stream (one thread, load {})",
        load_avg()
    );
    for (name, plan) in [
        ("parity.toml", parity()?),
        (
            "zero work (pipeline's stream)",
            zero_work_plan(5_000_000, 0, 1, "pool", 2, 262_144, None)?,
        ),
        (
            "open-loop.toml",
            parse(
                include_str!("../../scenarios/open-loop.toml"),
                "open-loop.toml",
                &Limits::default(),
            )?,
        ),
    ] {
        for packed in [false, true] {
            let total = plan.total_jobs();
            let mut g = Generator::new(&plan);
            let mut b =
                BatchBuilder::new(plan.classes.len() > 1, plan.is_open(), batch).packed(packed);
            let mut bytes = 0usize;
            let mut msgs = 0usize;
            let mut jobs = 0u64;
            let t0 = Instant::now();
            let mut enc_ns = 0u128;
            let mut digest = cwbench::digest::Digest::new();
            while jobs < total {
                let n = (batch as u64).min(total - jobs);
                for _ in 0..n {
                    let j = g.next_job();
                    digest.push(&j);
                    b.push(&j);
                }
                jobs += n;
                let e0 = Instant::now();
                let msg = proto::RunRequest {
                    msg: Some(proto::run_request::Msg::Jobs(b.take())),
                };
                let buf = msg.encode_to_vec();
                enc_ns += e0.elapsed().as_nanos();
                // gRPC frames each message with 5 bytes (flag + length).
                bytes += buf.len() + 5;
                msgs += 1;
            }
            let all_ns = t0.elapsed().as_nanos();
            black_box(digest.value());
            println!(
                "  {name} ({}): {jobs} jobs in {msgs} messages, {bytes} bytes: {:.3} bytes/job (incl. 5-byte gRPC frame); pack + encode {:.1} ns/job; generate + digest + batch + pack + encode {:.1} ns/job",
                if packed {
                    "packed, encoding 1"
                } else {
                    "plain columns"
                },
                bytes as f64 / jobs as f64,
                enc_ns as f64 / jobs as f64,
                all_ns as f64 / jobs as f64
            );
        }
    }
    Ok(())
}

fn cpu_us() -> u64 {
    let (u, s) = cwbench::sysinfo::cpu_times_us();
    u + s
}

fn overhead(jobs: u64, repeats: usize, threads: u32, only: &str) -> Result<()> {
    println!(
        "\n## overhead: agent workload alone (in-process feed, zero work, pool, bound 256), {jobs} jobs, threads {threads}, load {}",
        load_avg()
    );
    for (key, name, workers, dispatch, timed) in [
        ("w1", "pool, 1 worker", 1usize, Dispatch::Pool, false),
        ("w2", "pool, 2 workers", 2, Dispatch::Pool, false),
        ("w8", "pool, 8 workers", 8, Dispatch::Pool, false),
        ("task", "task-per-job", 1, Dispatch::TaskPerJob, false),
        ("w1t", "pool, 1 worker, timed", 1, Dispatch::Pool, true),
    ] {
        if !only.split(',').any(|o| o == key) {
            continue;
        }
        let mut ns = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..repeats {
            let (cpu_ns, rate) = overhead_once(jobs, workers, dispatch, threads, timed)?;
            ns.push(cpu_ns);
            rates.push(rate);
        }
        println!(
            "  {name}: {:.1} ns CPU/job (median of {repeats}; min {:.1}), {:.2} M jobs/s",
            median(&ns),
            ns.iter().cloned().fold(f64::MAX, f64::min),
            median(&rates) / 1e6
        );
    }
    if only.split(',').any(|o| o == "line") {
        shared_line_floor(jobs.min(20_000_000), threads as usize);
    }
    Ok(())
}

/// The floor under a pool of several workers on several cores: every job
/// is taken from one shared queue, so one cache line crosses between cores
/// per job. `threads` threads each do their share of `ops` operations on
/// one shared line: an atomic add, and a lock + unlock of a parking_lot
/// mutex (what the queue takes per job). CPU ns per operation (all threads).
fn shared_line_floor(ops: u64, threads: usize) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let threads = threads.max(2);
    let per = ops / threads as u64;
    let time = |f: &(dyn Fn() + Sync)| {
        let c0 = cpu_us();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(f);
            }
        });
        (cpu_us() - c0) as f64 * 1000.0 / (per * threads as u64) as f64
    };
    let n = AtomicU64::new(0);
    let add = time(&|| {
        for _ in 0..per {
            n.fetch_add(1, Ordering::Relaxed);
        }
    });
    let m = parking_lot::Mutex::new(0u64);
    let lock = time(&|| {
        for _ in 0..per {
            *m.lock() += 1;
        }
    });
    black_box((n.into_inner(), m.into_inner()));
    println!(
        "  floor, {threads} threads on one shared line: atomic add {add:.1} ns CPU/op, parking_lot lock + unlock {lock:.1} ns CPU/op"
    );
}

/// Runs `jobs` zero-work jobs through a workload fed in-process (no gRPC, no
/// decode). `timed`: a closed loop with a duration (an hour, never reached).
/// (process CPU ns per job, jobs/s).
fn overhead_once(
    jobs: u64,
    workers: usize,
    dispatch: Dispatch,
    threads: u32,
    timed: bool,
) -> Result<(f64, f64)> {
    const CHUNK: u64 = 8192;
    const WINDOW: u64 = 262_144;
    let cfg = Config {
        threads: threads as usize,
        workers,
        queue_bound: 256,
        dispatch,
        end: if timed {
            End::After(Duration::from_secs(3600))
        } else {
            End::Fed
        },
        credit_chunk: 16_384,
        // As the session sets it: the credit window.
        recycle_jobs: WINDOW,
        ..Config::default()
    };
    let mut wl = Workload::start(cfg).map_err(anyhow::Error::msg)?;
    let c0 = cpu_us();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut credit = WINDOW;
    while sent < jobs {
        while credit < CHUNK {
            match wl.credit.blocking_recv() {
                Some(n) => credit += n,
                None => bail!("workload stopped early"),
            }
        }
        let n = CHUNK.min(jobs - sent);
        // As the session fills them: a buffer the producer emptied.
        let mut chunk = wl.buffer(n as usize);
        chunk.extend((sent..sent + n).map(|id| Job {
            id,
            ..Job::default()
        }));
        wl.feed(chunk);
        credit -= n;
        sent += n;
    }
    wl.end_of_jobs();
    let finished = std::mem::replace(&mut wl.finished, tokio::sync::oneshot::channel().1);
    let outcome = finished.blocking_recv()?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_us() - c0;
    if outcome != Outcome::Finished {
        bail!("workload ended with {outcome:?}");
    }
    Ok((cpu as f64 * 1000.0 / jobs as f64, jobs as f64 / secs))
}

fn latency(rate: f64, secs: u64, threads: u32) -> Result<()> {
    println!(
        "\n## latency: open loop {rate} jobs/s, zero work, pool 1 worker, {secs} s, load {}",
        load_avg()
    );
    let jobs = (rate * secs as f64) as u64;
    let plan = zero_work_plan(
        jobs,
        (rate as u64).max(1),
        1,
        "pool",
        threads,
        65_536,
        Some(rate),
    )?;
    let (tput, _, r) = run_plan(plan, Agents::Local { count: 1, threads }, 8192, None)?;
    let h = &r.profiles[0].hosts[0];
    let c = h.latency.completion;
    println!(
        "  completion from intended start: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} jobs, {:.0} jobs/s); scheduler lateness p99 {} µs",
        c.p50, c.p99, c.p999, c.max, c.count, tput, h.lateness.p99
    );
    Ok(())
}

/// Peak resident set of this process (VmHWM), bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn serve_agent(threads: u32) -> Result<()> {
    let rt = cwbench_agent::server::io_runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        let cfg = cwbench_agent::AgentConfig {
            threads,
            ..Default::default()
        };
        cwbench_agent::serve(listener, cfg, std::future::pending::<()>()).await?;
        Ok(())
    })
}

fn memory(jobs: u64, threads: u32, prefetch: u32) -> Result<()> {
    println!(
        "\n## memory: {jobs} zero-work jobs, pool 1 worker, prefetch {prefetch}, agent in a child process, load {}",
        load_avg()
    );
    // The plan first: nothing below may return early with the child alive
    // (it would serve forever).
    let mut plan = zero_work_plan(jobs, jobs / 50, 1, "pool", threads, prefetch, None)?;
    // At ~20 M jobs/s a 50 M-job run lasts seconds: sample RSS often enough
    // to see a trend (the agent reads it with every snapshot).
    const SAMPLE_MS: u32 = 100;
    const WARM: usize = (1000 / SAMPLE_MS) as usize;
    plan.scenario.run.snapshot_interval_ms = SAMPLE_MS;
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .args(["serve-agent", "--threads", &threads.to_string()])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().context("child stdout")?).read_line(&mut line)?;
    let addr = line.trim().to_string();
    let samples: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let s2 = samples.clone();
    let progress: cwbench_coordinator::observer::Progress = Arc::new(move |_h, snap| {
        let rss = snap.gauges.map_or(0, |g| g.rss_bytes);
        s2.lock().unwrap().push((snap.seq, rss));
    });
    let coord = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (coord, stop) = (coord.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                coord.lock().unwrap().push(cwbench::sysinfo::rss_bytes());
                std::thread::sleep(Duration::from_millis(SAMPLE_MS.into()));
            }
        })
    };
    let r = run_plan(plan, Agents::Remote(vec![addr]), 8192, Some(progress));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    drop(child);
    let (tput, _, _) = r?;
    let s = samples.lock().unwrap().clone();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    // Warm-up: the snapshot after 1 second (or the first).
    let warm = s.get(WARM).or(s.first()).map_or(0, |x| x.1);
    let end = s.last().map_or(0, |x| x.1);
    let max = s.iter().map(|x| x.1).max().unwrap_or(0);
    // Steady state: from the warm-up sample to the one before last (the
    // last is taken while the stream drains and buffers are freed).
    let steady: Vec<u64> = s
        .iter()
        .skip(WARM)
        .take(s.len().saturating_sub(WARM + 1))
        .map(|x| x.1)
        .collect();
    let (smin, smax) = (
        steady.iter().copied().min().unwrap_or(warm),
        steady.iter().copied().max().unwrap_or(warm),
    );
    let c = coord.lock().unwrap().clone();
    let cwarm = c.get(WARM).or(c.first()).copied().unwrap_or(0);
    let cend = c.last().copied().unwrap_or(0);
    println!(
        "  agent RSS: after warm-up (1 s) {:.1} MiB; steady state {:.1}..{:.1} MiB ({:+.2}%..{:+.2}%); end (draining) {:.1} MiB ({:+.2}%); max {:.1} MiB over {} snapshots {SAMPLE_MS} ms apart; coordinator RSS {:.1} -> {:.1} MiB; {:.2} M jobs/s",
        mib(warm),
        mib(smin),
        mib(smax),
        (smin as f64 / warm.max(1) as f64 - 1.0) * 100.0,
        (smax as f64 / warm.max(1) as f64 - 1.0) * 100.0,
        mib(end),
        (end as f64 / warm.max(1) as f64 - 1.0) * 100.0,
        mib(max),
        s.len(),
        mib(cwarm),
        mib(cend),
        tput / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[545.0, 465.0]), 505.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
