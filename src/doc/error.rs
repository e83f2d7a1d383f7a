//! Errors of the document domain: what a write or read asked of a document that cannot be done.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DocError {
    #[error("path `{0}` does not exist in the document")]
    PathNotFound(String),
    #[error("`{pointer}` is not a valid JSON Pointer: {reason}")]
    InvalidPointer { pointer: String, reason: String },
    #[error("path `{path}`: {reason}")]
    InvalidTarget { path: String, reason: String },
    #[error("the document body must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("invalid version `{0}`: expected change hashes (64 hex digits each) separated by `.` or `,`")]
    InvalidHeads(String),
    #[error("version `{0}` is not known to this document")]
    UnknownHeads(String),
    #[error("the document's stored bytes could not be loaded: {0}")]
    Corrupt(String),
    #[error("{0}")]
    BadOp(String),
    #[error("sync message rejected: {0}")]
    SyncRejected(String),
    #[error("automerge rejected the operation: {0}")]
    Automerge(String),
}

impl From<automerge::AutomergeError> for DocError {
    fn from(e: automerge::AutomergeError) -> Self {
        DocError::Automerge(e.to_string())
    }
}

/// JSON type names for error messages.
pub fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
