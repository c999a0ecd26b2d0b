//! End to end: the real `agent` binary started twice as processes on loopback
//! ports, the real `coordinator` binary run against both. This is the
//! single-host loopback test CI gates on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

use common::{AgentProc, agent_bin, coordinator, coordinator_bin, coordinator_env, text};

fn smoke() -> PathBuf {
    common::data("smoke.toml")
}

/// Runs the smoke scenario on `agent` as run `id` under `out` (exit 0
/// required); returns its one host's result.
fn smoke_host(agent: &AgentProc, out: &Path, id: &str) -> serde_json::Value {
    let o = coordinator(&[
        "--agent",
        &agent.addr,
        "--scenario",
        smoke().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--run-id",
        id,
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(id).join("result.json")).unwrap())
            .unwrap();
    r["profiles"][0]["hosts"][0].clone()
}

/// Starts an agent with these flags plus `--threads 1`.
fn agent_with(args: &[&str]) -> AgentProc {
    let mut all = args.to_vec();
    all.extend(["--threads", "1"]);
    AgentProc::spawn(&all)
}

#[test]
fn two_agent_processes_one_coordinator_process() {
    let (a, b) = (AgentProc::start(), AgentProc::start());
    let out = tempfile::tempdir().unwrap();
    let o = coordinator(&[
        "--agent",
        &a.addr,
        "--agent",
        &b.addr,
        "--scenario",
        smoke().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--run-id",
        "e2e",
        "--job-log",
        "--quiet",
    ]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("jobs/s") && stdout.contains("p99.9"),
        "{stdout}"
    );

    let dir = out.path().join("e2e");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["schema_version"], 1);
    let hosts = result["profiles"][0]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    let addrs: Vec<&str> = hosts.iter().map(|h| h["addr"].as_str().unwrap()).collect();
    assert!(addrs.contains(&a.addr.as_str()) && addrs.contains(&b.addr.as_str()));
    for h in hosts {
        assert_eq!(h["status"], "ok");
        assert_eq!(h["digest_received"], h["digest_sent"]);
    }
    assert_eq!(hosts[0]["digest_sent"], hosts[1]["digest_sent"]);
    // Same seeded stream, nothing shed or cancelled: identical counts.
    assert_eq!(hosts[0]["accounting"], hosts[1]["accounting"]);
    assert_eq!(hosts[0]["accounting"]["sent"], 6500);

    // --job-log: a line per completed or crashed job on both hosts.
    let jobs = std::fs::read_to_string(dir.join("jobs.jsonl")).unwrap();
    let want: u64 = hosts
        .iter()
        .map(|h| {
            h["accounting"]["completed"].as_u64().unwrap()
                + h["accounting"]["crashed"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(jobs.lines().count() as u64, want);

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| host | profile | cores | threads |"), "{md}");
    for h in hosts {
        assert!(md.contains(h["label"].as_str().unwrap()));
    }
}

#[test]
fn bad_scenario_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text_in = std::fs::read_to_string(smoke())
        .unwrap()
        .replace("queue_bound = 64", "queue_bound = 0");
    std::fs::write(&bad, text_in).unwrap();
    let o = coordinator(&["--scenario", bad.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("bad.toml: profile.queue_bound = 0: must be in 1..=1048576"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let o = coordinator(&["--scenario", "/nonexistent/x.toml", "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    let o = coordinator(&["--agent", "no-port-here", "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--agent \"no-port-here\""));
    let o = coordinator(&["--bogus-flag"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unreachable_agent_exits_3_naming_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let o = coordinator(&[
        "--agent",
        &addr,
        "--out",
        dir.path().to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("cannot reach agent {addr}")), "{err}");
}

const TOKEN: &str = "e2e-7f3c9a1d5b2e8f40";

#[test]
fn token_missing_or_wrong_exits_3_and_right_token_runs() {
    let a = agent_with(&["--listen", "127.0.0.1:0", "--token", TOKEN]);
    let out = tempfile::tempdir().unwrap();
    let scenario = smoke();
    let base = [
        "--agent",
        &a.addr,
        "--scenario",
        scenario.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--quiet",
    ];

    let o = coordinator(&base);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "agent {} refused us: the token was missing",
            a.addr
        )),
        "{err}"
    );

    let mut wrong = base.to_vec();
    wrong.extend(["--token", "not-the-token"]);
    let o = coordinator(&wrong);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "agent {} refused us: the token was rejected",
            a.addr
        )),
        "{err}"
    );
    assert!(
        !err.contains(TOKEN) && !err.contains("not-the-token"),
        "{err}"
    );

    // The right token, from the environment as the runbook does it.
    let mut ok = base.to_vec();
    ok.extend(["--run-id", "auth"]);
    let o = coordinator_env(&ok, Some(TOKEN));
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("auth/result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(result["profiles"][0]["hosts"][0]["status"], "ok");
}

#[test]
fn agent_refuses_a_public_address_without_token_unless_insecure() {
    let o = Command::new(agent_bin())
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("CWBENCH_TOKEN")
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("agent: refusing to listen on 0.0.0.0:0 with neither a token nor TLS"),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    let a = agent_with(&["--listen", "0.0.0.0:0", "--insecure"]);
    assert!(a.addr.starts_with("0.0.0.0:"), "{}", a.addr);
    let b = agent_with(&["--listen", "0.0.0.0:0", "--token", TOKEN]);
    assert!(b.addr.starts_with("0.0.0.0:"), "{}", b.addr);
}

#[test]
fn agents_file_errors_name_the_line_and_unresolvable_dns_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("agents.txt");
    std::fs::write(
        &f,
        "# lab\n127.0.0.1:7070 # one core\n\nhost-without-port\n",
    )
    .unwrap();
    let o = coordinator(&["--agents-file", f.to_str().unwrap(), "--quiet"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:4: \"host-without-port\"", f.display())),
        "{err}"
    );

    let o = coordinator(&["--agents", "dns:no-such-host.invalid:7070", "--quiet"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot resolve no-such-host.invalid"), "{err}");

    let o = coordinator(&["--agents", "no-such-host:7070", "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn agents_from_file_and_dns_are_combined() {
    use std::net::ToSocketAddrs;
    // `dns:localhost:PORT` must name exactly the one agent listening on
    // 127.0.0.1 (where localhost also resolves to ::1, this would be two).
    let resolved: Vec<_> = ("localhost", 1).to_socket_addrs().unwrap().collect();
    if resolved
        .iter()
        .any(|a| a.ip() != std::net::Ipv4Addr::LOCALHOST)
    {
        eprintln!("SKIP: localhost resolves to {resolved:?}, not only 127.0.0.1");
        return;
    }
    let a = AgentProc::start();
    let b = AgentProc::start();
    let port_b = b.addr.rsplit_once(':').unwrap().1;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("agents.txt");
    std::fs::write(&f, format!("# first agent\n{}\n", a.addr)).unwrap();
    let o = coordinator(&[
        "--agents-file",
        f.to_str().unwrap(),
        "--agents",
        &format!("dns:localhost:{port_b}"),
        "--scenario",
        smoke().to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
        "--run-id",
        "disc",
        "--quiet",
    ]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("disc/result.json")).unwrap(),
    )
    .unwrap();
    let hosts = result["profiles"][0]["hosts"].as_array().unwrap();
    let addrs: Vec<&str> = hosts.iter().map(|h| h["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, [a.addr.as_str(), b.addr.as_str()]);
}

#[test]
fn help_matches_the_snapshot() {
    for (bin, file) in [
        (coordinator_bin(), "coordinator-help.txt"),
        (agent_bin(), "agent-help.txt"),
    ] {
        let o = Command::new(bin).arg("--help").output().unwrap();
        assert!(o.status.success());
        let got = text(&o.stdout);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(file);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            got, want,
            "--help changed; rerun with UPDATE_SNAPSHOTS=1 and review the diff of {file}"
        );
    }
}

#[test]
fn agent_pinned_to_a_cpu_set_reports_it_and_bad_sets_exit_2() {
    let o = Command::new(agent_bin())
        .args(["--listen", "127.0.0.1:0", "--cpus", "3-1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--cpus \"3-1\""),
        "{}",
        text(&o.stderr)
    );
    let o = Command::new(agent_bin())
        .args(["--listen", "127.0.0.1:0", "--cpus", "1000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "a CPU the machine lacks");

    // Pinned to CPU 0: the run reports one core and the set.
    let agent = AgentProc::spawn(&["--listen", "127.0.0.1:0", "--cpus", "0"]);
    assert!(
        agent.first_line.contains("(threads 1)"),
        "{}",
        agent.first_line
    );
    let out = tempfile::tempdir().unwrap();
    let h = smoke_host(&agent, out.path(), "pinned");
    assert_eq!(h["info"]["logical_cores"], 1);
    assert_eq!(h["info"]["cpu_set"], "0");
}

#[test]
fn trace_writes_the_stream_and_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.jsonl");
    let o = Command::new(coordinator_bin())
        .args(["trace", "--jobs", "1000", "--out", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let body = std::fs::read_to_string(&f).unwrap();
    assert_eq!(body.lines().count(), 1000);
    assert!(body.starts_with(
        "{\"id\":0,\"class\":\"mixed\",\"class_id\":0,\"work_units\":70965,\"sleep_us\":0,\"crash\":false,\"intended_us\":0}\n"
    ));
    // The digest printed is the one the generator pins for this prefix.
    let mut g = cwbench::generator::Generator::new(
        &cwbench::scenario::parse(
            cwbench::scenario::PARITY_TOML,
            "p",
            &cwbench::scenario::Limits::default(),
        )
        .unwrap(),
    );
    let mut d = cwbench::digest::Digest::new();
    for _ in 0..1000 {
        d.push(&g.next_job());
    }
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "digest {} of 1000 jobs",
            cwbench::digest::hex(d.value())
        )),
        "{err}"
    );
    // Another seed, another stream.
    let o2 = Command::new(coordinator_bin())
        .args(["trace", "--jobs", "1000", "--seed", "43"])
        .output()
        .unwrap();
    assert_eq!(o2.status.code(), Some(0));
    assert_ne!(text(&o2.stdout), body);
    let o3 = Command::new(coordinator_bin())
        .args(["trace", "--scenario", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(o3.status.code(), Some(2));
}

#[test]
fn trace_of_a_timed_closed_loop_needs_a_job_count() {
    let dir = tempfile::tempdir().unwrap();
    let timed = dir.path().join("timed.toml");
    std::fs::write(
        &timed,
        std::fs::read_to_string(smoke())
            .unwrap()
            .replace("jobs = 6000", "duration_ms = 2000"),
    )
    .unwrap();
    let timed = timed.to_str().unwrap();
    let o = coordinator(&["trace", "--scenario", timed]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("give --jobs N"),
        "{}",
        text(&o.stderr)
    );
    let o = coordinator(&["trace", "--scenario", timed, "--jobs", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).lines().count(), 4);
}

#[test]
fn safety_limits_name_their_flag_and_the_flag_raises_them() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(
        &big,
        std::fs::read_to_string(smoke())
            .unwrap()
            .replace("jobs = 6000", "jobs = 2000000000"),
    )
    .unwrap();
    let big = big.to_str().unwrap();
    let o = coordinator(&["trace", "--scenario", big, "--jobs", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("raise it with --limit jobs=N"),
        "{}",
        text(&o.stderr)
    );
    let o = coordinator(&[
        "trace",
        "--scenario",
        big,
        "--jobs",
        "3",
        "--limit",
        "jobs=3000000000",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).lines().count(), 3);
    let o = coordinator(&["--limit", "bogus=1", "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown limit \"bogus\""));
}

/// Log lines written to a pipe or a file carry no colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let mut child = Command::new(agent_bin())
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
        .env("CWBENCH_TOKEN", "a-token-for-the-log-line")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // The log line follows the address line.
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert!(
        err.contains("every rpc must carry the shared token"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
}

/// CPU figures are the run's own: against an agent that has just served a
/// CPU-heavy run, the next run's first interval reads no more cores than
/// the machine has (it read the process's whole past before).
#[test]
fn cpu_figures_count_from_the_run_start() {
    let agent = AgentProc::start();
    let out = tempfile::tempdir().unwrap();
    let run = |id: &str| smoke_host(&agent, out.path(), id);
    let cpu = |h: &serde_json::Value| -> Vec<f64> {
        h["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["cpu_cores"].as_f64().unwrap())
            .collect()
    };
    let first = cpu(&run("first"));
    let h = run("second");
    let second = cpu(&h);
    eprintln!("cpu_cores of the first run {first:?}, of the second {second:?}");
    let cores = h["info"]["logical_cores"].as_f64().unwrap();
    for (k, c) in second.iter().enumerate() {
        assert!(*c <= cores + 0.5, "interval {k}: {c} cores on {cores}");
    }
    // The same run twice: the same start, give or take a core.
    assert!(second[0] <= first[0] + 1.0, "{second:?} after {first:?}");
}
