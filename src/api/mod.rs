//! The REST API (v1): routes, extractors, conditional requests, and the one mapping of errors to
//! `application/problem+json`. The contract is `openapi.yaml` at the repository root.

pub mod auth;
pub mod changes;
pub mod cluster;
pub mod collections;
pub mod conditional;
pub mod docs;
pub mod extract;
pub mod observe;
pub mod problem;
pub mod streams;
pub mod system;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::server::Node;
use problem::ApiError;

/// Builds the router with every route and layer.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/health", get(system::health))
        .route("/metrics", get(system::metrics))
        .merge(client_routes(node.clone()))
        .merge(peer_routes(node.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(node.config.max_body_bytes))
        .layer(
            // Beyond capacity, answer 503 at once rather than queue without bound. The limit is global:
            // `Router::layer` wraps each route, so a per-layer semaphore would be per route.
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    node.config.max_concurrent_requests,
                )),
        )
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            observe::observe,
        ))
        .layer(CatchPanicLayer::custom(observe::panic_response))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(node)
}

/// Client endpoints: API tokens (when configured) open them.
fn client_routes(node: Arc<Node>) -> Router<Arc<Node>> {
    let doc = "/v1/collections/{collection}/docs/{id}";
    Router::new()
        .route("/v1/collections", get(collections::list_collections))
        .route(
            "/v1/collections/{collection}/docs",
            get(collections::list_docs).post(docs::create),
        )
        .route(
            doc,
            get(docs::get)
                .put(docs::put)
                .patch(docs::patch)
                .delete(docs::delete),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/ops",
            post(docs::ops),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/history",
            get(docs::history),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/sync",
            post(crate::sync::http::sync),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/changes",
            get(crate::sync::http::get_changes).post(crate::sync::http::post_changes),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/events",
            get(crate::sync::http::events),
        )
        .route(
            "/v1/collections/{collection}/bulk-write",
            post(collections::bulk_write),
        )
        .route(
            "/v1/collections/{collection}/bulk-read",
            post(collections::bulk_read),
        )
        .route("/v1/changes", get(changes::changes))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/automerge-repo", get(crate::sync::websocket::upgrade))
        .route_layer(axum::middleware::from_fn_with_state(
            node,
            auth::require_token,
        ))
}

/// Peer-to-peer endpoints: only the cluster secret opens them.
fn peer_routes(node: Arc<Node>) -> Router<Arc<Node>> {
    use crate::replication::{auth, endpoints as peer};
    Router::new()
        .route("/v1/peer/hello", post(peer::hello))
        .route("/v1/peer/digest", post(peer::digest))
        .route("/v1/peer/digest/docs", post(peer::bucket_docs))
        .route("/v1/peer/changes", post(peer::changes))
        .route("/v1/peer/pull", post(peer::pull))
        .route("/v1/peer/sync", post(peer::sync))
        .route_layer(axum::middleware::from_fn_with_state(
            node,
            auth::require_secret,
        ))
}

async fn overloaded(_: tower::BoxError) -> ApiError {
    ApiError::Overloaded("the node is at its concurrent request limit; retry shortly".into())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
