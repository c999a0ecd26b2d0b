//! A harness that survives: real processes on loopback, killed with SIGKILL
//! mid-run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cwbench::proto::DescribeRequest;
use cwbench::proto::agent_client::AgentClient;

mod common;

use common::AgentProc;

fn data(f: &str) -> String {
    common::data(f).to_string_lossy().into_owned()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> (AgentProc, String) {
    let a = AgentProc::start();
    let addr = a.addr.clone();
    (a, addr)
}

fn coordinator(args: &[&str]) -> Proc {
    Proc(
        Command::new(common::coordinator_bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("coordinator starts"),
    )
}

fn wait_exit(p: &mut Proc, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            return st.code();
        }
        assert!(t.elapsed() < limit, "process ran past {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn busy_run(addr: &str) -> String {
    let mut c = AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    c.describe(DescribeRequest {
        protocol_version: cwbench::PROTOCOL_VERSION,
    })
    .await
    .unwrap()
    .into_inner()
    .busy_run_id
}

async fn wait_busy(addr: &str) {
    let t = Instant::now();
    while busy_run(addr).await.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(20), "run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time (user + system, clock ticks) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Two agents on long.toml; one second into the run, `hit` does something
/// to the second. Returns both hosts' results, the result's warnings and
/// how long the coordinator took to finish after the hit (it must exit 4:
/// a host lost).
async fn two_agents_one_hit(
    id: &str,
    hit: impl FnOnce(&mut AgentProc),
) -> (
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
    Duration,
) {
    let (a, a_addr) = agent();
    let (mut b, b_addr) = agent();
    let out = tempfile::tempdir().unwrap();
    let outs = out.path().to_str().unwrap().to_string();
    let long = data("long.toml");
    let mut c = coordinator(&[
        "--agent",
        &a_addr,
        "--agent",
        &b_addr,
        "--scenario",
        &long,
        "--out",
        &outs,
        "--run-id",
        id,
        "--quiet",
    ]);
    wait_busy(&b_addr).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    hit(&mut b);
    let t = Instant::now();
    let code = wait_exit(&mut c, Duration::from_secs(60));
    let took = t.elapsed();
    drop((a, b));
    assert_eq!(code, Some(4), "host lost -> exit 4");
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join(id).join("result.json")).unwrap(),
    )
    .unwrap();
    let hosts = r["profiles"][0]["hosts"].as_array().unwrap();
    let by = |addr: &str| hosts.iter().find(|h| h["addr"] == addr).unwrap().clone();
    (by(&a_addr), by(&b_addr), r["warnings"].clone(), took)
}

/// A frozen agent (SIGSTOP: its connection stays up, it just says nothing)
/// is marked lost by the silence rule, two snapshot intervals plus the
/// grace after its last message; the other agent finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_marked_lost_within_the_silence_rule() {
    let (ha, hb, _, took) = two_agents_one_hit("frozen", |b| {
        let stop = Command::new("kill")
            .args(["-STOP", &b.child.id().to_string()])
            .status()
            .unwrap();
        assert!(stop.success());
    })
    .await;
    eprintln!("coordinator finished {took:?} after the freeze");
    // long.toml snapshots every 200 ms: silent for 2 x 0.2 s + 5 s.
    assert!(took < Duration::from_secs(9), "{took:?}");
    assert_eq!(ha["status"], "ok");
    assert_eq!(hb["status"], "lost", "{hb}");
    let why = hb["error"].as_str().unwrap();
    assert!(why.contains("went silent for 5.4 s"), "{hb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_marked_lost_and_the_others_finish() {
    let mut b_addr = String::new();
    let (ha, hb, warnings, took) = two_agents_one_hit("kill", |b| {
        b_addr = b.addr.clone();
        b.child.kill().unwrap(); // SIGKILL
    })
    .await;
    assert_eq!(ha["status"], "ok");
    assert_eq!(ha["accounting"]["sent"], 12000);
    assert_eq!(hb["status"], "lost", "{hb}");
    assert!(hb["error"].as_str().unwrap().contains(&b_addr));
    // The data received before the kill is kept.
    assert!(hb["snapshots"].as_u64().unwrap() >= 2, "{hb}");
    assert!(hb["accounting"]["completed"].as_u64().unwrap() > 0);
    // Its latencies come from the interval snapshots it did send.
    assert!(
        hb["latency"]["completion"]["count"].as_u64().unwrap() > 0,
        "{hb}"
    );
    assert!(
        hb["latency"]["completion"]["p99"].as_u64().unwrap() > 0,
        "{hb}"
    );
    assert!(
        warnings
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("Lost"))
    );
    eprintln!("coordinator finished {took:?} after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_partial_exits_zero_when_a_host_is_lost() {
    let (_a, a_addr) = agent();
    let (mut b, b_addr) = agent();
    let out = tempfile::tempdir().unwrap();
    let outs = out.path().to_str().unwrap().to_string();
    let long = data("long.toml");
    let mut c = coordinator(&[
        "--agent",
        &a_addr,
        "--agent",
        &b_addr,
        "--scenario",
        &long,
        "--out",
        &outs,
        "--allow-partial",
        "--quiet",
    ]);
    wait_busy(&b_addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.child.kill().unwrap();
    assert_eq!(wait_exit(&mut c, Duration::from_secs(60)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_frees_the_agent_within_2s() {
    let (a, addr) = agent();
    let out = tempfile::tempdir().unwrap();
    let outs = out.path().to_str().unwrap().to_string();
    let long = data("long.toml");
    let mut c = coordinator(&[
        "--agent",
        &addr,
        "--scenario",
        &long,
        "--out",
        &outs,
        "--quiet",
    ]);
    wait_busy(&addr).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.0.kill().unwrap(); // SIGKILL: no goodbye on the stream
    let _ = c.0.wait();
    let killed = Instant::now();
    while !busy_run(&addr).await.is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "agent still running the orphaned run after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "agent idle {:?} after the coordinator died",
        killed.elapsed()
    );
    // It stops burning CPU: under 0.2 s of CPU over the next second.
    let pid = a.child.id();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    assert!(used <= 20, "{used} ticks of CPU in 1 s while idle");
    // And it accepts the next run.
    let mut c2 = coordinator(&[
        "--agent",
        &addr,
        "--scenario",
        &data("smoke.toml"),
        "--out",
        &outs,
        "--quiet",
    ]);
    assert_eq!(wait_exit(&mut c2, Duration::from_secs(60)), Some(0));
}
