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
