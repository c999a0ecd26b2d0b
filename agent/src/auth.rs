//! Shared-token authentication: the `authorization: Bearer <token>` check the
//! agent runs on every rpc (the token rules themselves: `cwbench::token`).

use std::sync::Arc;

use cwbench::token::{METADATA_KEY, constant_time_eq};

use tonic::{Request, Status};

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
}
