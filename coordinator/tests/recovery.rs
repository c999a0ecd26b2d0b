//! The recovery interval on faults of known size, over real gRPC with an
//! in-process agent: every worker crashed at once and restarted after a
//! 300 ms supervisor backoff must read about 300 ms; one crash among 64
//! workers restarted at once must read "no measurable dip", not a window.

use cwbench::scenario::{self, Limits};
use cwbench_coordinator::local::{AgentConfig, LocalAgent};
use cwbench_coordinator::result::{HostStatus, RecoveryResult};
use cwbench_coordinator::run::{self, Agents, RunOptions};

/// Jobs of a 2 ms sleep, in `arrival` (a TOML table: a closed loop has no
/// backlog to catch up after a fault, so its rate is back the moment the
/// workers are, even on a loaded machine); `jobs` consecutive crashes at
/// job 6,000 among `workers`, each restarted after `backoff_ms`.
async fn recovery_of(arrival: &str, workers: u32, jobs: u32, backoff_ms: u32) -> RecoveryResult {
    let agent = LocalAgent::spawn(AgentConfig::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fault.toml");
    std::fs::write(
        &path,
        format!(
            r#"
name = "known-fault"
seed = 9
[run]
warmup_jobs = 1000
jobs = 9000
{arrival}
[profile]
workers = {workers}
queue_bound = 256
[supervisor]
backoff_ms = {backoff_ms}
max_backoff_ms = {backoff_ms}
[[class]]
name = "io"
work_units = {{ dist = "constant", value = 100 }}
sleep_ms = {{ dist = "constant", value = 2 }}
[[fault]]
kind = "crash-burst"
at_job = 6000
jobs = {jobs}
"#
        ),
    )
    .unwrap();
    let plan = scenario::load(&path, &Limits::default()).unwrap();
    let opts = RunOptions {
        agents: Agents::Remote(vec![agent.addr.to_string()]),
        ..RunOptions::default()
    };
    let r = run::run(plan, opts, None).await.unwrap();
    let h = &r.profiles[0].hosts[0];
    assert_eq!(h.status, HostStatus::Ok, "{:?}", h.error);
    eprintln!("{:?}", h.recovery);
    h.recovery.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_stalled_300_ms_reads_about_300_ms() {
    let rv = recovery_of("", 8, 8, 300).await;
    assert_eq!((rv.faults, rv.interval.count, rv.no_dip), (1, 1, 0));
    let ms = rv.interval.max as f64 / 1000.0;
    assert!((270.0..=330.0).contains(&ms), "read {ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_crash_among_64_workers_is_no_measurable_dip() {
    // Open loop at 2,000 jobs/s: a steady rate over 5 s.
    let rv = recovery_of("[arrival]\nmode = \"open\"\nrate = 2000.0", 64, 1, 0).await;
    assert_eq!((rv.faults, rv.no_dip, rv.interval.count), (1, 1, 0));
    assert_eq!(rv.marks[0].recovery_ms, Some(0.0));
}
