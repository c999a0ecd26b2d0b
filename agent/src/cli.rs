//! Command-line interface of the `agent` binary: flags, the checks made
//! before listening, and the exit codes (0 ok, 1 server failed, 2 bad input).

use std::net::SocketAddr;

use clap::Parser;

use crate::auth::AuthInterceptor;
use crate::host::AgentConfig;
use crate::server::serve;
use cwbench::token::validate_token;

/// Exit codes of the `agent` binary.
pub mod exit {
    pub const OK: u8 = 0;
    /// The server could not start or failed while serving.
    pub const FAILED: u8 = 1;
    /// Bad flags, or an unsafe combination of them.
    pub const BAD_INPUT: u8 = 2;
}

/// cwbench agent: runs the benchmark workload on this host for a coordinator.
///
/// Listens for a coordinator's gRPC calls; each run gets a fresh tokio
/// runtime with the run's worker threads. One run at a time.
#[derive(Debug, Parser)]
#[command(name = "agent", version)]
pub struct Args {
    /// Address to listen on (host:port); port 0 picks a free port.
    #[arg(long, env = "CWBENCH_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Worker threads for runs whose scenario leaves threads unset
    /// (default: this machine's logical cores).
    #[arg(long, env = "CWBENCH_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Shared token: every rpc must carry `authorization: Bearer <token>`.
    /// Required to listen on a non-loopback address (unless --insecure).
    /// Prefer the environment variable: flags show up in `ps`.
    #[arg(long, env = "CWBENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Listen on a non-loopback address without a token: anyone who reaches
    /// the port can run workloads here.
    #[arg(long)]
    pub insecure: bool,
    /// Pin the workload's threads to these CPUs (e.g. `0-1` or `0,2`), so
    /// this machine stands in for a smaller core-count profile; reported as
    /// the host's cores and CPU set.
    #[arg(long, env = "CWBENCH_CPUS", value_name = "LIST")]
    pub cpus: Option<String>,
    /// A name for this machine's kind (e.g. `c6i.xlarge`, `arm-4c`): the
    /// coordinator's report groups hosts that share a label, cores and
    /// worker threads. 1 to 64 characters: letters, digits, `.`, `_`, `-`, `:`, `/`.
    #[arg(long, env = "CWBENCH_LABEL", value_parser = parse_label)]
    pub label: Option<String>,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
}

/// A `--label` as reports show it: short, and safe in file names, tables
/// and tags (`host=…;label=…` never needs quoting).
fn parse_label(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: must be 1 to 64 characters of letters, digits, '.', '_', '-', ':' or '/'"
        ))
    }
}

/// Why the agent refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--token / CWBENCH_TOKEN: {0}")]
    Token(#[from] cwbench::token::TokenError),
    #[error(
        "refusing to listen on {0} with neither a token nor TLS: set --token or CWBENCH_TOKEN, or --tls-cert and --tls-key (or pass --insecure to accept anyone who reaches the port)"
    )]
    NoToken(SocketAddr),
    #[error(transparent)]
    Tls(#[from] cwbench::tls::TlsFileError),
    #[error("{0}")]
    Cpus(String),
}

/// Checks the flags and builds the agent's configuration.
pub fn config(args: &Args) -> Result<AgentConfig, CliError> {
    if let Some(t) = &args.token {
        validate_token(t)?;
    } else if !args.listen.ip().is_loopback() && !args.insecure && args.tls_cert.is_none() {
        return Err(CliError::NoToken(args.listen));
    }
    let mut cfg = AgentConfig {
        auth: AuthInterceptor::new(args.token.as_deref()),
        label: args.label.clone().unwrap_or_default(),
        ..AgentConfig::default()
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        use cwbench::tls::{ServerTls, read_pem};
        let cert = read_pem("--tls-cert", cert, "a certificate")?;
        let key = read_pem("--tls-key", key, "a private key")?;
        let ca = match &args.tls_client_ca {
            Some(p) => Some(read_pem("--tls-client-ca", p, "a CA certificate")?),
            None => None,
        };
        cfg.tls = Some(ServerTls::from_pem(cert, key, ca));
    }
    if let Some(list) = &args.cpus {
        let cpus = crate::affinity::parse_cpu_list(list).map_err(CliError::Cpus)?;
        // Check now that the OS accepts the set, on a throwaway thread.
        let probe = cpus.clone();
        std::thread::spawn(move || crate::affinity::pin_current_thread(&probe))
            .join()
            .map_err(|_| CliError::Cpus("--cpus: the pinning check panicked".into()))?
            .map_err(|e| CliError::Cpus(format!("--cpus {list:?}: {e}")))?;
        // A pinned agent defaults to one worker thread per pinned CPU.
        cfg.threads = cpus.len() as u32;
        cfg.cpus = Some(cpus);
    }
    if let Some(t) = args.threads {
        cfg.threads = t;
    }
    Ok(cfg)
}

/// Runs the agent as the flags say until SIGINT/SIGTERM; returns the exit
/// code. Messages go to stderr; the first stdout line is
/// `agent listening on ADDR (threads N)`.
pub fn main(args: Args) -> u8 {
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent: {e}");
            return exit::BAD_INPUT;
        }
    };
    if args.token.is_none() && args.tls_cert.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            "--insecure: serving on {} with no token; anyone who reaches the port can run workloads",
            args.listen
        );
    }
    let rt = match crate::server::io_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent: cannot start the I/O runtime: {e}");
            return exit::FAILED;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("agent: cannot listen on {}: {e}", args.listen);
                return exit::FAILED;
            }
        };
        let addr = listener.local_addr().map_or(args.listen, |a| a);
        // The first line on stdout is machine-readable: scripts and tests
        // that bind port 0 read the port from it.
        println!("agent listening on {addr} (threads {})", cfg.threads);
        if cfg.auth.required() {
            tracing::info!("every rpc must carry the shared token");
        }
        if let Some(why) = crate::beam::unavailable_reason() {
            tracing::info!("runtime \"beam\" unavailable: {why}");
        }
        match serve(listener, cfg, shutdown_signal()).await {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("agent: server failed: {e}");
                exit::FAILED
            }
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("agent").chain(a.iter().copied())).unwrap()
    }

    #[test]
    fn non_loopback_needs_a_token_or_insecure() {
        assert!(config(&args(&["--listen", "127.0.0.1:0"])).is_ok());
        assert!(config(&args(&["--listen", "[::1]:0"])).is_ok());
        let e = config(&args(&["--listen", "0.0.0.0:7070"])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("refusing to listen on 0.0.0.0:7070")
        );
        assert!(config(&args(&["--listen", "0.0.0.0:7070", "--insecure"])).is_ok());
        let c = config(&args(&["--listen", "0.0.0.0:7070", "--token", "abc"])).unwrap();
        assert!(c.auth.required());
        assert!(config(&args(&["--listen", "0.0.0.0:7070", "--token", ""])).is_err());
    }

    #[test]
    fn labels_are_short_and_plain() {
        assert_eq!(
            config(&args(&["--label", "c6i.xlarge"])).unwrap().label,
            "c6i.xlarge"
        );
        assert_eq!(config(&args(&[])).unwrap().label, "");
        for bad in ["", "a b", "x;y", "é", &"x".repeat(65)] {
            let e = Args::try_parse_from(["agent", "--label", bad]).unwrap_err();
            assert!(e.to_string().contains("--label"), "{e}");
        }
    }
}
