//! `coordinator`: parses flags, runs the benchmark (or `report` / `compare`
//! on saved results), maps the outcome to an exit code (0 ok, 1 run failed
//! or a compare gate tripped, 2 bad input, 3 agent unavailable, 4 host lost).

use std::process::ExitCode;

use clap::Parser;
use cwbench_coordinator::cli::{self, Cli, Cmd, exit};
use cwbench_coordinator::interrupt::Interrupt;
use cwbench_coordinator::report;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::OK
            });
        }
    };
    let args = match cli.cmd {
        Some(Cmd::Report(a)) => return ExitCode::from(cli::report_command(&a)),
        Some(Cmd::Compare(a)) => return ExitCode::from(cli::compare_command(&a)),
        Some(Cmd::Trace(a)) => return ExitCode::from(cli::trace_command(&a)),
        None => cli.run,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // In-process agents' info lines would only repeat the
                // progress lines (and break them up on a terminal).
                .unwrap_or_else(|_| {
                    if args.quiet {
                        "warn"
                    } else {
                        "info,cwbench_agent=warn"
                    }
                    .into()
                }),
        )
        // Above the progress bars on a terminal; plain stderr otherwise.
        .with_writer(cwbench_coordinator::progress::log_writer())
        // Colour codes only for a person at a terminal, not in a file or pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cwbench_coordinator::driver::runtime_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coordinator: cannot start the runtime: {e}");
            return ExitCode::from(exit::RUN_FAILED);
        }
    };
    let allow_partial = args.allow_partial;
    let interrupt = Interrupt::default();
    let run = async {
        if let Err(e) = interrupt.listen() {
            tracing::warn!("cannot listen for SIGINT/SIGTERM: {e}");
        }
        cli::execute(args, interrupt.clone()).await
    };
    match rt.block_on(run) {
        Ok(ran) => {
            let result = &ran.result;
            print!("{}", report::table(result));
            for w in &result.warnings {
                eprintln!("warning: {w}");
            }
            println!("results: {}", ran.dir.display());
            // The run's exit code, whether the linger ends by its time or
            // by Ctrl-C.
            let code = cli::run_exit_code(result, allow_partial);
            if let Some(d) = ran.dashboard {
                interrupt.run_over();
                rt.block_on(d.linger(&interrupt));
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("coordinator: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
