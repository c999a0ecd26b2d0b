//! Stopping a run gracefully: the first SIGINT or SIGTERM (a Kubernetes Job
//! being stopped sends SIGTERM) cancels every agent's run, collects what
//! the agents send back and writes the results marked interrupted; a second
//! SIGINT ends the process at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

/// Exit code after SIGINT (128 + 2), as shells report it.
pub const SIGINT_EXIT: u8 = 130;
/// Exit code after SIGTERM (128 + 15).
pub const SIGTERM_EXIT: u8 = 143;

/// The signal behind an exit code (130 SIGINT, 143 SIGTERM).
pub fn signal_name(exit_code: u8) -> &'static str {
    if exit_code == SIGTERM_EXIT {
        "SIGTERM"
    } else {
        "SIGINT"
    }
}

/// The exit code of a run interrupted by `signal` (as result.json names it).
pub fn exit_code_of(signal: &str) -> u8 {
    if signal == "SIGTERM" {
        SIGTERM_EXIT
    } else {
        SIGINT_EXIT
    }
}

/// Whether, and by which signal, the run was asked to stop.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    token: CancellationToken,
    /// The exit code of the signal that fired it; 0 while it has not.
    code: Arc<AtomicU8>,
    /// The run is over and its files written (the dashboard lingers): a
    /// signal then only ends the wait.
    over: Arc<AtomicBool>,
}

impl Interrupt {
    /// Cancelled when the run is to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The signal's name, once it fired.
    pub fn signal(&self) -> Option<&'static str> {
        self.exit_code().map(signal_name)
    }

    /// 130 or 143 once it fired.
    pub fn exit_code(&self) -> Option<u8> {
        match self.code.load(Ordering::Relaxed) {
            0 => None,
            c => Some(c),
        }
    }

    /// Stops the run as `exit_code`'s signal would (the first call wins).
    pub fn fire(&self, exit_code: u8) {
        let _ = self
            .code
            .compare_exchange(0, exit_code, Ordering::Relaxed, Ordering::Relaxed);
        self.token.cancel();
    }

    /// The run is over: a signal from now on only ends the process's last
    /// wait (the dashboard's linger), and says so.
    pub fn run_over(&self) {
        self.over.store(true, Ordering::Relaxed);
    }

    /// Listens for SIGINT and SIGTERM on the current runtime: the first
    /// fires this, a second SIGINT exits the process with 130 at once.
    pub fn listen(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let me = self.clone();
        tokio::spawn(async move {
            let code = tokio::select! {
                _ = int.recv() => SIGINT_EXIT,
                _ = term.recv() => SIGTERM_EXIT,
            };
            if me.over.load(Ordering::Relaxed) {
                eprintln!("coordinator: {}: exiting", signal_name(code));
                me.token.cancel();
                return;
            }
            crate::progress::eprintln_above(&format!(
                "coordinator: {}: stopping the agents and writing what was measured (Ctrl-C again to quit at once)",
                signal_name(code)
            ));
            me.fire(code);
            int.recv().await;
            crate::progress::eprintln_above("coordinator: SIGINT again: quitting without results");
            std::process::exit(i32::from(SIGINT_EXIT));
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_wins() {
        let i = Interrupt::default();
        assert_eq!((i.exit_code(), i.signal()), (None, None));
        assert!(!i.token().is_cancelled());
        i.fire(SIGTERM_EXIT);
        i.fire(SIGINT_EXIT);
        assert_eq!((i.exit_code(), i.signal()), (Some(143), Some("SIGTERM")));
        assert!(i.token().is_cancelled());
    }
}
