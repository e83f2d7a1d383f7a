//! Node-level endpoints: health and Prometheus metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::problem::ApiError;
use crate::node::Node;

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub node_id: String,
    pub version: &'static str,
    /// Seconds since this node started.
    pub uptime_seconds: u64,
}

/// `GET /v1/health`
pub async fn health(State(node): State<Arc<Node>>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        node_id: node.store.node_id().to_string(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: node.metrics.uptime().as_secs(),
    })
}

/// `GET /metrics` (Prometheus text format)
pub async fn metrics(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let n = node.clone();
    let text = node
        .blocking::<_, ApiError>(move || {
            let live = crate::metrics::LiveStats {
                websockets_open: n.ws_hub.open(),
                websocket_documents: n.ws_hub.tracked_docs(),
                streams_open: n.streams.open(),
            };
            Ok(n.metrics.render(n.store.stats(), live))
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
