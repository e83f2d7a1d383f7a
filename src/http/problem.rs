//! The API's error type and its one mapping to `application/problem+json` (RFC 9457).
//!
//! Every domain error reaches the client through [`ApiError`]: the status code and problem type
//! are decided here and nowhere else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

use crate::blocking::WorkerFailed;
use crate::doc::DocError;
use crate::find::FindError;
use crate::node::streams::AllStreamsBusy;
use crate::replication::serve::ServeError;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidOperation(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the document has changed: its current version is {current}")]
    PreconditionFailed { current: String },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("the request did not finish within {0} seconds")]
    Timeout(u64),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    DocumentTooLarge(String),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ApiError {
    /// Status, problem slug and title.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid-json", "Malformed JSON"),
            InvalidBody(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid request body",
            ),
            InvalidOperation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-operation",
                "The operation does not fit the document",
            ),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            PreconditionFailed { .. } => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            ),
            PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Corrupt(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "document-corrupt",
                "Stored document is unreadable",
            ),
            Timeout(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            DocumentTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "document-too-large",
                "Document too large",
            ),
            ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Shutting down",
            ),
            InsufficientStorage(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

impl From<DocError> for ApiError {
    fn from(e: DocError) -> Self {
        match e {
            DocError::InvalidHeads(_)
            | DocError::UnknownHeads(_)
            | DocError::InvalidPointer { .. }
            | DocError::BadOp(_)
            | DocError::SyncRejected(_) => ApiError::BadRequest(e.to_string()),
            DocError::NotAnObject(_) => ApiError::InvalidBody(e.to_string()),
            DocError::PathNotFound(_) | DocError::InvalidTarget { .. } | DocError::Automerge(_) => {
                ApiError::InvalidOperation(e.to_string())
            }
            DocError::Corrupt(_) => ApiError::Corrupt(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidCollection(_) | StoreError::InvalidId(_) => {
                ApiError::BadRequest(e.to_string())
            }
            StoreError::Doc(d) => d.into(),
            StoreError::Corrupt(_) => ApiError::Corrupt(e.to_string()),
            StoreError::DocumentTooLarge { .. } => ApiError::DocumentTooLarge(e.to_string()),
            StoreError::NoSpace(_) => {
                tracing::warn!(error = %e, "write refused: disk full");
                ApiError::InsufficientStorage(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "storage error");
                ApiError::Internal(other.to_string())
            }
        }
    }
}

impl From<WorkerFailed> for ApiError {
    fn from(e: WorkerFailed) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<AllStreamsBusy> for ApiError {
    fn from(e: AllStreamsBusy) -> Self {
        ApiError::Overloaded(e.to_string())
    }
}

impl From<FindError> for ApiError {
    fn from(e: FindError) -> Self {
        match e {
            FindError::Store(s) => s.into(),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<crate::backup::BackupError> for ApiError {
    fn from(e: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError as B;
        match e {
            B::NotConfigured | B::Busy => ApiError::Conflict(e.to_string()),
            B::Store(s) => s.into(),
            B::Io { ref source, .. } if source.raw_os_error() == Some(28) => {
                ApiError::InsufficientStorage(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "backup failed");
                ApiError::Internal(other.to_string())
            }
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::BadRequest(m) => ApiError::BadRequest(m),
            ServeError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let body = Problem {
            kind: format!("urn:concord:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::PreconditionFailed { current } = &self {
            if current.is_empty() {
                // No current version: the document does not exist.
            } else if let Ok(v) = HeaderValue::from_str(&format!("\"{current}\"")) {
                resp.headers_mut().insert(header::ETAG, v);
            }
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(
            self,
            ApiError::Timeout(_) | ApiError::ShuttingDown | ApiError::Overloaded(_)
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::InsufficientStorage(_)) {
            // RocksDB checks for free space again every few seconds.
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        }
        resp
    }
}
