//! WebSocket runs (docs/websocket.md): the task server (the system under test) and the client that loads it.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub mod client;
mod page;
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

/// A wss:// client's TLS: None when `ca_pem` is empty (the system's CAs,
/// tokio-tungstenite's default), else the system's CAs and these.
pub(crate) fn tls_config(ca_pem: &[u8]) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if ca_pem.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| format!("plan.websocket.tls_ca (--target-ca): {why}");
    let mut roots = rustls::RootCertStore::empty();
    // The system's may be missing or partly unreadable: the run's own CAs
    // are enough for a server they signed.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let mut ours = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("a certificate cannot be a trust anchor: {e}")))?;
        ours += 1;
    }
    if ours == 0 {
        return Err(bad("holds no CERTIFICATE block".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Arc::new(config)))
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
