//! Documents as Automerge bytes over HTTP: the content type, the ETag made from heads, and the
//! whole document (`save()`) for `GET` with `Accept: application/octet-stream`. Shared by the
//! REST document routes and client sync.

use std::sync::Arc;

use automerge::ChangeHash;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::doc::heads;
use crate::http::problem::ApiError;
use crate::node::Node;
use crate::store::DocKey;

pub const OCTET_STREAM: &str = "application/octet-stream";

pub fn binary(bytes: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM))],
        bytes,
    )
        .into_response()
}

pub fn with_etag(mut resp: Response, hs: &[ChangeHash]) -> Response {
    if let Ok(v) = HeaderValue::from_str(&heads::etag(hs)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// `GET .../docs/{id}` with `Accept: application/octet-stream`: the whole document (`save()`).
pub async fn get_bytes(node: Arc<Node>, key: DocKey) -> Result<Response, ApiError> {
    let n = node.clone();
    let (bytes, current) = node
        .blocking::<_, ApiError>(move || {
            n.store
                .read(&key, |doc, meta| {
                    if meta.deleted {
                        return Err(ApiError::NotFound(format!("document {key} was deleted")));
                    }
                    Ok((doc.save(), meta.heads()))
                })?
                .unwrap_or_else(|| {
                    Err(ApiError::NotFound(format!("document {key} does not exist")))
                })
        })
        .await?;
    Ok(with_etag(binary(bytes), &current))
}

/// Whether a request asks for binary Automerge bytes rather than JSON.
pub fn wants_bytes(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with(OCTET_STREAM)))
}
