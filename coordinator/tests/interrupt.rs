//! Ctrl-C keeps what was measured: a real coordinator process, a real
//! signal. The first SIGINT or SIGTERM cancels the agents, writes
//! result.json and the reports marked interrupted, prints the table and
//! exits 130 or 143; a second SIGINT exits at once.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{coordinator_bin, data, schema, schema_errors, text};

/// A coordinator on the ~6 s open loop of long.toml, writing under `out`
/// as run `id`, with one in-process agent or the agent at `agent`.
fn start(out: &Path, id: &str, agent: Option<&str>) -> Child {
    let agents = match agent {
        Some(a) => vec!["--agent", a],
        None => vec!["--local-agents", "1", "--local-threads", "1"],
    };
    Command::new(coordinator_bin())
        .args(["--scenario", data("long.toml").to_str().unwrap()])
        .args(agents)
        .args(["--out", out.to_str().unwrap(), "--run-id", id])
        .env_remove("CWBENCH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator starts")
}

fn signal(c: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &c.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits for the exit (at most `limit`); returns the code, stdout, stderr
/// and how long it took.
fn finish(mut c: Child, limit: Duration) -> (Option<i32>, String, String, Duration) {
    let t = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            panic!("the coordinator did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err, t.elapsed())
}

fn interrupted_run_keeps_its_results(sig: &str, code: i32, name: &str) {
    let out = tempfile::tempdir().unwrap();
    let c = start(out.path(), "int", None);
    std::thread::sleep(Duration::from_millis(2500));
    signal(&c, sig);
    let (got, stdout, stderr, took) = finish(c, Duration::from_secs(20));
    assert_eq!(got, Some(code), "{stdout}{stderr}");
    eprintln!("{name}: exited {took:?} after the signal");
    assert!(
        stderr.contains(&format!("{name}: stopping the agents")),
        "{stderr}"
    );
    assert!(stdout.contains("interrupted"), "the table: {stdout}");
    let dir = out.path().join("int");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(schema_errors(&schema(), &doc), Vec::<String>::new());
    assert_eq!(doc["interrupted"], name);
    let h = &doc["profiles"][0]["hosts"][0];
    assert_eq!(h["status"], "interrupted", "{h}");
    // What ran is measured, what did not is accounted for.
    let a = &h["accounting"];
    let n = |k: &str| a[k].as_u64().unwrap();
    assert!(n("measured_completed") > 0 && n("cancelled") > 0, "{a}");
    assert!(common::balanced(a), "{a}");
    assert_eq!(h["digest_received"], h["digest_sent"]);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains(&format!("interrupted by {name}")), "{md}");
    assert!(dir.join("report.html").exists() && dir.join("summary.csv").exists());
}

#[test]
fn sigint_writes_what_was_measured_and_exits_130() {
    interrupted_run_keeps_its_results("-INT", 130, "SIGINT");
}

#[test]
fn sigterm_writes_what_was_measured_and_exits_143() {
    interrupted_run_keeps_its_results("-TERM", 143, "SIGTERM");
}

/// With its agent frozen, a graceful stop would wait for the agent to go
/// silent for good (seconds); the second SIGINT does not wait.
#[test]
fn a_second_sigint_exits_at_once() {
    let agent = common::AgentProc::start();
    let out = tempfile::tempdir().unwrap();
    let c = start(out.path(), "twice", Some(&agent.addr));
    std::thread::sleep(Duration::from_millis(2000));
    let frozen = Command::new("kill")
        .args(["-STOP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(frozen.success());
    signal(&c, "-INT");
    std::thread::sleep(Duration::from_millis(300));
    signal(&c, "-INT");
    let (got, stdout, stderr, took) = finish(c, Duration::from_secs(2));
    assert_eq!(got, Some(130), "{stdout}{stderr}");
    assert!(
        stderr.contains("SIGINT again"),
        "{}",
        text(stderr.as_bytes())
    );
    eprintln!("exited {took:?} after the second SIGINT");
}
