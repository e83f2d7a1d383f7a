//! `POST /v1/collections/{collection}/find` and `.../explain`: queries by selector over the
//! collection's indexes (see [`crate::find`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::find::{FindRequest, Query};
use crate::http::extract::{Json, PathParams};
use crate::http::problem::ApiError;
use crate::node::Node;

fn parse(collection: &str, req: &FindRequest) -> Result<Query, ApiError> {
    crate::store::keys::validate_collection(collection)?;
    if req.watch {
        return Err(ApiError::BadRequest(
            "watch: live queries are not served by this node yet".into(),
        ));
    }
    Ok(Query::parse(req)?)
}

/// `POST .../find`
pub async fn find(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    Json(req): Json<FindRequest>,
) -> Result<Response, ApiError> {
    let q = parse(&collection, &req)?;
    let n = node.clone();
    let result = node
        .blocking::<_, ApiError>(move || {
            crate::find::find(&n.store, &collection, &q).map_err(ApiError::from)
        })
        .await?;
    Ok(axum::Json(result).into_response())
}

/// `POST .../explain`
pub async fn explain(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    Json(req): Json<FindRequest>,
) -> Result<Response, ApiError> {
    let q = parse(&collection, &req)?;
    let n = node.clone();
    let result = node
        .blocking::<_, ApiError>(move || {
            crate::find::explain(&n.store, &collection, &q).map_err(ApiError::from)
        })
        .await?;
    Ok(axum::Json(result).into_response())
}
