//! Warm-up and measured part given as durations, over real gRPC: a closed
//! loop is timed by each agent (the coordinator streams until told to stop),
//! an open loop is sized in jobs by the arrival schedule.

mod common;

use cwbench::scenario::{self, Limits, Plan};
use cwbench_coordinator::compare;
use cwbench_coordinator::local::{AgentConfig, LocalAgent};
use cwbench_coordinator::result::{HostResult, HostStatus, RunResult};
use cwbench_coordinator::run::{self, Agents, RunOptions};

fn plan(text: &str) -> Plan {
    scenario::parse(text, "timed.toml", &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn agent() -> LocalAgent {
    LocalAgent::spawn(AgentConfig {
        threads: 2,
        ..AgentConfig::default()
    })
    .unwrap()
}

async fn run_on(agents: &[&LocalAgent], p: Plan) -> RunResult {
    let opts = RunOptions {
        agents: Agents::Remote(agents.iter().map(|a| a.addr.to_string()).collect()),
        ..RunOptions::default()
    };
    run::run(p, opts, None).await.expect("run")
}

/// `RUN` is replaced by the [run] keys under test. 1 ms sleeps on 8
/// workers: a few thousand jobs a second, whatever the build.
const BASE: &str = r#"
name = "timed"
seed = 5
[run]
RUN
snapshot_interval_ms = 100
prefetch_jobs = 2048
[profile]
threads = 2
workers = 8
queue_bound = 64
producers = 2
[[class]]
name = "io"
work_units = { dist = "constant", value = 100 }
sleep_us = { dist = "constant", value = 1000 }
"#;

fn with_run(keys: &str) -> String {
    BASE.replace("RUN", keys)
}

fn check_ok(h: &HostResult) {
    assert_eq!(h.status, HostStatus::Ok, "{}: {:?}", h.label, h.error);
    let a = &h.accounting;
    assert!(a.balances(), "{}: {a:?}", h.label);
    assert_eq!(a.errors(), 0, "{}: {a:?}", h.label);
    assert_eq!(
        h.digest_received.as_deref(),
        Some(h.digest_sent.as_str()),
        "{}: the agent got exactly what was sent",
        h.label
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_warm_up_and_measured_part_by_time() {
    let (a, b) = (agent(), agent());
    let r = run_on(
        &[&a, &b],
        plan(&with_run("warmup_ms = 300\nduration_ms = 1000")),
    )
    .await;
    let p = &r.profiles[0];
    assert_eq!(p.hosts.len(), 2);
    for h in &p.hosts {
        check_ok(h);
        let a = &h.accounting;
        // The coordinator kept streaming until the agent stopped it, so
        // some jobs arrived that were never released.
        assert!(a.unreleased > 0, "{}: {a:?}", h.label);
        assert!(a.measured_completed > 0, "{}: {a:?}", h.label);
        // The measured window is the duration plus the drain of what was
        // queued at its end (64 jobs of 1 ms on 8 workers), never less.
        assert!(
            (0.99..2.5).contains(&h.window_s),
            "{}: measured window {} s for a 1 s duration",
            h.label,
            h.window_s
        );
        // The first 300 ms are warm-up: completed but not measured, about
        // 0.3 of the measured count at a steady rate.
        let warm = a.completed - a.measured_completed;
        let share = warm as f64 / a.measured_completed as f64;
        assert!(
            (0.1..0.9).contains(&share),
            "{}: warm-up share {share} ({a:?})",
            h.label
        );
    }
    let text = cwbench_coordinator::report::markdown(&r);
    assert!(
        text.contains("measured for 1 s after a 300 ms warm-up"),
        "{text}"
    );
    assert!(
        text.contains("each ran a prefix of the one job stream"),
        "{text}"
    );
    check_schema(&r);

    // compare: timed runs differ in digest by design; the scenario
    // definition is what must match.
    let mut other = r.clone();
    other.profiles[0].hosts[0].digest_sent = "0000000000000000".into();
    let c = compare::compare(&r, &other, &[], false).expect("same scenario compares");
    assert!(c.mismatches.is_empty(), "{:?}", c.mismatches);
    other.scenario.classes[0].crash_probability = 0.5;
    let e = compare::compare(&r, &other, &[], false).expect_err("another scenario");
    assert!(
        e.to_string().contains("different scenario definitions"),
        "{e}"
    );
}

/// The result, as written to result.json, matches docs/result.schema.json.
fn check_schema(r: &RunResult) {
    let doc = serde_json::to_value(r).unwrap();
    assert_eq!(
        common::schema_errors(&common::schema(), &doc),
        Vec::<String>::new()
    );
    assert!(doc["sizing"]["measured_jobs"].is_null());
    assert!(doc["profiles"][0]["hosts"][0]["accounting"]["unreleased"].as_u64() > Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_warm_up_then_an_exact_count() {
    let a = agent();
    let r = run_on(&[&a], plan(&with_run("warmup_ms = 200\njobs = 3000"))).await;
    let h = &r.profiles[0].hosts[0];
    check_ok(h);
    assert_eq!(h.accounting.measured_completed, 3000, "{:?}", h.accounting);
    assert!(h.accounting.completed > 3000, "warm-up jobs ran too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_by_count_then_a_duration() {
    let a = agent();
    let r = run_on(
        &[&a],
        plan(&with_run("warmup_jobs = 500\nduration_ms = 500")),
    )
    .await;
    let h = &r.profiles[0].hosts[0];
    check_ok(h);
    let acc = &h.accounting;
    // Warm-up is ids below 500: at most 500 unmeasured completions (a
    // warm-up job a producer held when the run stopped is unreleased).
    assert!(acc.completed - acc.measured_completed <= 500, "{acc:?}");
    assert!(acc.completed - acc.measured_completed >= 400, "{acc:?}");
    assert!((0.49..2.0).contains(&h.window_s), "window {}", h.window_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_durations_send_the_schedule_s_jobs() {
    let (a, b) = (agent(), agent());
    let text = with_run("warmup_ms = 200\nduration_ms = 500").replace(
        "[profile]",
        "[arrival]\nmode = \"open\"\nrate = 2000.0\n\n[profile]",
    );
    let p = plan(&text);
    assert_eq!(
        (p.sizing.warmup_jobs, p.sizing.measured_jobs),
        (400, Some(1000))
    );
    let r = run_on(&[&a, &b], p).await;
    let hosts = &r.profiles[0].hosts;
    for h in hosts {
        check_ok(h);
        assert_eq!(h.accounting.sent, 1400);
        assert_eq!(h.accounting.unreleased, 0);
        assert_eq!(h.accounting.measured_completed, 1000);
    }
    // Sized in jobs: every host ran the identical stream.
    assert_eq!(hosts[0].digest_sent, hosts[1].digest_sent);
}
