//! WebSocket runs (docs/websocket.md): the task server (the system under test) and the client that loads it.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub mod client;
pub mod server;

/// `max_message` = 0: the largest task message accepted.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 10;
/// Read buffer per connection: tungstenite allocates it eagerly (128 KiB by
/// default, over a gigabyte at 10k connections); tasks are 30 bytes,
/// answers 26.
const READ_BUFFER: usize = 4 << 10;

/// tungstenite's settings for either end: a small read buffer; messages
/// and frames of at most `max_message` bytes (0 = DEFAULT_MAX_MESSAGE), a
/// larger one an error on read.
pub(crate) fn ws_config(max_message: u32) -> WebSocketConfig {
    let max = match max_message {
        0 => DEFAULT_MAX_MESSAGE,
        n => n as usize,
    };
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

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
