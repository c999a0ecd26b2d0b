//! WebSocket runs end to end: real agent processes in their roles (one
//! server named by label, two clients), real connections; the accounting,
//! the task-set digests and the report's servers table. And the no-flag
//! local mode on the shipped default scenario.

mod common;

use std::process::{Command, Output};
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

/// Runs the coordinator on `scenario` with `flags`, quietly, writing its
/// run to `dir` (its parent the --out, its name the --run-id), within
/// `secs` seconds.
fn run(scenario: &std::path::Path, flags: &[&str], dir: &std::path::Path, secs: u64) -> Output {
    let mut cmd = Command::new(coordinator_bin());
    cmd.arg("--scenario")
        .arg(scenario)
        .args(flags)
        .arg("--out")
        .arg(dir.parent().unwrap())
        .arg("--run-id")
        .arg(dir.file_name().unwrap())
        .arg("--quiet")
        .env_remove("CWBENCH_TOKEN");
    output_within(cmd, Duration::from_secs(secs))
}

/// `--agent ADDR` for each agent, in order.
fn agent_flags<'a>(agents: impl Iterator<Item = &'a AgentProc>) -> Vec<&'a str> {
    agents.flat_map(|a| ["--agent", a.addr.as_str()]).collect()
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
    // The server is the last agent named: the label picks it.
    let agents = agent_flags(clients.iter().chain([&server]));
    let o = run(&scenario, &agents, &out.path().join("ws"), 120);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (r, doc) = run_json(&out.path().join("ws"));
    assert_eq!(r.profiles.len(), 2, "profile.connections = [4, 8]");
    for (k, per) in [(0usize, 4u64), (1, 8)] {
        check_profile(&r, &doc, k, per, crashes_in(&scenario));
    }
    // The sweep is a scaling dimension of the clients' groups.
    let dims: Vec<String> = r.scaling.iter().map(|d| d.name.clone()).collect();
    assert!(dims.contains(&"connections".to_string()), "{dims:?}");
    let md = std::fs::read_to_string(out.path().join("ws/report.md")).unwrap();
    assert!(md.find("## WebSocket servers").unwrap() < md.find("## Host groups").unwrap());
    assert!(md.contains("3200 (digest ok)"), "{md}");
}

/// Profile `k` of the two-client run: `per` connections a client, every
/// task accounted for on both ends.
fn check_profile(r: &RunResult, doc: &serde_json::Value, k: usize, per: u64, crashes: u64) {
    let p = &r.profiles[k];
    assert!(
        p.hosts.iter().all(|h| h.status == HostStatus::Ok),
        "{:?}",
        p.hosts
    );
    let w = p.websocket.as_ref().expect("the servers row");
    assert_eq!(w.server, p.hosts[2].label);
    assert_eq!((w.clients, w.connections), (2, 2 * per));
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
    assert_eq!(e.crashed, crashes);
    let server = &p.hosts[2];
    assert_eq!(server.websocket.as_ref().unwrap().role, "server");
    assert_eq!(server.accounting.received, 3_200);
    assert_eq!(server.accounting.crashed, e.crashed);
    for (i, c) in p.hosts[..2].iter().enumerate() {
        let a = &c.accounting;
        assert!(common::balanced(
            &doc["profiles"][k]["hosts"][i]["accounting"]
        ));
        assert_eq!(a.received, a.completed + a.crashed, "{a:?}");
        let cw = c.websocket.as_ref().unwrap();
        assert_eq!((cw.role.as_str(), cw.peak_connections), ("client", per));
        assert!(cw.connect.count >= per);
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
}

/// The BEAM as the server (agents as their own processes, so the server's
/// figures are its own): every task accounted for on both ends, the
/// digests add up, and the servers row carries the VM's connections, CPU
/// per task and memory per connection.
#[test]
fn a_beam_server_and_two_clients_account_for_every_task() {
    if common::erl_missing("a_beam_server_and_two_clients_account_for_every_task") {
        return;
    }
    let server = AgentProc::spawn(&["--listen", "127.0.0.1:0", "--label", "srv"]);
    let clients: Vec<AgentProc> = (0..2).map(|_| AgentProc::start()).collect();
    let out = tempfile::tempdir().unwrap();
    let scenario = data("ws-beam.toml");
    let agents = agent_flags(clients.iter().chain([&server]));
    let o = run(&scenario, &agents, &out.path().join("beam"), 120);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (r, doc) = run_json(&out.path().join("beam"));
    let p = &r.profiles[0];
    assert_eq!(p.label, "beam s1 task-per-job");
    let w = p.websocket.as_ref().expect("the servers row");
    assert_eq!(w.server, p.hosts[2].label);
    assert_eq!((w.clients, w.connections), (2, 32));
    assert_eq!((w.tasks_sent, w.tasks_served), (3_200, 3_200));
    assert_eq!(w.digest_match, Some(true));
    let e = &w.errors;
    assert_eq!(
        (e.connection_lost, e.cancelled, e.refused),
        (0, 0, 0),
        "{e:?}"
    );
    assert_eq!(e.crashed, crashes_in(&scenario));
    let srv = &p.hosts[2];
    assert_eq!(srv.info.runtime, "beam");
    let sw = srv.websocket.as_ref().unwrap();
    assert_eq!((sw.role.as_str(), sw.peak_connections), ("server", 32));
    assert!(common::balanced(
        &doc["profiles"][0]["hosts"][2]["accounting"]
    ));
    assert_eq!(
        (srv.accounting.received, srv.accounting.crashed),
        (3_200, e.crashed)
    );
    // The VM's processes and scheduler utilisation reach the intervals.
    assert!(
        srv.intervals.iter().any(|i| i.alive_tasks > 32),
        "{:?}",
        srv.intervals
    );
    assert!(srv.intervals.iter().any(|i| i.runtime_busy_cores > 0.0));
    assert!(w.server_service.count > 0 && w.server_queue_wait.count > 0);
    let cpu = w.server_cpu_us_per_task.expect("server CPU per task");
    assert!(cpu > 0.0, "{cpu}");
    assert!(
        w.server_bytes_per_connection.is_some(),
        "{:?}",
        srv.intervals
    );
    let md = std::fs::read_to_string(out.path().join("beam/report.md")).unwrap();
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
    let scenario = std::path::Path::new("../scenarios/ws.toml");
    let o = run(scenario, &[], &out.path().join("wslocal"), 120);
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

/// The Python server of tests/ws_python (written from docs/websocket.md
/// alone), listening; None (and SKIP on stderr) without python3 and the
/// `websockets` package, which CI installs.
fn python_server() -> Option<(PyServer, u16)> {
    python_server_with(&[])
}

/// The Python server's process, killed when dropped (a failed assertion
/// must not leave it holding the test's output open).
struct PyServer(std::process::Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python server with extra arguments after the port (a certificate
/// and key: wss://).
fn python_server_with(extra: &[&str]) -> Option<(PyServer, u16)> {
    use std::io::{BufRead, BufReader};
    let probe = Command::new("python3")
        .args(["-c", "import websockets"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: python3 with the websockets package (pip install websockets) is not here");
        return None;
    }
    let mut child = Command::new("python3")
        .arg("../tests/ws_python/server.py")
        .args(if extra.is_empty() {
            &[][..]
        } else {
            &["0"][..]
        })
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    Some((PyServer(child), port))
}

/// `--target`: a server in another language, from the protocol document
/// alone, loaded by two local clients; every task answered, crashes as the
/// trace says, and no server-side figures claimed.
#[test]
fn a_server_cwbench_did_not_start_is_loaded_by_url() {
    let Some((server, port)) = python_server() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let scenario = data("ws-target.toml");
    let url = format!("ws://127.0.0.1:{port}/");
    let o = target_run(&url, &[], &out.path().join("ext"));
    drop(server);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (r, _) = run_json(&out.path().join("ext"));
    let p = &r.profiles[0];
    let w = p.websocket.as_ref().unwrap();
    assert_eq!(
        (w.url.as_str(), w.server.as_str()),
        (url.as_str(), url.as_str())
    );
    assert_eq!(p.hosts.len(), 2, "both local agents are clients");
    assert_eq!(w.tasks_sent, 2_100);
    assert_eq!((w.digest_match, w.tasks_served), (None, 0));
    assert_eq!(w.errors.crashed, crashes_in(&scenario));
    assert_eq!(
        w.errors.connection_lost + w.errors.cancelled,
        0,
        "{:?}",
        w.errors
    );
    let answered: u64 = p
        .hosts
        .iter()
        .map(|h| h.accounting.completed + h.accounting.crashed)
        .sum();
    assert_eq!(answered, 2_100);
    assert_eq!(w.server_service.count, 0, "no server-side figures");
    let md = std::fs::read_to_string(out.path().join("ext/report.md")).unwrap();
    assert!(md.contains("2100 (not our server: no digest)"), "{md}");
}

/// Runs ws-target.toml against `url` with these extra flags, writing
/// into `dir`.
fn target_run(url: &str, extra: &[&str], dir: &std::path::Path) -> std::process::Output {
    let flags: Vec<&str> = ["--target", url]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    run(&data("ws-target.toml"), &flags, dir, 120)
}

/// `--target wss://...`: the agents trust the CA the coordinator gives
/// them (`--target-ca`) and load a TLS server; without it the server's
/// certificate is refused and no connection opens.
#[test]
fn a_wss_server_is_loaded_with_the_ca_given() {
    let dir = tempfile::tempdir().unwrap();
    common::make_certs(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let Some((server, port)) = python_server_with(&[cert.to_str().unwrap(), key.to_str().unwrap()])
    else {
        return;
    };
    let url = format!("wss://127.0.0.1:{port}/");
    let ca = dir.path().join("ca.pem");
    let (trusted, untrusted) = (dir.path().join("ca"), dir.path().join("none"));
    let o = target_run(&url, &["--target-ca", ca.to_str().unwrap()], &trusted);
    let bad = target_run(&url, &[], &untrusted);
    drop(server);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (r, _) = run_json(&trusted);
    let w = r.profiles[0].websocket.as_ref().unwrap();
    assert_eq!((w.url.as_str(), w.tasks_sent), (url.as_str(), 2_100));
    let e = &w.errors;
    assert_eq!(
        (e.connection_lost, e.cancelled, e.connect_failed),
        (0, 0, 0),
        "{e:?}"
    );
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        text(&bad.stderr)
    );
    let (r, _) = run_json(&untrusted);
    let e = &r.profiles[0].websocket.as_ref().unwrap().errors;
    assert!(e.connect_failed > 0, "{e:?}");
}

#[test]
fn a_target_that_is_not_a_ws_url_is_refused() {
    let pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pem.path(), "not a certificate").unwrap();
    let pem = pem.path().to_str().unwrap();
    for (args, why) in [
        (
            &["--target", "http://x:1/"][..],
            "must be a ws://HOST:PORT/PATH or wss://HOST:PORT/PATH URL",
        ),
        (&["--target", "ws:///"][..], "names no host"),
        (&["--target", "wss://"][..], "names no host"),
        (
            &["--target", "ws://x:1/", "--target-ca", pem][..],
            "--target-ca is for a wss:// server",
        ),
        (
            &["--target", "wss://x:1/", "--target-ca", pem][..],
            "--target-ca",
        ),
        (
            &[
                "--target",
                "wss://x:1/",
                "--target-ca",
                "/nonexistent/ca.pem",
            ][..],
            "cannot read",
        ),
    ] {
        let mut args = args.to_vec();
        args.push("--quiet");
        let o = common::coordinator(&args);
        let url = args.join(" ");
        assert_eq!(o.status.code(), Some(2), "{url}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(why), "{url}: {}", text(&o.stderr));
    }
}

/// (BEAM) The shipped tokio-vs-BEAM scenarios run as a user runs them (no
/// agents named: local agents, the BEAM server a VM of its own): every
/// server configuration is a row with its digests agreeing, and each
/// client reports its per-class round trips (the flood's light tasks on
/// tokio inline, spawn_blocking, pool and the BEAM).
#[test]
fn the_tokio_vs_beam_scenarios_run_from_the_repository() {
    if common::erl_missing("the_tokio_vs_beam_scenarios_run_from_the_repository") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    for (file, labels) in [
        (
            "ws-tokio-vs-beam-flood.toml",
            &["inline", "beam", "blocking", "pool1"][..],
        ),
        (
            "ws-tokio-vs-beam.toml",
            &[
                "spawn-await/inline",
                "spawn-await/blocking",
                "serial/inline",
                "serial/blocking",
                "task-per-job/inline",
                "beam",
                "task-per-job/blocking",
            ][..],
        ),
    ] {
        let scenario = std::path::Path::new("../scenarios").join(file);
        let id = file.trim_end_matches(".toml");
        let o = run(&scenario, &[], &out.path().join(id), 300);
        assert_eq!(o.status.code(), Some(0), "{file}: {}", text(&o.stderr));
        let (r, _) = run_json(&out.path().join(id));
        assert_eq!(r.profiles.len(), labels.len(), "{file}");
        for (p, want) in r.profiles.iter().zip(labels) {
            assert!(p.label.contains(want), "{file}: {} is not {want}", p.label);
            let w = p.websocket.as_ref().unwrap();
            assert_eq!(w.digest_match, Some(true), "{file} {}: {:?}", p.label, w);
            let client = p.hosts.iter().find(|h| h.label != w.server).unwrap();
            let names: Vec<&str> = client.classes.iter().map(|c| c.class.as_str()).collect();
            let counted: u64 = client
                .classes
                .iter()
                .map(|c| c.latency.completion.count)
                .sum();
            assert!(
                counted > 0 && !names.is_empty(),
                "{file} {}: {names:?}",
                p.label
            );
        }
    }
}
