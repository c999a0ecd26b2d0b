//! TLS material for both ends (rustls through tonic): PEM files read and checked, and the agent's server certificate with an optional client CA.

use std::path::Path;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// PEM material read at start-up.
#[derive(Clone)]
pub struct ServerTls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_certs_required", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {reason}")]
pub struct TlsFileError {
    pub flag: &'static str,
    pub path: String,
    pub reason: String,
}

/// Reads a PEM file, checking it at least looks like PEM.
pub fn read_pem(flag: &'static str, path: &Path, what: &str) -> Result<Vec<u8>, TlsFileError> {
    let err = |reason: String| TlsFileError {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(err(format!("not a PEM file (expected {what})")));
    }
    Ok(bytes)
}

impl ServerTls {
    pub fn from_pem(cert: Vec<u8>, key: Vec<u8>, client_ca: Option<Vec<u8>>) -> Self {
        Self {
            cert,
            key,
            client_ca,
        }
    }

    pub fn config(&self) -> ServerTlsConfig {
        let mut c = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key));
        if let Some(ca) = &self.client_ca {
            c = c.client_ca_root(Certificate::from_pem(ca));
        }
        c
    }
}
