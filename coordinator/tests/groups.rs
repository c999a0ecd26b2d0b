//! Host groups over real agent processes: two kinds of agent (pinned to one
//! CPU with one thread, labelled and pinned to two CPUs with two threads),
//! three of each; one of them frozen (SIGSTOP) for a while to make it slow.
//! The groups' merged counts and p99 must equal those of the union of their
//! hosts' raw job records, the frozen host must be flagged an outlier, and
//! `compare` must match the groups of two runs whose host names differ.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{AgentProc, coordinator_bin, data, output_within, text};
use cwbench_coordinator::result::{HostStatus, RunResult};

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success(), "kill {sig} {pid}");
}

/// Measured completion latencies per host from jobs.jsonl.
fn raw_latencies(log: &std::path::Path, warmup: u64) -> HashMap<String, Vec<u64>> {
    let mut per_host: HashMap<String, Vec<u64>> = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["outcome"] == "completed" && v["id"].as_u64().unwrap() >= warmup {
            let (o, e) = (
                v["origin_us"].as_u64().unwrap(),
                v["end_us"].as_u64().unwrap(),
            );
            per_host
                .entry(v["host"].as_str().unwrap().to_string())
                .or_default()
                .push(e - o);
        }
    }
    per_host
}

#[test]
fn groups_merge_hosts_losslessly_and_flag_the_slow_one() {
    let one: Vec<AgentProc> = (0..3)
        .map(|_| AgentProc::spawn(&["--listen", "127.0.0.1:0", "--threads", "1", "--cpus", "0"]))
        .collect();
    let two: Vec<AgentProc> = (0..3)
        .map(|_| {
            AgentProc::spawn(&[
                "--listen",
                "127.0.0.1:0",
                "--threads",
                "2",
                "--cpus",
                "0-1",
                "--label",
                "pair",
            ])
        })
        .collect();
    let out = tempfile::tempdir().unwrap();
    let scenario = data("groups.toml");
    let mut args: Vec<String> = vec![
        "--scenario".into(),
        scenario.display().to_string(),
        "--out".into(),
        out.path().display().to_string(),
        "--run-id".into(),
        "groups".into(),
        "--job-log".into(),
        "--quiet".into(),
    ];
    for a in one.iter().chain(&two) {
        args.extend(["--agent".into(), a.addr.clone()]);
    }
    let mut coord = Command::new(coordinator_bin());
    coord.args(&args).env_remove("CWBENCH_TOKEN");
    let run = std::thread::spawn(move || output_within(coord, Duration::from_secs(120)));
    // The run takes about 4 s of open loop; freeze one "pair" agent for
    // 800 ms once the measured part is under way (warm-up is 0.3 s).
    std::thread::sleep(Duration::from_millis(1500));
    let slow = two[1].child.id();
    signal(slow, "-STOP");
    std::thread::sleep(Duration::from_millis(800));
    signal(slow, "-CONT");
    let o = run.join().expect("the coordinator ran");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    eprintln!("{}", text(&o.stdout));

    let dir = out.path().join("groups");
    let r: RunResult =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    let doc: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(
        common::schema_errors(&common::schema(), &doc),
        Vec::<String>::new()
    );
    let p = &r.profiles[0];
    assert!(p.hosts.iter().all(|h| h.status == HostStatus::Ok));
    let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["1c/1t", "pair 2c/2t"]);

    let raw = raw_latencies(&dir.join("jobs.jsonl"), r.scenario.run.warmup_jobs);
    for g in &p.groups {
        assert_eq!((g.hosts.len(), g.hosts_ok), (3, 3), "{}", g.name);
        let hosts: Vec<_> = p
            .hosts
            .iter()
            .filter(|h| g.hosts.contains(&h.label))
            .collect();
        let count: u64 = hosts.iter().map(|h| h.latency.completion.count).sum();
        let measured: u64 = hosts.iter().map(|h| h.accounting.measured_completed).sum();
        assert_eq!((g.completion.count, g.completion.count), (count, measured));
        let mut union: Vec<u64> = g.hosts.iter().flat_map(|h| raw[h].clone()).collect();
        union.sort_unstable();
        assert_eq!(union.len() as u64, g.completion.count, "{}", g.name);
        // HdrHistogram (3 digits) reports the top of the value's bucket
        // (+0.1%); raw times are truncated to µs at both ends.
        for (name, exact, hist) in [
            ("p50", pct(&union, 0.50), g.completion.p50),
            ("p99", pct(&union, 0.99), g.completion.p99),
            ("max", *union.last().unwrap(), g.completion.max),
        ] {
            let (lo, hi) = (exact.saturating_sub(2), exact + exact / 1000 + 2);
            assert!(
                (lo..=hi).contains(&hist),
                "group {} {name}: merged {hist} µs, union of raw records {exact} µs",
                g.name
            );
        }
        let mean = hosts.iter().map(|h| h.throughput).sum::<f64>() / 3.0;
        assert!(
            (g.throughput - mean).abs() < 1e-6,
            "replicate: mean per host"
        );
    }
    let frozen = &p.hosts[4];
    let pair = &p.groups[1];
    assert!(
        pair.outliers
            .iter()
            .any(|o| o.host == frozen.label && o.metric == "p99"),
        "the frozen host {} (p99 {} µs) is not flagged; spread {:?}, outliers {:?}",
        frozen.label,
        frozen.latency.completion.p99,
        pair.p99_spread,
        pair.outliers
    );
    // Scaling: cores vary across the two groups, threads and label with
    // them (one dimension, not three that cannot be held apart).
    let dims: Vec<String> = r.scaling.iter().map(|d| d.title()).collect();
    assert_eq!(dims, ["cores (with threads, label)"]);
    let s = &r.scaling[0].series[0];
    let values: Vec<&str> = s.points.iter().map(|p| p.value.as_str()).collect();
    assert_eq!(values, ["1", "2"]);
    let (x0, x1) = (s.points[0].throughput, s.points[1].throughput);
    assert!((s.points[1].speedup - x1 / x0).abs() < 1e-9);
    assert!((s.points[1].efficiency.unwrap() - x1 / x0 / 2.0).abs() < 1e-9);
    assert!(s.usl.is_none(), "two points: no fit");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.find("## Host groups").unwrap() < md.find("per host").unwrap());
    assert!(md.contains("## Outlier hosts"), "{md}");
    assert!(md.contains(&format!("| {} | p99 |", frozen.label)), "{md}");

    compare_matches_groups_of_renamed_hosts(&dir);
}

/// Two runs of a fleet never share host names; their groups still compare
/// and gate.
fn compare_matches_groups_of_renamed_hosts(dir: &std::path::Path) {
    let base = dir.join("result.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    for p in v["profiles"].as_array_mut().unwrap() {
        for h in p["hosts"].as_array_mut().unwrap() {
            let l = h["label"]
                .as_str()
                .unwrap()
                .replace("127.0.0.1", "10.9.9.9");
            h["label"] = l.into();
        }
        for g in p["groups"].as_array_mut().unwrap() {
            let p99 = g["completion"]["p99"].as_u64().unwrap();
            g["completion"]["p99"] = (p99 * 2).into();
        }
    }
    let new = dir.join("renamed.json");
    std::fs::write(&new, serde_json::to_string(&v).unwrap()).unwrap();
    let run = |gate: &str| {
        Command::new(coordinator_bin())
            .args(["compare", base.to_str().unwrap(), new.to_str().unwrap()])
            .args(["--fail-if", gate])
            .output()
            .unwrap()
    };
    let o = run("group:p99>+10%");
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("group 1c/1t") && out.contains("+100.0%"),
        "{out}"
    );
    assert!(
        out.contains("6 host(s) only in BASE, 6 only in NEW"),
        "{out}"
    );
    assert!(text(&o.stderr).contains("gate tripped: group:p99>+10% on group pair 2c/2t"));
    // Throughput did not move.
    let o = run("group:throughput<-5%");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

/// A sweep over threads and workers on one agent: both dimensions get a
/// series per value of the other, the threads series a USL fit (three
/// points), and the report draws them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_gives_scaling_series_and_charts() {
    use cwbench::scenario::{self, Limits};
    use cwbench_coordinator::local::{AgentConfig, LocalAgent};
    use cwbench_coordinator::run::{self, Agents, RunOptions};

    let agent = LocalAgent::spawn(AgentConfig::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sweep.toml");
    std::fs::write(
        &path,
        r#"
name = "sweep"
seed = 5
[run]
warmup_jobs = 200
jobs = 2000
snapshot_interval_ms = 200
[profile]
threads = [1, 2, 3]
workers = [4, 16]
queue_bound = 64
[[class]]
name = "cpu"
work_units = { dist = "uniform", min = 0, max = 20000 }
"#,
    )
    .unwrap();
    let plan = scenario::load(&path, &Limits::default()).unwrap();
    let opts = RunOptions {
        agents: Agents::Remote(vec![agent.addr.to_string()]),
        ..RunOptions::default()
    };
    let r = run::run(plan, opts, None).await.unwrap();
    assert_eq!(r.profiles.len(), 6);
    let doc: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(
        common::schema_errors(&common::schema(), &doc),
        Vec::<String>::new()
    );
    let dims: Vec<String> = r.scaling.iter().map(|d| d.title()).collect();
    assert_eq!(dims, ["threads", "workers"]);
    for d in &r.scaling {
        let threads = d.name == "threads";
        let (series, points) = if threads { (2, 3) } else { (3, 2) };
        assert_eq!(
            d.series.len(),
            series,
            "{}: a series per value of the other",
            d.name
        );
        let other = if threads { "workers" } else { "threads" };
        for s in &d.series {
            assert!(s.fixed.starts_with(&format!("{other}=")), "{}", s.fixed);
            assert_eq!(s.points.len(), points);
            assert_eq!(s.points[0].speedup, 1.0);
            assert_eq!(s.points[0].efficiency.is_some(), threads);
            assert_eq!(s.usl.is_some(), threads, "a fit from 3 threads");
        }
    }
    let html = cwbench_coordinator::html::render(&r);
    // Kept under target/ for a look.
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sweep.html");
    std::fs::write(&keep, &html).unwrap();
    for title in [
        "Throughput against threads",
        "p99 completion latency against workers",
        "Latency by percentile, groups overlaid",
        "Scaling: workers",
        "USL fit [workers=4]: λ = ",
        "3 points for 3 coefficients",
    ] {
        assert!(html.contains(title), "{title}");
    }
    // The fits are drawn dashed beside their points.
    let chart = html
        .split("<svg")
        .find(|c| c.contains("Throughput against threads (dashed: USL fit)"))
        .unwrap();
    assert_eq!(chart.matches("class=\"fit\"").count(), 2);
    // The six profiles' spectra on one chart: one line per profile.
    let chart = html
        .split("<svg")
        .find(|c| c.contains("Latency by percentile, groups overlaid"))
        .unwrap();
    assert_eq!(chart.matches("class=\"series\"").count(), 6);
}
