//! Shared-token authentication: the `authorization: Bearer <token>` check the
//! agent runs on every rpc, and the constant-time comparison it uses.

use std::sync::Arc;

use tonic::{Request, Status};

/// The metadata key that carries the token.
pub const METADATA_KEY: &str = "authorization";

/// Why a token given on the command line or in the environment is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error(
        "the token must be printable ASCII without spaces (it travels in an HTTP/2 header); e.g. `openssl rand -hex 32`"
    )]
    NotPrintable,
}

/// Checks that `token` can be sent as `authorization: Bearer <token>`.
pub fn validate_token(token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::NotPrintable);
    }
    Ok(())
}

/// Compares two byte strings in time that depends only on their lengths,
/// never on where they first differ. (Only the length of the longer one can
/// be learned from timing; tokens should be long and random.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    // A length mismatch is folded into the accumulator, not returned early.
    let mut diff: u64 = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
        // Keep the compiler from turning the loop into an early exit.
        diff = std::hint::black_box(diff);
    }
    std::hint::black_box(diff) == 0
}

/// The server-side interceptor: with a token configured, every request must
/// carry `authorization: Bearer <token>`; without one, everything passes
/// (loopback agents, or `--insecure`).
#[derive(Clone, Default)]
pub struct AuthInterceptor {
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AuthInterceptor")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl AuthInterceptor {
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }

    /// Whether requests must carry a token.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Accepts or refuses one request's metadata. Messages say what was wrong
    /// (missing, malformed, wrong) and never echo the token.
    pub fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(want) = &self.token else {
            return Ok(());
        };
        let Some(value) = req.metadata().get(METADATA_KEY) else {
            return Err(Status::unauthenticated(
                "missing token: this agent requires `authorization: Bearer <token>` (coordinator --token or CWBENCH_TOKEN)",
            ));
        };
        let Some(got) = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
        else {
            return Err(Status::unauthenticated(
                "malformed authorization metadata: expected `Bearer <token>`",
            ));
        };
        if constant_time_eq(got, want) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "wrong token: the token sent does not match this agent's",
            ))
        }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(&req)?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
        // A shorter string padded with zero bytes is still different.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
    }

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert(METADATA_KEY, a.parse().unwrap());
        }
        r
    }

    #[test]
    fn interceptor_says_missing_wrong_or_malformed_without_echoing() {
        let i = AuthInterceptor::new(Some("s3cr3t-token"));
        assert!(i.check(&req(Some("Bearer s3cr3t-token"))).is_ok());
        let e = i.check(&req(None)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().starts_with("missing token"), "{}", e.message());
        let e = i.check(&req(Some("Bearer guess"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().starts_with("wrong token"), "{}", e.message());
        assert!(!e.message().contains("guess") && !e.message().contains("s3cr3t"));
        let e = i.check(&req(Some("Basic abc"))).unwrap_err();
        assert!(e.message().starts_with("malformed"), "{}", e.message());
        assert!(!format!("{i:?}").contains("s3cr3t"));
    }

    #[test]
    fn no_token_configured_lets_everything_through() {
        let i = AuthInterceptor::new(None);
        assert!(!i.required());
        assert!(i.check(&req(None)).is_ok());
        assert!(i.check(&req(Some("Bearer anything"))).is_ok());
    }

    #[test]
    fn tokens_must_fit_in_a_header() {
        assert_eq!(validate_token(""), Err(TokenError::Empty));
        assert_eq!(validate_token("a b"), Err(TokenError::NotPrintable));
        assert_eq!(validate_token("é"), Err(TokenError::NotPrintable));
        assert_eq!(validate_token("0123abcd-_.~"), Ok(()));
    }
}
