//! Helpers shared by the tests that run the real binaries as processes.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coordinator"))
}

/// The agent binary sits beside the coordinator's in the same target dir;
/// build it if this test runs alone.
pub fn agent_bin() -> PathBuf {
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

/// Runs the coordinator with `CWBENCH_TOKEN` set to `token` (or unset),
/// killing it past 120 s; returns its output.
pub fn coordinator_env(args: &[&str], token: Option<&str>) -> Output {
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

/// Runs the coordinator with no token, with the 120 s deadline.
pub fn coordinator(args: &[&str]) -> Output {
    coordinator_env(args, None)
}

/// Process output as text.
pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A file under coordinator/tests/data.
pub fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
}

/// A running agent process, killed when dropped.
pub struct AgentProc {
    pub child: Child,
    pub addr: String,
    /// `agent listening on ADDR (threads N)`.
    pub first_line: String,
}

impl AgentProc {
    /// An agent on a loopback port with one worker thread.
    pub fn start() -> Self {
        Self::spawn(&["--listen", "127.0.0.1:0", "--threads", "1"])
    }

    /// Starts an agent with exactly these flags and no token in its
    /// environment; waits for the line that names its address.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(agent_bin())
            .args(args)
            .env_remove("CWBENCH_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("agent prints its address");
        let addr = line
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Self {
            child,
            addr,
            first_line: line,
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
