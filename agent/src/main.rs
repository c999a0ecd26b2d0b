//! `agent`: serves the cwbench agent on an address until interrupted.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use cwbench_agent::{AgentConfig, serve};

/// cwbench agent: runs the benchmark workload on this host for a coordinator.
///
/// Listens for a coordinator's gRPC calls; each run gets a fresh tokio
/// runtime with the run's worker threads. One run at a time.
#[derive(Debug, Parser)]
#[command(name = "agent", version)]
struct Args {
    /// Address to listen on (host:port); port 0 picks a free port.
    #[arg(long, env = "CWBENCH_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Worker threads for runs whose scenario leaves threads unset
    /// (default: this machine's logical cores).
    #[arg(long, env = "CWBENCH_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = AgentConfig::default();
    if let Some(t) = args.threads {
        cfg.threads = t;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cwbench-agent-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent: cannot start the I/O runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("agent: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        let addr = listener.local_addr().map_or(args.listen, |a| a);
        // The first line on stdout is machine-readable: scripts and tests
        // that bind port 0 read the port from it.
        println!("agent listening on {addr} (threads {})", cfg.threads);
        match serve(listener, cfg, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agent: server failed: {e}");
                ExitCode::from(1)
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
