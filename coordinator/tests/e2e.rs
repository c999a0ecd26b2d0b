//! End to end: the real `agent` binary started twice as processes on loopback
//! ports, the real `coordinator` binary run against both. This is the
//! single-host loopback test CI gates on.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coordinator"))
}

/// The agent binary sits beside the coordinator's in the same target dir;
/// build it if this test runs alone.
fn agent_bin() -> PathBuf {
    let p = coordinator_bin().with_file_name(format!("agent{}", std::env::consts::EXE_SUFFIX));
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "cwbench-agent", "--bin", "agent"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo runs");
        assert!(st.success(), "building the agent failed");
    }
    p
}

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smoke.toml")
}

/// A running agent process, killed when dropped.
struct AgentProc {
    child: Child,
    addr: String,
}

impl AgentProc {
    fn start() -> Self {
        Self::start_with(&["--listen", "127.0.0.1:0"])
    }

    /// Starts an agent with these flags (plus `--threads 1`) and no token in
    /// its environment.
    fn start_with(args: &[&str]) -> Self {
        let mut child = Command::new(agent_bin())
            .args(args)
            .args(["--threads", "1"])
            .env_remove("CWBENCH_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("agent prints its address");
        // "agent listening on 127.0.0.1:PORT (threads 1)"
        let addr = line
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Self { child, addr }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the coordinator with a deadline; returns its output.
fn coordinator(args: &[&str]) -> Output {
    coordinator_env(args, None)
}

/// Runs the coordinator with `CWBENCH_TOKEN` set to `token` (or unset).
fn coordinator_env(args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(coordinator_bin());
    match token {
        Some(t) => cmd.env("CWBENCH_TOKEN", t),
        None => cmd.env_remove("CWBENCH_TOKEN"),
    };
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator starts");
    let t = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("coordinator ran past 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
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
    let a = AgentProc::start_with(&["--listen", "127.0.0.1:0", "--token", TOKEN]);
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

    let a = AgentProc::start_with(&["--listen", "0.0.0.0:0", "--insecure"]);
    assert!(a.addr.starts_with("0.0.0.0:"), "{}", a.addr);
    let b = AgentProc::start_with(&["--listen", "0.0.0.0:0", "--token", TOKEN]);
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
    let mut child = Command::new(agent_bin())
        .args(["--listen", "127.0.0.1:0", "--cpus", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let agent = AgentProc {
        addr: line.split_whitespace().nth(3).unwrap().to_string(),
        child,
    };
    assert!(line.contains("(threads 1)"), "{line}");
    let out = tempfile::tempdir().unwrap();
    let o = coordinator(&[
        "--agent",
        &agent.addr,
        "--scenario",
        smoke().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--run-id",
        "pinned",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("pinned/result.json")).unwrap(),
    )
    .unwrap();
    let h = &r["profiles"][0]["hosts"][0];
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
