//! WebSocket runs end to end: real agent processes in their roles (one
//! server named by label, two clients), real connections; the accounting,
//! the task-set digests and the report's servers table. And the no-flag
//! local mode on the shipped default scenario.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{AgentProc, coordinator_bin, data, output_within, text};
use cwbench_coordinator::result::{HostStatus, RunResult};

fn run_json(dir: &std::path::Path) -> (RunResult, serde_json::Value) {
    let raw = std::fs::read_to_string(dir.join("result.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        common::schema_errors(&common::schema(), &doc),
        Vec::<String>::new()
    );
    (serde_json::from_str(&raw).unwrap(), doc)
}

/// Jobs of the scenario's stream that carry a crash (from `trace`).
fn crashes_in(scenario: &std::path::Path) -> u64 {
    let o = common::coordinator(&["trace", "--scenario", &scenario.display().to_string()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
        .lines()
        .filter(|l| l.contains("\"crash\":true"))
        .count() as u64
}

#[test]
fn a_server_and_two_clients_account_for_every_task() {
    let server = AgentProc::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--label",
        "srv",
    ]);
    let clients: Vec<AgentProc> = (0..2).map(|_| AgentProc::start()).collect();
    let out = tempfile::tempdir().unwrap();
    let scenario = data("ws-small.toml");
    let mut cmd = Command::new(coordinator_bin());
    cmd.args(["--scenario", &scenario.display().to_string()])
        .args([
            "--out",
            &out.path().display().to_string(),
            "--run-id",
            "ws",
            "--quiet",
        ])
        .env_remove("CWBENCH_TOKEN");
    // The server is the last agent named: the label picks it.
    for a in clients.iter().chain([&server]) {
        cmd.args(["--agent", &a.addr]);
    }
    let o = output_within(cmd, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (r, doc) = run_json(&out.path().join("ws"));
    let p = &r.profiles[0];
    assert!(
        p.hosts.iter().all(|h| h.status == HostStatus::Ok),
        "{:?}",
        p.hosts
    );
    let w = p.websocket.as_ref().expect("the servers row");
    assert_eq!(w.server, p.hosts[2].label);
    assert_eq!((w.clients, w.connections), (2, 16));
    assert!(w.url.starts_with("ws://127.0.0.1:"), "{}", w.url);
    // Every job of the stream went out as a task, and the server read
    // exactly those: the digests add up.
    assert_eq!(w.tasks_sent, 3_200);
    assert_eq!(w.tasks_served, 3_200);
    assert_eq!(w.digest_match, Some(true));
    let e = &w.errors;
    assert_eq!(
        (e.connection_lost, e.cancelled, e.refused),
        (0, 0, 0),
        "{e:?}"
    );
    assert_eq!(e.crashed, crashes_in(&scenario));
    let server = &p.hosts[2];
    assert_eq!(server.websocket.as_ref().unwrap().role, "server");
    assert_eq!(server.accounting.received, 3_200);
    assert_eq!(server.accounting.crashed, e.crashed);
    for (i, c) in p.hosts[..2].iter().enumerate() {
        let a = &c.accounting;
        assert!(common::balanced(
            &doc["profiles"][0]["hosts"][i]["accounting"]
        ));
        assert_eq!(a.received, a.completed + a.crashed, "{a:?}");
        assert_eq!(c.websocket.as_ref().unwrap().role, "client");
        assert!(c.websocket.as_ref().unwrap().connect.count >= 8);
    }
    // Clients only in the groups; the round trip merged from both.
    assert_eq!(p.groups.len(), 1);
    assert_eq!(p.groups[0].hosts.len(), 2);
    let measured: u64 = p.hosts[..2]
        .iter()
        .map(|h| h.latency.completion.count)
        .sum();
    assert_eq!(w.round_trip.count, measured);
    assert!(w.server_service.count > 0 && w.server_queue_wait.count > 0);
    assert!(w.client_cpu_us_per_task.is_some() && w.server_cpu_us_per_task.is_some());
    let md = std::fs::read_to_string(out.path().join("ws/report.md")).unwrap();
    assert!(md.find("## WebSocket servers").unwrap() < md.find("## Host groups").unwrap());
    assert!(md.contains("3200 (digest ok)"), "{md}");
}

#[test]
fn a_server_no_agent_is_named_after_is_refused_before_the_run() {
    let a = AgentProc::start();
    let b = AgentProc::start();
    let o = common::coordinator(&[
        "--scenario",
        &data("ws-small.toml").display().to_string(),
        "--agent",
        &a.addr,
        "--agent",
        &b.addr,
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("websocket.server = \"srv\""),
        "{}",
        text(&o.stderr)
    );
}

/// The README's promise for WebSocket runs: no agents, no set-up.
#[test]
fn the_default_websocket_scenario_runs_with_local_agents() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(coordinator_bin());
    cmd.args([
        "--scenario",
        "../scenarios/ws.toml",
        "--run-id",
        "wslocal",
        "--quiet",
    ])
    .args(["--out", &out.path().display().to_string()])
    .env_remove("CWBENCH_TOKEN");
    let o = output_within(cmd, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (r, _) = run_json(&out.path().join("wslocal"));
    let w = r.profiles[0].websocket.as_ref().unwrap();
    assert_eq!(r.profiles[0].hosts.len(), 2);
    assert_eq!(w.digest_match, Some(true), "{w:?}");
    assert_eq!(w.tasks_sent, 22_000);
    // In-process agents share one process: no per-task CPU claimed.
    assert!(w.client_cpu_us_per_task.is_none());
    assert!(
        text(&o.stdout).contains("round trips/s"),
        "{}",
        text(&o.stdout)
    );
}
