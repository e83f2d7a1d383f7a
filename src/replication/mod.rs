//! Replication between nodes: who the peers are (`membership`), how changes reach them at once
//! (`push`), and how replicas converge after anything was missed (`anti_entropy`), over
//! authenticated peer endpoints (`endpoints`, `auth`) speaking versioned binary messages (`wire`)
//! through one HTTP client (`client`).
//!
//! Every node is a full replica and any node takes writes. A local commit is pushed to every live
//! peer from a bounded per-peer queue (a slow or dead peer never slows local writes; what cannot
//! be queued or delivered is left to anti-entropy). Anti-entropy compares digest trees with one
//! peer at a time; equal roots end the round after one small request.

pub mod anti_entropy;
pub mod auth;
pub mod client;
pub mod endpoints;
pub mod membership;
pub mod push;
pub mod wire;

use std::sync::Arc;

use crate::server::Node;

/// Starts the background replication tasks; they stop when the node shuts down.
pub fn start(node: &Arc<Node>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(push::run(node.clone())),
        tokio::spawn(anti_entropy::run(node.clone())),
    ]
}
