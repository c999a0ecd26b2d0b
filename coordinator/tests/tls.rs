//! TLS round trips with real processes and certificates generated here:
//! server TLS, then mutual TLS with a required client certificate.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::{AgentProc, agent_bin, coordinator_bin, make_certs};

fn agent(extra: &[&str]) -> AgentProc {
    let mut args = vec!["--listen", "127.0.0.1:0", "--threads", "1"];
    args.extend(extra);
    AgentProc::spawn(&args)
}

fn coordinator(addr: &str, out: &Path, extra: &[&str]) -> Output {
    let smoke = common::data("smoke.toml");
    Command::new(coordinator_bin())
        .args(["--agent", addr, "--scenario", smoke.to_str().unwrap()])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--connect-timeout",
            "3",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn s(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn tls_round_trip_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let a = agent(&[
        "--tls-cert",
        &s(d.join("server.pem")),
        "--tls-key",
        &s(d.join("server.key")),
    ]);
    let o = coordinator(&a.addr, d, &["--tls-ca", &s(d.join("ca.pem"))]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Plaintext against a TLS agent: unavailable, not a hang.
    let o = coordinator(&a.addr, d, &[]);
    assert_eq!(o.status.code(), Some(3));
    // A CA that did not sign the agent's certificate: refused.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path());
    let o = coordinator(&a.addr, d, &["--tls-ca", &s(other.path().join("ca.pem"))]);
    assert_eq!(o.status.code(), Some(3));
    // Unreadable or non-PEM files are bad input naming the flag and file.
    let o = coordinator(&a.addr, d, &["--tls-ca", &s(d.join("missing.pem"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-ca"));
}

#[test]
fn mutual_tls_requires_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let a = agent(&[
        "--tls-cert",
        &s(d.join("server.pem")),
        "--tls-key",
        &s(d.join("server.key")),
        "--tls-client-ca",
        &s(d.join("ca.pem")),
    ]);
    let ca = s(d.join("ca.pem"));
    let o = coordinator(&a.addr, d, &["--tls-ca", &ca]);
    assert_eq!(o.status.code(), Some(3), "no client certificate");
    let o = coordinator(
        &a.addr,
        d,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &s(d.join("client.pem")),
            "--tls-key",
            &s(d.join("client.key")),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn agent_with_tls_may_listen_publicly_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let o = Command::new(agent_bin())
        .args([
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &s(d.join("server.pem")),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "--tls-cert needs --tls-key");
    let mut child = Command::new(agent_bin())
        .args([
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &s(d.join("server.pem")),
        ])
        .args(["--tls-key", &s(d.join("server.key"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("agent listening on 0.0.0.0:"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}
