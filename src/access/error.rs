//! What can go wrong judging access: a bad token, an unusable scope, an unreadable key file.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AccessError {
    /// The presented token is not a valid signed token (401).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A scope cannot be used (a token's: 401; the configuration's: refused at start).
    #[error("invalid scope: {0}")]
    BadScope(String),
    /// A key file cannot be read or parsed.
    #[error("{0}")]
    Keys(String),
}
