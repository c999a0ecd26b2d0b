//! Agent discovery: `--agent HOST:PORT`, `--agents-file FILE` and
//! `--agents dns:NAME:PORT`, combined into one deduplicated list.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the agent list could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("--agent {0:?}: must be HOST:PORT with a port in 1..=65535")]
    BadAgent(String),
    #[error("--agents-file {}: cannot read: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {text:?}: must be HOST:PORT with a port in 1..=65535", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("--agents-file {}: names no agent", path.display())]
    EmptyFile { path: PathBuf },
    #[error("--agents {0:?}: must be dns:NAME:PORT with a port in 1..=65535")]
    BadSpec(String),
    #[error("--agents dns:{name}:{port}: cannot resolve {name}: {reason}")]
    Resolve {
        name: String,
        port: u16,
        reason: String,
    },
}

impl DiscoveryError {
    /// Resolution failures mean the agents cannot be reached (exit 3);
    /// everything else is bad input (exit 2).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DiscoveryError::Resolve { .. })
    }
}

/// Whether `s` looks like HOST:PORT (HOST non-empty, PORT in 1..=65535;
/// IPv6 literals in brackets).
pub fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty()
            && !h.chars().any(char::is_whitespace)
            && (!h.contains(':') || (h.starts_with('[') && h.ends_with(']')))
            && p.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Parses an agents file: one HOST:PORT per line; `#` starts a comment;
/// blank lines are ignored. `path` only names the file in errors.
pub fn parse_agents_file(text: &str, path: &Path) -> Result<Vec<String>, DiscoveryError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split_once('#').map_or(raw, |(l, _)| l).trim();
        if line.is_empty() {
            continue;
        }
        if !is_host_port(line) {
            return Err(DiscoveryError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
            });
        }
        out.push(line.to_string());
    }
    if out.is_empty() {
        return Err(DiscoveryError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Reads and parses an agents file.
pub fn read_agents_file(path: &Path) -> Result<Vec<String>, DiscoveryError> {
    let text = std::fs::read_to_string(path).map_err(|source| DiscoveryError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_agents_file(&text, path)
}

/// Splits `dns:NAME:PORT`.
pub fn parse_dns_spec(spec: &str) -> Result<(String, u16), DiscoveryError> {
    let bad = || DiscoveryError::BadSpec(spec.to_string());
    let rest = spec.strip_prefix("dns:").ok_or_else(bad)?;
    let (name, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(bad)?;
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok((name.to_string(), port))
}

/// Resolves NAME to all its A/AAAA addresses: one agent per address,
/// deduplicated and sorted.
pub async fn resolve(
    name: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<String>, DiscoveryError> {
    let fail = |reason: String| DiscoveryError::Resolve {
        name: name.to_string(),
        port,
        reason,
    };
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| fail(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    let set: BTreeSet<SocketAddr> = addrs.collect();
    if set.is_empty() {
        return Err(fail("no A or AAAA records".into()));
    }
    Ok(set.into_iter().map(|a| a.to_string()).collect())
}

/// Every agent named by the flags, in order (`--agent`, then files, then DNS
/// names), each once.
pub async fn discover(
    agents: &[String],
    files: &[PathBuf],
    dns: &[String],
    timeout: Duration,
) -> Result<Vec<String>, DiscoveryError> {
    let mut all = Vec::new();
    for a in agents {
        if !is_host_port(a) {
            return Err(DiscoveryError::BadAgent(a.clone()));
        }
        all.push(a.clone());
    }
    for f in files {
        all.extend(read_agents_file(f)?);
    }
    let specs = dns
        .iter()
        .map(|s| parse_dns_spec(s))
        .collect::<Result<Vec<_>, _>>()?;
    for (name, port) in specs {
        all.extend(resolve(&name, port, timeout).await?);
    }
    let mut seen = BTreeSet::new();
    all.retain(|a| seen.insert(a.clone()));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_shapes() {
        for ok in [
            "a:1",
            "10.0.0.1:7070",
            "[::1]:7070",
            "agent-1.example:65535",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in ["a", ":7070", "a:0", "a:65536", "a:x", "::1:7070", "a b:1"] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn file_with_comments_blank_lines_and_a_bad_line() {
        let p = Path::new("agents.txt");
        let good = "# the lab\n\n10.0.0.1:7070  # 1 core\n  10.0.0.2:7070\n[::1]:7071\n";
        assert_eq!(
            parse_agents_file(good, p).unwrap(),
            ["10.0.0.1:7070", "10.0.0.2:7070", "[::1]:7071"]
        );
        let bad = "# the lab\n10.0.0.1:7070\n\n10.0.0.3\n";
        let e = parse_agents_file(bad, p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "agents.txt:4: \"10.0.0.3\": must be HOST:PORT with a port in 1..=65535"
        );
        assert!(!e.is_unavailable());
        let e = parse_agents_file("# nothing\n\n", p).unwrap_err();
        assert!(e.to_string().contains("names no agent"), "{e}");
    }

    #[test]
    fn dns_specs() {
        assert_eq!(
            parse_dns_spec("dns:cwbench-agent.cwbench.svc.cluster.local:7070").unwrap(),
            ("cwbench-agent.cwbench.svc.cluster.local".into(), 7070)
        );
        for bad in [
            "localhost:7070",
            "dns:localhost",
            "dns::7070",
            "dns:x:0",
            "dns:a:b:1",
        ] {
            assert!(parse_dns_spec(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_sorted_and_deduplicated() {
        let got = resolve("localhost", 7070, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!got.is_empty());
        for a in &got {
            let sa: SocketAddr = a.parse().unwrap();
            assert!(sa.ip().is_loopback(), "{a}");
            assert_eq!(sa.port(), 7070);
        }
        let mut sorted = got.clone();
        sorted.sort_by_key(|a| a.parse::<SocketAddr>().unwrap());
        sorted.dedup();
        assert_eq!(got, sorted);
    }

    #[tokio::test]
    async fn unresolvable_name_is_unavailable_and_named() {
        let e = resolve("no-such-host.invalid", 7070, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.is_unavailable());
        assert!(
            e.to_string()
                .contains("cannot resolve no-such-host.invalid"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn sources_combine_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agents");
        std::fs::write(&f, "127.0.0.1:7070\nhostb:7070\n").unwrap();
        let got = discover(
            &["127.0.0.1:7070".into()],
            &[f],
            &["dns:127.0.0.1:7070".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(got, ["127.0.0.1:7070", "hostb:7070"]);
    }
}
