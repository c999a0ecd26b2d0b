//! `agent`: serves the cwbench agent on an address until interrupted.

use std::process::ExitCode;

use clap::Parser;
use cwbench_agent::cli::{self, Args};

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a file or pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    ExitCode::from(cli::main(args))
}
