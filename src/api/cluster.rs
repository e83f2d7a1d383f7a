//! `GET /v1/cluster`: this node and every member it knows, with state, last sync, last repair,
//! push queue and digest root (so divergence and convergence can be watched).

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;

use crate::node::Node;
use crate::replication::membership::PeerInfo;

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node_id: String,
    pub advertise: String,
    /// This node's digest root now (16 hex digits): equal on two nodes that hold the same
    /// documents at the same versions.
    pub digest_root: String,
    pub members: Vec<PeerInfo>,
}

pub async fn cluster(State(node): State<Arc<Node>>) -> axum::Json<ClusterView> {
    axum::Json(ClusterView {
        node_id: node.membership.node_id().to_string(),
        advertise: node.membership.me().to_string(),
        digest_root: crate::replication::membership::format_root(node.store.digest_root()),
        members: node.membership.snapshot(),
    })
}
