//! WebSocket runs (docs/websocket.md): the task server (the system under test) and the client that loads it.

pub mod client;
pub mod server;

/// Raises the open-file soft limit to the hard limit: 10,000 connections
/// need 10,000 descriptors on each side, past the usual soft 1,024.
/// Returns the limit now in force (None where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return Some(hard);
        }
        Some(soft)
    }
    #[cfg(not(target_os = "linux"))]
    None
}
