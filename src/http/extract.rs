//! Request extractors whose every rejection is a problem response with a useful message (axum's
//! own rejections are plain text).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{header, request::Parts, HeaderMap};
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use crate::node::Node;

/// Whether a `Content-Type` is JSON (`application/json` or any `application/*+json`).
fn is_json(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

/// Reads the whole body, mapping an over-limit body to 413.
pub async fn body_bytes(req: Request, node: &Arc<Node>) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, node).await.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(ref inner)
            if matches!(
                inner,
                axum::extract::rejection::FailedToBufferBody::LengthLimitError(_)
            ) =>
        {
            ApiError::PayloadTooLarge {
                limit: node.config.max_body_bytes,
            }
        }
        other => ApiError::BadRequest(format!(
            "could not read the request body: {}",
            other.body_text()
        )),
    })
}

/// Parses JSON, telling syntax errors (400 invalid-json) from shape errors (400 invalid-body).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            ApiError::InvalidBody(e.to_string())
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })
}

/// A JSON request body of type `T`; the `Content-Type` must be JSON.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<Arc<Node>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, node: &Arc<Node>) -> Result<Self, ApiError> {
        match content_type(req.headers()) {
            Some(ct) if is_json(&ct) => {}
            Some(ct) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, got `{ct}`"
                )))
            }
            None => {
                return Err(ApiError::UnsupportedMediaType(
                    "missing Content-Type: send application/json".into(),
                ))
            }
        }
        let bytes = body_bytes(req, node).await?;
        let depth = crate::codec::json_depth(&bytes);
        if depth > node.config.max_json_depth {
            return Err(ApiError::InvalidBody(format!(
                "the JSON nests {depth} levels deep; the limit is {}",
                node.config.max_json_depth
            )));
        }
        parse_json(&bytes).map(Json)
    }
}

/// A raw (binary) request body, whatever its content type; an over-limit body is a 413 problem.
pub struct RawBody(pub Bytes);

impl FromRequest<Arc<Node>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, node: &Arc<Node>) -> Result<Self, ApiError> {
        body_bytes(req, node).await.map(RawBody)
    }
}

/// Path parameters; a bad one is a 400 problem.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| PathParams(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Query parameters; a bad one is a 400 problem.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| QueryParams(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_content_types() {
        assert!(super::is_json("application/json"));
        assert!(super::is_json("application/json; charset=utf-8"));
        assert!(super::is_json("application/merge-patch+json"));
        assert!(!super::is_json("text/plain"));
        assert!(!super::is_json("application/x-www-form-urlencoded"));
    }
}
