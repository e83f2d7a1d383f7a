//! `POST /v1/collections/{collection}/find` and `.../explain`: queries by selector over the
//! collection's indexes (see [`crate::find`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::find::{FindRequest, Query};
use crate::http::auth::Principal;
use crate::http::extract::{Json, PathParams, QueryParams};
use crate::http::problem::ApiError;
use crate::node::Node;

fn parse(collection: &str, req: &FindRequest) -> Result<Query, ApiError> {
    crate::store::keys::validate_collection(collection)?;
    Ok(Query::parse(req)?)
}

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `POST .../find`; with `"watch": true`, a live query (Server-Sent Events, see `live`).
pub async fn find(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    Json(req): Json<FindRequest>,
) -> Result<Response, ApiError> {
    if req.watch {
        crate::store::keys::validate_collection(&collection)?;
        return super::live::watch(node, collection, req, last_event_id(&headers), &who).await;
    }
    let mut q = parse(&collection, &req)?;
    q.restrict(&who, &collection);
    let n = node.clone();
    let result = node
        .blocking::<_, ApiError>(move || {
            crate::find::find(&n.store, &collection, &q).map_err(ApiError::from)
        })
        .await?;
    Ok(axum::Json(result).into_response())
}

/// The query string of `GET .../find`: a live query for `EventSource`, which can only `GET`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The selector, as JSON.
    pub selector: Option<String>,
    /// Paths to keep, comma-separated.
    pub fields: Option<String>,
    pub use_index: Option<String>,
    #[serde(default)]
    pub allow_scan: bool,
}

/// `GET .../find?selector=...`: a live query (Server-Sent Events).
pub async fn watch_get(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    QueryParams(w): QueryParams<WatchQuery>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::store::keys::validate_collection(&collection)?;
    let selector = match w.selector.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_str(s)
                .map_err(|e| ApiError::BadRequest(format!("selector: not JSON: {e}")))?,
        ),
    };
    let req = FindRequest {
        selector,
        fields: w.fields.map(|f| f.split(',').map(str::to_string).collect()),
        use_index: w.use_index,
        allow_scan: w.allow_scan,
        watch: true,
        ..FindRequest::default()
    };
    super::live::watch(node, collection, req, last_event_id(&headers), &who).await
}

/// `POST .../explain`
pub async fn explain(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(req): Json<FindRequest>,
) -> Result<Response, ApiError> {
    let mut q = parse(&collection, &req)?;
    q.restrict(&who, &collection);
    let narrowed = q.scope.is_some();
    let n = node.clone();
    let mut result = node
        .blocking::<_, ApiError>(move || {
            crate::find::explain(&n.store, &collection, &q).map_err(ApiError::from)
        })
        .await?;
    if narrowed {
        // Whether a scan would be allowed tells the collection's size; such callers never scan.
        result.scan_allowed = false;
    }
    Ok(axum::Json(result).into_response())
}
