//! Helpers shared by the tests that run the real binaries as processes.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Is Erlang missing (no `erl` and `erlc` in PATH)? Then says SKIP for
/// `test` on stderr: tests of the BEAM pass without it.
pub fn erl_missing(test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| d.join("erl").is_file() && d.join("erlc").is_file())
    });
    if !found {
        eprintln!("SKIP: {test}: Erlang/OTP is not installed (apt-get install erlang-nox)");
    }
    !found
}

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
    cmd.args(args);
    output_within(cmd, Duration::from_secs(120))
}

/// Runs `cmd` to its end and returns its output, reading stdout and stderr
/// as it writes them (a full pipe would block it); kills it and panics past
/// `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran past {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
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
        let mut cmd = Command::new(agent_bin());
        cmd.args(args);
        Self::from_command(cmd)
    }

    /// Starts `cmd` (an agent, or a wrapper such as `nice` that execs one)
    /// with no token in its environment; waits for the line that names its
    /// address.
    pub fn from_command(mut cmd: Command) -> Self {
        let mut child = cmd
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

/// Whether a host's `accounting` (as in result.json) balances: every job
/// sent is completed, crashed, timed out, shed, cancelled or unreleased.
pub fn balanced(a: &serde_json::Value) -> bool {
    // WebSocket clients' two counts are left out when zero.
    let ws = |k: &str| a[k].as_u64().unwrap_or(0);
    let n = |k: &str| a[k].as_u64().expect("an accounting count");
    n("sent")
        == [
            "completed",
            "crashed",
            "timed_out",
            "shed",
            "cancelled",
            "unreleased",
        ]
        .iter()
        .map(|k| n(k))
        .sum::<u64>()
            + ws("refused")
            + ws("connection_lost")
}

/// docs/result.schema.json, compiled.
pub fn schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/result.schema.json");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&s).expect("the schema is a valid JSON Schema")
}

/// Where `doc` breaks the schema: `path: reason` each.
pub fn schema_errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[allow(unused_imports)] // not every test file drives a browser
pub use cwbench::testkit::chromium;

/// Renders `html` in headless Chromium at `size` (width, height) into
/// `png`; returns the PNG's bytes.
pub fn screenshot(bin: &Path, html: &Path, png: &Path, size: (u32, u32)) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium starts");
    assert!(
        png.exists(),
        "no screenshot; chromium said: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(png).unwrap()
}

/// Pixels within ±6 per channel of `#rrggbb`.
pub fn pixels_of(px: &[[u8; 4]], hex: &str) -> usize {
    let c = |i: usize| i32::from(u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap());
    px.iter()
        .filter(|p| (0..3).all(|k| (i32::from(p[k]) - c(k)).abs() <= 6))
        .count()
}

/// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)
/// into (width, height, RGBA pixels).
pub fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<[u8; 4]>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut w, mut h, mut ch) = (0, 0, 0);
    let mut idat = Vec::new();
    let mut i = 8;
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let kind = &bytes[i + 4..i + 8];
        let data = &bytes[i + 8..i + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                ch = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
                assert_eq!(data[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        i += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * ch;
    let mut prev = vec![0u8; stride];
    let mut px = Vec::with_capacity(w * h);
    for row in raw.chunks(stride + 1).take(h) {
        let (f, src) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for x in 0..stride {
            let a = if x >= ch { cur[x - ch] } else { 0 } as i32;
            let b = prev[x] as i32;
            let c = if x >= ch { prev[x - ch] } else { 0 } as i32;
            let pred = match f {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                _ => panic!("filter {f}"),
            };
            cur[x] = (src[x] as i32 + pred) as u8;
        }
        for p in cur.chunks(ch) {
            px.push([p[0], p[1], p[2], if ch == 4 { p[3] } else { 255 }]);
        }
        prev = cur;
    }
    (w, h, px)
}

/// Writes ca.pem, server.{pem,key}, client.{pem,key} into `dir`.
pub fn make_certs(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, sans) in [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
        ),
        ("client", vec!["coordinator".to_string()]),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}
