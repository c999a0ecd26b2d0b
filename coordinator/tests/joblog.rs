//! --job-log: the per-job records agree with the histograms.

use std::collections::HashMap;
use std::path::Path;

use cwbench::scenario::{self, Limits};
use cwbench_coordinator::local::{AgentConfig, LocalAgent};
use cwbench_coordinator::result::HostStatus;
use cwbench_coordinator::run::{self, Agents, RunOptions};

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_the_raw_job_records() {
    let agents: Vec<LocalAgent> = (0..2)
        .map(|_| {
            LocalAgent::spawn(AgentConfig {
                threads: 1,
                ..AgentConfig::default()
            })
            .unwrap()
        })
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smoke.toml");
    let plan = scenario::load(&path, &Limits::default()).unwrap();
    let warmup = plan.scenario.run.warmup_jobs;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("jobs.jsonl");
    let opts = RunOptions {
        agents: Agents::Remote(agents.iter().map(|a| a.addr.to_string()).collect()),
        job_log: Some(log.clone()),
        ..RunOptions::default()
    };
    let r = run::run(plan, opts, None).await.unwrap();

    let mut per_host: HashMap<String, Vec<u64>> = HashMap::new();
    let mut outcomes: HashMap<(String, String), u64> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"], "job_done");
        let host = v["host"].as_str().unwrap().to_string();
        let outcome = v["outcome"].as_str().unwrap().to_string();
        *outcomes.entry((host.clone(), outcome.clone())).or_default() += 1;
        let (o, s, e) = (
            v["origin_us"].as_u64().unwrap(),
            v["start_us"].as_u64().unwrap(),
            v["end_us"].as_u64().unwrap(),
        );
        assert!(o <= s && s <= e, "{line}");
        if outcome == "completed" && v["id"].as_u64().unwrap() >= warmup {
            per_host.entry(host).or_default().push(e - o);
        }
    }
    for h in &r.profiles[0].hosts {
        assert_eq!(h.status, HostStatus::Ok, "{:?}", h.error);
        let mut raw = per_host.remove(&h.label).expect("records for every host");
        raw.sort_unstable();
        let a = &h.accounting;
        assert_eq!(raw.len() as u64, a.measured_completed, "{}", h.label);
        assert_eq!(
            outcomes[&(h.label.clone(), "crashed".to_string())],
            a.crashed,
            "every crash is logged"
        );
        let s = &h.latency.completion;
        // HdrHistogram with 3 significant digits reports the top of the
        // value's bucket (+0.1%); raw times are truncated to µs at both ends
        // (±1 µs each).
        for (name, exact, hist) in [
            ("p50", pct(&raw, 0.50), s.p50),
            ("p95", pct(&raw, 0.95), s.p95),
            ("p99", pct(&raw, 0.99), s.p99),
            ("max", *raw.last().unwrap(), s.max),
        ] {
            let lo = exact.saturating_sub(2);
            let hi = exact + exact / 1000 + 2;
            assert!(
                (lo..=hi).contains(&hist),
                "{} {name}: histogram {hist} µs, raw {exact} µs",
                h.label
            );
        }
    }
}
