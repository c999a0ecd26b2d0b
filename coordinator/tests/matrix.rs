//! The execution matrix over real gRPC: every dispatch and compute placement
//! keeps the accounting; open loop counts stalls; inline CPU starves the
//! scheduler where a dedicated pool does not.

use cwbench::scenario::{self, Limits, Plan};
use cwbench_coordinator::local::{AgentConfig, LocalAgent};
use cwbench_coordinator::result::{HostResult, HostStatus, RunResult};
use cwbench_coordinator::run::{self, Agents, RunOptions};

fn plan(text: &str) -> Plan {
    scenario::parse(text, "test.toml", &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

async fn run_on(agent: &LocalAgent, p: Plan) -> RunResult {
    let opts = RunOptions {
        agents: Agents::Remote(vec![agent.addr.to_string()]),
        ..RunOptions::default()
    };
    run::run(p, opts, None).await.expect("run")
}

fn agent(threads: u32) -> LocalAgent {
    LocalAgent::spawn(AgentConfig {
        threads,
        ..AgentConfig::default()
    })
    .unwrap()
}

fn check_balanced(h: &HostResult, label: &str, total: u64) {
    check(h, label, total);
    assert!(h.accounting.crashed > 0, "{label}: crashes expected");
}

fn check(h: &HostResult, label: &str, total: u64) {
    assert_eq!(h.status, HostStatus::Ok, "{label}: {:?}", h.error);
    let a = &h.accounting;
    assert!(a.balances(), "{label}: {a:?}");
    assert_eq!(a.sent, total, "{label}");
    assert_eq!(
        a.completed + a.crashed + a.timed_out + a.shed,
        total,
        "{label}: {a:?}"
    );
    assert_eq!(
        h.digest_received.as_deref(),
        Some(h.digest_sent.as_str()),
        "{label}"
    );
}

const BASE: &str = r#"
name = "matrix"
seed = 11
[run]
warmup_jobs = 100
jobs = 1500
snapshot_interval_ms = 200
prefetch_jobs = 1024
[profile]
threads = 2
workers = WORKERS
queue_bound = 32
producers = 2
dispatch = DISPATCH
compute = ["inline", "yield", "blocking", "pool"]
yield_every = 500
compute_threads = 2
[[class]]
name = "cpu"
weight = 3
work_units = { dist = "uniform", min = 0, max = 20000 }
crash_probability = 0.01
[[class]]
name = "io"
weight = 1
work_units = { dist = "constant", value = 10 }
sleep_us = { dist = "exponential", mean = 300.0, max = 5000 }
crash_probability = 0.01
"#;

/// BASE with one worker count and dispatch, and inline compute only.
fn inline(workers: &str, dispatch: &str) -> String {
    BASE.replace("WORKERS", workers)
        .replace("DISPATCH", dispatch)
        .replace(
            r#"compute = ["inline", "yield", "blocking", "pool"]"#,
            "compute = \"inline\"",
        )
}

/// Text placed after the [profile] table of BASE.
fn after_profile(text: &str, extra: &str) -> String {
    text.replace(
        "compute_threads = 2\n",
        &format!("compute_threads = 2\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dispatch_and_compute_placement_balances() {
    let a = agent(2);
    for (dispatch, workers) in [
        ("pool", 4),
        ("mailbox", 4),
        ("task-per-job", 1),
        ("serial", 1),
        ("spawn-await", 1),
    ] {
        let text = BASE
            .replace("WORKERS", &workers.to_string())
            .replace("DISPATCH", &format!("\"{dispatch}\""));
        let p = plan(&text);
        let total = p.total_jobs();
        let r = run_on(&a, p).await;
        assert_eq!(r.profiles.len(), 4);
        for pr in &r.profiles {
            let h = &pr.hosts[0];
            check_balanced(h, &pr.label, total);
            assert_eq!(h.classes.len(), 2, "{}: per-class results", pr.label);
            assert!(h.lateness.count > 0, "{}: probe ran", pr.label);
        }
    }
    // A current-thread runtime runs too.
    let text = BASE
        .replace("WORKERS", "4")
        .replace("DISPATCH", "\"pool\"")
        .replace(
            "\nthreads = 2\n",
            "\nthreads = 1\nruntime = \"current-thread\"\n",
        );
    let p = plan(&text);
    let total = p.total_jobs();
    let r = run_on(&a, p).await;
    for pr in &r.profiles {
        check_balanced(&pr.hosts[0], &pr.label, total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_policy_drops_and_counts() {
    let a = agent(1);
    let text = BASE
        .replace("WORKERS", "1")
        .replace("DISPATCH", "\"pool\"")
        .replace(
            "queue_bound = 32",
            "queue_bound = 1\nbackpressure = \"shed\"",
        )
        .replace(
            r#"compute = ["inline", "yield", "blocking", "pool"]"#,
            r#"compute = "inline""#,
        );
    let p = plan(&text);
    let total = p.total_jobs();
    let r = run_on(&a, p).await;
    let h = &r.profiles[0].hosts[0];
    assert!(h.accounting.shed > 0, "{:?}", h.accounting);
    check(h, "shed", total);
}

/// A 200 ms stall on the only worker: in open loop every job behind it is
/// late from its intended start, so completion p99 shows the stall while
/// service time (pick-up to completion) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_counts_a_stall_that_service_time_does_not() {
    let a = agent(2);
    let text = r#"
name = "stall"
seed = 5
[run]
jobs = 2000
snapshot_interval_ms = 200
[arrival]
mode = "open"
rate = 2000.0
[profile]
workers = 1
queue_bound = 4096
[[class]]
name = "quick"
weight = 1999
work_units = { dist = "constant", value = 100 }
[[class]]
name = "stall"
weight = 1
work_units = { dist = "constant", value = 0 }
sleep_ms = { dist = "constant", value = 200 }
"#;
    let p = plan(text);
    // The seeded stream must hold a stall, early enough to matter.
    let mut g = cwbench::generator::Generator::new(&p);
    let stalls: Vec<u64> = (0..2000)
        .map(|_| g.next_job())
        .filter(|j| j.class == 1)
        .map(|j| j.id)
        .collect();
    assert!(
        !stalls.is_empty() && stalls[0] < 1600,
        "seed 5 stalls: {stalls:?}"
    );
    let r = run_on(&a, p).await;
    let h = &r.profiles[0].hosts[0];
    assert_eq!(h.status, HostStatus::Ok, "{:?}", h.error);
    let c = &h.latency.completion;
    let s = &h.latency.service;
    assert!(c.p99 >= 100_000, "completion p99 {} µs", c.p99);
    assert!(
        s.p99 * 10 < c.p99,
        "service p99 {} µs vs completion {}",
        s.p99,
        c.p99
    );
    assert!(s.max >= 200_000, "the stall itself is in service max");
}

/// The seed question: long CPU steps inline on the async workers starve the
/// scheduler (the lateness probe wakes late); the same jobs on a dedicated
/// compute pool leave it on time. Asserted as an order of magnitude.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_compute_starves_the_probe_and_a_pool_does_not() {
    let a = agent(1);
    let text = r#"
name = "starve"
seed = 3
[run]
jobs = 60
snapshot_interval_ms = 200
[profile]
threads = 1
workers = 4
queue_bound = 8
compute = ["inline", "pool"]
compute_threads = 1
[[class]]
name = "cpu"
work_units = { dist = "constant", value = 6000000 }
"#;
    let r = run_on(&a, plan(text)).await;
    let inline = &r.profiles[0].hosts[0];
    let pool = &r.profiles[1].hosts[0];
    assert!(r.profiles[0].label.contains("inline") && r.profiles[1].label.contains("pool"));
    eprintln!(
        "lateness: inline {:?}\npool {:?}\nwindows {} {}",
        inline.lateness, pool.lateness, inline.window_s, pool.window_s
    );
    for h in [inline, pool] {
        assert_eq!(h.status, HostStatus::Ok, "{:?}", h.error);
        assert!(h.lateness.count > 0);
    }
    assert!(
        inline.lateness.p99 >= 10 * pool.lateness.p99.max(1),
        "inline p99 {} µs, pool p99 {} µs",
        inline.lateness.p99,
        pool.lateness.p99
    );
}

/// Crash bursts and a stall under a job timeout: accounting balances by
/// kind, and recovery figures are measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_storm_balances_and_measures_recovery() {
    let a = agent(2);
    let text = r#"
name = "storm"
seed = 9
[run]
jobs = 7000
job_timeout_ms = 100
snapshot_interval_ms = 200
[arrival]
mode = "open"
rate = 2000.0
[profile]
workers = 16
queue_bound = 256
[recovery]
window_ms = 50
baseline_ms = 500
[[class]]
name = "mixed"
work_units = { dist = "uniform", min = 0, max = 2000 }
sleep_us = { dist = "uniform", min = 0, max = 2000 }
crash_probability = 0.001
[[fault]]
kind = "crash-burst"
at_job = 3000
jobs = 150
[[fault]]
kind = "stall"
at_job = 5000
stall_ms = 400
"#;
    let p = plan(text);
    let total = p.total_jobs();
    let r = run_on(&a, p).await;
    let h = &r.profiles[0].hosts[0];
    check_balanced(h, "storm", total);
    let acc = &h.accounting;
    assert!(acc.crashed >= 150, "{acc:?}");
    assert_eq!(acc.timed_out, 1, "the stalled job is caught by the timeout");
    assert_eq!(acc.restarts, acc.crashed);
    let rv = &h.recovery;
    assert!(rv.faults >= 1 && !rv.marks.is_empty(), "{rv:?}");
    assert!(rv.interval.count >= 1, "{rv:?}");
    // The burst (150 jobs at 2000/s = 75 ms without completions) takes at
    // least one window to recover from.
    let burst = rv
        .marks
        .iter()
        .find(|m| (1.4..1.6).contains(&m.t_s))
        .unwrap_or_else(|| panic!("burst near 1.5 s: {rv:?}"));
    assert!(burst.recovery_ms.is_some_and(|ms| ms >= 50.0), "{burst:?}");
    assert!(h.restart_latency.count > 0);
}

/// Restart with backoff: no replacement picks up a job sooner than the
/// first backoff after its predecessor crashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_backoff_delays_restarts() {
    let a = agent(2);
    let text = after_profile(
        &inline("8", "\"pool\""),
        "[supervisor]\nbackoff_ms = 20\nmax_backoff_ms = 80\n",
    );
    let p = plan(&text);
    let total = p.total_jobs();
    let r = run_on(&a, p).await;
    let h = &r.profiles[0].hosts[0];
    check_balanced(h, "backoff", total);
    assert!(h.restart_latency.count > 0);
    assert!(
        h.restart_latency.min >= 19_900,
        "restart latency {:?} below the 20 ms backoff",
        h.restart_latency
    );
}

#[test]
fn report_md_has_the_recovery_section_when_faults_happened() {
    // A result with one fault event renders the section; none, no section.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = agent(2);
    let text = inline("4", "\"pool\"");
    let r = rt.block_on(run_on(&a, plan(&text)));
    let md = cwbench_coordinator::report::markdown(&r);
    assert!(r.profiles[0].hosts[0].recovery.faults > 0);
    assert!(md.contains("## Faults and recovery"), "{md}");
    let quiet = text.replace("crash_probability = 0.01", "crash_probability = 0.0");
    let r = rt.block_on(run_on(&a, plan(&quiet)));
    let md = cwbench_coordinator::report::markdown(&r);
    assert!(!md.contains("## Faults and recovery"));
}

/// The intensity limit: more crashes within the window than max_restarts
/// and the supervisor gives up; the host fails with the reason, and the
/// agent takes the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_gives_up_past_the_intensity_limit() {
    let a = agent(2);
    let text = after_profile(
        &inline("4", "\"pool\"").replace("crash_probability = 0.01", "crash_probability = 0.2"),
        "[supervisor]\nmax_restarts = 3\nrestart_window_ms = 60000\n",
    );
    let r = run_on(&a, plan(&text)).await;
    let h = &r.profiles[0].hosts[0];
    assert_eq!(h.status, HostStatus::Failed);
    let e = h.error.as_deref().unwrap_or("");
    assert!(
        e.contains("supervisor gave up") && e.contains("max_restarts = 3"),
        "{e}"
    );
    // The agent is free again: the same plan without crashes runs.
    let calm = text.replace("crash_probability = 0.2", "crash_probability = 0.0");
    let r = run_on(&a, plan(&calm)).await;
    assert_eq!(r.profiles[0].hosts[0].status, HostStatus::Ok);
}

/// kill-worker: the worker holding a given job is aborted from outside;
/// the job counts as crashed and the supervisor restarts the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_are_restarted_and_their_jobs_counted() {
    let a = agent(2);
    let text = inline("4", "[\"pool\", \"mailbox\"]")
        .replace("crash_probability = 0.01", "crash_probability = 0.0")
        + "\n[[fault]]\nkind = \"kill-worker\"\nat_job = 300\n\n[[fault]]\nkind = \"kill-worker\"\nat_job = 800\n";
    let p = plan(&text);
    let total = p.total_jobs();
    let r = run_on(&a, p).await;
    for pr in &r.profiles {
        let h = &pr.hosts[0];
        check(h, &pr.label, total);
        assert_eq!(h.accounting.crashed, 2, "{}", pr.label);
        assert_eq!(h.accounting.restarts, 2, "{}", pr.label);
        assert_eq!(h.restart_latency.count, 2, "{}", pr.label);
    }
    // Without a worker pool there is nothing to kill.
    let serial = text
        .replace("workers = 4", "workers = 1")
        .replace("[\"pool\", \"mailbox\"]", "\"serial\"");
    let e = scenario::parse(&serial, "t.toml", &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fault[0].kind") && e.contains("needs a worker pool"),
        "{e}"
    );
}
