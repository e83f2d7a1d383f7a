//! The peer endpoints (`/v1/peer/...`), behind the cluster-secret check: hello and digest
//! levels for anti-entropy, changes for pushes and repairs, pull and sync for reconciliation.
//!
//! Each decodes a postcard body, hands it to the replication core's responder
//! ([`crate::replication::serve`]) off the async workers where it touches the store, and encodes
//! the answer. Nothing here decides anything about replication.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::extract::RawBody;
use crate::http::problem::ApiError;
use crate::node::Node;
use crate::replication::serve::{self, ServeError};
use crate::replication::wire::*;

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    postcard::from_bytes(body)
        .map_err(|e| ApiError::BadRequest(format!("undecodable peer message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response, ApiError> {
    let bytes = postcard::to_stdvec(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        bytes,
    )
        .into_response())
}

/// Runs a responder off the async workers.
async fn respond<Req, Resp>(
    node: &Arc<Node>,
    body: &[u8],
    f: fn(&crate::replication::Replica, Req) -> Result<Resp, ServeError>,
) -> Result<Response, ApiError>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let req: Req = decode(body)?;
    let replica = node.replica.clone();
    let resp = node
        .blocking::<_, ApiError>(move || f(&replica, req).map_err(ApiError::from))
        .await?;
    encode(&resp)
}

/// `POST /v1/peer/hello`: learn the caller and its members; answer with the digest root.
pub async fn hello(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    encode(&serve::hello(&node.replica, decode(&body)?))
}

/// `POST /v1/peer/digest`: salted hashes of the children of some digest tree nodes.
pub async fn digest(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    encode(&serve::digest(&node.replica, decode(&body)?)?)
}

/// `POST /v1/peer/digest/docs`: the documents (and leaves) of buckets.
pub async fn bucket_docs(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    respond(&node, &body, serve::bucket_docs).await
}

/// `POST /v1/peer/changes`: 200 with [`ChangesResultV1`] (per-document outcomes), or 507 when
/// this node's disk is full.
pub async fn changes(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: ChangesV1 = decode(&body)?;
    let result = crate::replication::local::apply_changes(&node.replica, req.docs).await?;
    encode(&result)
}

/// `POST /v1/peer/pull`: for each document, the changes after the puller's heads (or our heads
/// when we cannot serve it).
pub async fn pull(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    respond(&node, &body, serve::pull).await
}

/// `POST /v1/peer/sync`: one step of the Automerge sync protocol for each document.
pub async fn sync(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    respond(&node, &body, serve::sync).await
}
