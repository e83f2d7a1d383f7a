//! `GET /v1/cluster`: this node and every member it knows, with state, last sync and last repair.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;

use crate::node::Node;
use crate::replication::membership::PeerInfo;

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node_id: String,
    pub advertise: String,
    pub members: Vec<PeerInfo>,
}

pub async fn cluster(State(node): State<Arc<Node>>) -> axum::Json<ClusterView> {
    axum::Json(ClusterView {
        node_id: node.membership.node_id().to_string(),
        advertise: node.membership.me().to_string(),
        members: node.membership.snapshot(),
    })
}
