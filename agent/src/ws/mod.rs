//! WebSocket runs (docs/websocket.md): the task server (the system under test) and the client that loads it.

pub mod client;
pub mod server;

/// Raises the open-file limit: 10,000 connections need 10,000 descriptors
/// on each side (20,000 when both run in one process), past the usual soft
/// 1,024. Asks for 65,536 (a root or CAP_SYS_RESOURCE process may raise
/// the hard limit too), else the hard limit. Returns the limit now in
/// force (None where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        const WANT: u64 = 65_536;
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        if soft >= WANT {
            return Some(soft);
        }
        if hard < WANT && setrlimit(Resource::RLIMIT_NOFILE, WANT, WANT).is_ok() {
            return Some(WANT);
        }
        let to = hard.min(WANT);
        if setrlimit(Resource::RLIMIT_NOFILE, to, hard).is_ok() {
            return Some(to);
        }
        Some(soft)
    }
    #[cfg(not(target_os = "linux"))]
    None
}
