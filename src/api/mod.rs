//! Every HTTP endpoint, as route tables the server assembles: the REST API (v1) for clients,
//! client sync over HTTP (`client_sync`) and the automerge-repo WebSocket (`websocket`), and the
//! peer endpoints (`peer`). Handlers use the shared plumbing of [`crate::http`] (errors,
//! extractors, principals) and the node's state. The contract is `openapi.yaml` at the
//! repository root.

pub mod backups;
pub mod changes;
pub mod client_sync;
pub mod cluster;
pub mod collections;
pub mod console;
pub mod doc_bytes;
pub mod docs;
pub mod find;
pub mod indexes;
pub mod live;
pub mod me;
pub mod peer;
pub mod system;
pub mod transfer;
pub mod websocket;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::http::{auth, peer_auth};
use crate::node::Node;

/// Health and metrics: open to everyone (no token), so probes and scrapers need no secret.
pub fn system_routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/health", get(system::health))
        .route("/metrics", get(system::metrics))
}

/// Client endpoints: API tokens (when configured) open them.
pub fn client_routes(node: Arc<Node>) -> Router<Arc<Node>> {
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
            post(client_sync::sync),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/changes",
            get(client_sync::get_changes).post(client_sync::post_changes),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/events",
            get(client_sync::events),
        )
        .route(
            "/v1/collections/{collection}/bulk-write",
            post(collections::bulk_write),
        )
        .route(
            "/v1/collections/{collection}/bulk-read",
            post(collections::bulk_read),
        )
        .route("/v1/collections/{collection}/indexes", get(indexes::list))
        .route(
            "/v1/collections/{collection}/indexes/{name}",
            get(indexes::get).put(indexes::put).delete(indexes::delete),
        )
        .route(
            "/v1/collections/{collection}/find",
            get(find::watch_get).post(find::find),
        )
        .route("/v1/collections/{collection}/explain", post(find::explain))
        .route("/v1/collections/{collection}/export", get(transfer::export))
        .route(
            "/v1/collections/{collection}/import",
            post(transfer::import),
        )
        .route("/v1/changes", get(changes::changes))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/me", get(me::me))
        .route(
            "/v1/admin/backups",
            get(backups::list).post(backups::create),
        )
        // CONNECT: HTTP/2 clients open WebSockets with it (RFC 8441).
        .route(
            "/v1/automerge-repo",
            get(websocket::upgrade).connect(websocket::upgrade),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            node,
            auth::require_token,
        ))
}

/// Peer-to-peer endpoints: only the cluster secret opens them.
pub fn peer_routes(node: Arc<Node>) -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/peer/hello", post(peer::hello))
        .route("/v1/peer/digest", post(peer::digest))
        .route("/v1/peer/digest/docs", post(peer::bucket_docs))
        .route("/v1/peer/changes", post(peer::changes))
        .route("/v1/peer/pull", post(peer::pull))
        .route("/v1/peer/sync", post(peer::sync))
        .route_layer(axum::middleware::from_fn_with_state(
            node,
            peer_auth::require_secret,
        ))
}
