//! Per-request observability and guard rails: a tracing span, Prometheus counters and latency by
//! route, the request timeout, and panic containment. One middleware so every request passes the
//! same code once.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::problem::ApiError;
use crate::metrics::HttpLabels;
use crate::node::Node;

pub async fn observe(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span =
        tracing::info_span!("request", %method, %route, path = %req.uri().path(), %request_id);
    let timeout = std::time::Duration::from_secs(node.config.request_timeout_secs);
    let resp = async {
        match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::Timeout(node.config.request_timeout_secs).into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    let elapsed = start.elapsed();
    let status = resp.status();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                ms = elapsed.as_secs_f64() * 1e3,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                ms = elapsed.as_secs_f64() * 1e3,
                "request"
            );
        }
    });
    let labels = HttpLabels {
        method: method.to_string(),
        route,
        status: status.as_u16().to_string(),
    };
    node.metrics.http_requests.get_or_create(&labels).inc();
    node.metrics
        .http_latency
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    resp
}

/// A handler panic answers 500 as a problem; the node keeps serving.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %msg, "handler panicked");
    ApiError::Internal("the request handler failed unexpectedly".into()).into_response()
}
