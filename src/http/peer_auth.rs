//! Peer authentication: every peer request carries the cluster secret, compared in constant time,
//! and with `peer_mtls` comes over a connection that presented a certificate of the cluster's CA.
//! Client tokens (when they exist) are never accepted here, and the secret never leaves a node
//! except in this header to its peers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::http::problem::ApiError;
use crate::node::Node;

pub use crate::replication::client::SECRET_HEADER as HEADER;

pub async fn require_secret(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    // With `peer_mtls`, only a connection that presented a certificate of the cluster's CA (one
    // that did not verify never got past the handshake) may even try the secret.
    let certified = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::tls::Conn>>()
        .is_some_and(|c| c.0.client_cert);
    if node.config.peer_mtls && !certified {
        tracing::warn!("peer request without a client certificate refused");
        return ApiError::Unauthorized(
            "peer requests need a client certificate signed by this cluster's CA (peer_mtls)"
                .into(),
        )
        .into_response();
    }
    let Some(secret) = node.config.cluster_secret.as_deref() else {
        return ApiError::Unauthorized(
            "this node has no cluster secret: it accepts no peers".into(),
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    if presented.ct_eq(secret.as_bytes()).into() {
        next.run(req).await
    } else {
        tracing::warn!("peer request with a missing or wrong cluster secret refused");
        ApiError::Unauthorized("missing or wrong cluster secret".into()).into_response()
    }
}
