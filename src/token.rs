//! The shared token: what a usable token is, the metadata key it travels in, and the constant-time comparison that checks it.

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

/// Compares two byte strings in constant time (`subtle`): the time depends
/// on their lengths only, never on where they first differ. The lengths are
/// not secret (a wrong-length guess fails at once): tokens should be long
/// and random, e.g. `openssl rand -hex 32`.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
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

    #[test]
    fn tokens_must_fit_in_a_header() {
        assert_eq!(validate_token(""), Err(TokenError::Empty));
        assert_eq!(validate_token("a b"), Err(TokenError::NotPrintable));
        assert_eq!(validate_token("é"), Err(TokenError::NotPrintable));
        assert_eq!(validate_token("0123abcd-_.~"), Ok(()));
    }
}
