//! The BEAM as a runtime, end to end: a real agent process starts an Erlang
//! VM per BEAM profile and the real coordinator reports it beside the tokio
//! rows. Tests that need Erlang print `SKIP:` and pass when `erl` is not
//! installed (`.ci/run` installs it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{AgentProc, agent_bin, coordinator, coordinator_bin, erl_missing, text};

/// Runs `scenario` (under tests/data) on `agent`; returns result.json.
fn run(agent: &AgentProc, scenario: &str, out: &Path) -> serde_json::Value {
    let o = coordinator(&[
        "--agent",
        &agent.addr,
        "--scenario",
        common::data(scenario).to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--run-id",
        "beam",
        "--quiet",
    ]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let json = std::fs::read_to_string(out.join("beam/result.json")).unwrap();
    serde_json::from_str(&json).unwrap()
}

fn balances(a: &serde_json::Value) -> bool {
    let n = |k: &str| a[k].as_u64().unwrap();
    n("sent") == n("completed") + n("crashed") + n("timed_out") + n("shed") + n("cancelled")
        && n("sent") == n("received")
}

#[test]
fn one_agent_runs_the_parity_sweep_on_tokio_and_on_the_beam() {
    if erl_missing("one_agent_runs_the_parity_sweep_on_tokio_and_on_the_beam") {
        return;
    }
    let agent = AgentProc::start();
    let out = tempfile::tempdir().unwrap();
    let result = run(&agent, "beam-parity.toml", out.path());
    let profiles = result["profiles"].as_array().unwrap();
    let labels: Vec<&str> = profiles
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "t1 w16 q64 p1 pool/pool1",
            "t1 w16 q64 p1 pool/inline",
            "beam s1 w16 q64 p1 pool"
        ]
    );
    let hosts: Vec<&serde_json::Value> = profiles.iter().map(|p| &p["hosts"][0]).collect();
    for h in &hosts {
        assert_eq!(h["status"], "ok", "{h}");
        assert_eq!(h["digest_received"], h["digest_sent"]);
        assert_eq!(h["digest_sent"], hosts[0]["digest_sent"]);
        assert!(balances(&h["accounting"]), "{}", h["accounting"]);
        assert_eq!(h["accounting"]["sent"], 3200);
        // The same seeded crashes on both runtimes, nothing shed or lost.
        assert_eq!(
            h["accounting"]["crashed"],
            hosts[0]["accounting"]["crashed"]
        );
        assert_eq!(
            h["accounting"]["completed"],
            hosts[0]["accounting"]["completed"]
        );
        assert!(h["throughput"].as_f64().unwrap() > 0.0);
        assert!(h["latency"]["completion"]["count"].as_u64().unwrap() > 0);
    }
    let beam = hosts[2];
    assert!(beam["accounting"]["restarts"].as_u64().unwrap() > 0);
    assert!(beam["lateness"]["count"].as_u64().unwrap() > 0);
    assert_eq!(beam["threads"], 1, "schedulers = threads");
    assert_eq!(beam["info"]["runtime"], "beam");
    assert_eq!(hosts[0]["info"]["runtime"], "tokio");
    // BEAM rows are ordinary rows of the checked-in schema.
    let errors = common::schema_errors(&common::schema(), &result);
    assert!(errors.is_empty(), "{errors:?}");
    let md = std::fs::read_to_string(out.path().join("beam/report.md")).unwrap();
    assert!(md.contains("beam s1 w16 q64 p1 pool"), "{md}");
}

/// A timed closed loop on both runtimes: each decides at release on its own
/// clock, stops, tells the coordinator, and accounts for every job sent.
#[test]
fn a_timed_closed_loop_runs_on_tokio_and_on_the_beam() {
    if erl_missing("a_timed_closed_loop_runs_on_tokio_and_on_the_beam") {
        return;
    }
    let agent = AgentProc::start();
    let out = tempfile::tempdir().unwrap();
    let result = run(&agent, "beam-timed.toml", out.path());
    let profiles = result["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2);
    for p in profiles {
        let h = &p["hosts"][0];
        assert_eq!(h["status"], "ok", "{h}");
        // Each host ran a prefix of the stream: verified per host.
        assert_eq!(h["digest_received"], h["digest_sent"], "{h}");
        let a = &h["accounting"];
        let n = |k: &str| a[k].as_u64().unwrap();
        assert!(n("unreleased") > 0, "{a}");
        assert!(common::balanced(a), "{a}");
        // The measured window is the duration plus the drain of what was
        // released before the stop.
        let w = h["window_s"].as_f64().unwrap();
        assert!((0.99..2.5).contains(&w), "{}: window {w} s", p["label"]);
        assert!(h["latency"]["completion"]["count"].as_u64().unwrap() > 0);
    }
    assert_eq!(profiles[1]["hosts"][0]["info"]["runtime"], "beam");
}

#[test]
fn crash_storm_on_the_beam_reports_restarts_and_recovery() {
    if erl_missing("crash_storm_on_the_beam_reports_restarts_and_recovery") {
        return;
    }
    let agent = AgentProc::start();
    let out = tempfile::tempdir().unwrap();
    let result = run(&agent, "beam-crash-storm.toml", out.path());
    let h = &result["profiles"][0]["hosts"][0];
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["digest_received"], h["digest_sent"]);
    let a = &h["accounting"];
    assert!(balances(a), "{a}");
    // The 100-job burst alone, plus the seeded, windowed and killed ones.
    assert!(a["crashed"].as_u64().unwrap() > 100, "{a}");
    assert_eq!(a["timed_out"], 1, "the stalled job: {a}");
    assert_eq!(a["restarts"], a["crashed"], "{a}");
    assert!(h["restart_latency"]["count"].as_u64().unwrap() > 0);
    let r = &h["recovery"];
    assert!(r["faults"].as_u64().unwrap() > 0, "{r}");
    assert!(!r["marks"].as_array().unwrap().is_empty(), "{r}");
    assert!(
        r["interval"]["count"].as_u64().unwrap() > 0,
        "no fault recovered: {r}"
    );
}

/// An agent whose PATH holds no Erlang.
fn agent_without_erlang() -> AgentProc {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(agent_bin())
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
        .env_remove("CWBENCH_TOKEN")
        .env("PATH", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.split_whitespace().nth(3).unwrap().to_string();
    AgentProc {
        child,
        addr,
        first_line: line,
    }
}

#[test]
fn no_erlang_on_the_agent_exits_3_with_the_install_hint() {
    let agent = agent_without_erlang();
    let out = tempfile::tempdir().unwrap();
    let o = coordinator(&[
        "--agent",
        &agent.addr,
        "--scenario",
        common::data("beam-parity.toml").to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--quiet",
    ]);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "agent {} cannot run beam (profile beam s1 w16 q64 p1 pool)",
            agent.addr
        )),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install erlang-nox"), "{stderr}");
    // Nothing ran: no result.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Live (not zombie) processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        let Ok(cmd) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(p.join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmd.contains(marker) && !zombie {
            found.push(cmd);
        }
    }
    found
}

fn wait_gone(marker: &str, within: Duration) -> Vec<String> {
    let t = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() || t.elapsed() > within {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the crash-storm run (about 5 s) and waits until its VM runs.
fn start_beam_run(agent: &AgentProc, marker: &str, out: &Path) -> std::process::Child {
    start_run(&[agent], "beam-crash-storm.toml", marker, out)
}

/// Starts `scenario` (tests/data) on `agents` and waits until the VM
/// named by `marker` runs.
fn start_run(
    agents: &[&AgentProc],
    scenario: &str,
    marker: &str,
    out: &Path,
) -> std::process::Child {
    let mut cmd = Command::new(coordinator_bin());
    for a in agents {
        cmd.args(["--agent", &a.addr]);
    }
    let mut child = cmd
        .arg("--scenario")
        .arg(common::data(scenario))
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .env_remove("CWBENCH_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while processes_with(marker).is_empty() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the coordinator ended ({st}) before a BEAM VM started for {marker}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no BEAM VM started for {marker}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child
}

#[test]
fn the_vm_never_outlives_its_run() {
    if erl_missing("the_vm_never_outlives_its_run") || !Path::new("/proc/self/cmdline").exists() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    // The coordinator vanishes mid-run: the agent cancels, the VM goes.
    let agent = AgentProc::start();
    let marker = format!("cwbench-agent={}", agent.child.id());
    let mut coord = start_beam_run(&agent, &marker, out.path());
    coord.kill().unwrap();
    coord.wait().unwrap();
    let left = wait_gone(&marker, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "VM left after the coordinator died: {left:?}"
    );
    // An agent killed mid-run: the VM sees its stdin close and halts.
    let mut agent = AgentProc::start();
    let marker = format!("cwbench-agent={}", agent.child.id());
    let mut coord = start_beam_run(&agent, &marker, out.path());
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let left = wait_gone(&marker, Duration::from_secs(5));
    let _ = coord.kill();
    let _ = coord.wait();
    assert!(left.is_empty(), "VM left after the agent died: {left:?}");
}

/// A WebSocket run's BEAM server goes with its run too: when the
/// coordinator vanishes (its agent cancels) and when the server's agent
/// is killed (the VM's stdin closes).
#[test]
fn the_server_vm_never_outlives_its_run() {
    if erl_missing("the_server_vm_never_outlives_its_run")
        || !Path::new("/proc/self/cmdline").exists()
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    for kill_agent in [false, true] {
        let mut server = AgentProc::spawn(&["--listen", "127.0.0.1:0", "--label", "srv"]);
        let client = AgentProc::start();
        let marker = format!("cwbench-agent={}", server.child.id());
        let mut coord = start_run(&[&client, &server], "ws-beam.toml", &marker, out.path());
        if kill_agent {
            server.child.kill().unwrap();
            server.child.wait().unwrap();
        } else {
            coord.kill().unwrap();
            coord.wait().unwrap();
        }
        let left = wait_gone(&marker, Duration::from_secs(5));
        let _ = coord.kill();
        let _ = coord.wait();
        assert!(
            left.is_empty(),
            "server VM left (agent killed: {kill_agent}): {left:?}"
        );
    }
}
