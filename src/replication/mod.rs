//! Replication between nodes, without any HTTP server type: who the peers are (`membership`),
//! how changes reach them at once (`push`), how replicas converge after anything was missed
//! (`anti_entropy`), what this node answers to a peer (`serve`) and how it applies a peer's
//! changes (`local`), all over a [`transport::PeerTransport`]: HTTP in production (`client`,
//! whose endpoints are `api::peer`), in-process in tests and benchmarks (`in_process`), speaking
//! versioned binary messages (`wire`).
//!
//! Every node is a full replica and any node takes writes. A local commit is pushed to every live
//! peer from a bounded per-peer queue (a slow or dead peer never slows local writes; what cannot
//! be queued or delivered is left to anti-entropy). Anti-entropy compares digest trees with one
//! peer at a time; equal roots end the round after one small request.

pub mod anti_entropy;
pub mod client;
pub mod error;
pub mod in_process;
pub mod local;
pub mod membership;
pub mod push;
pub mod replica;
pub mod serve;
pub mod sessions;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use error::{Blame, ReplicationError};
pub use replica::Replica;

use transport::PeerTransport;

/// The background tasks' settings (from the node's configuration).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Mean time between anti-entropy rounds with a peer (±50% jitter).
    pub anti_entropy_interval: Duration,
    /// Commits queued per peer for eager push before pushes are dropped (anti-entropy repairs).
    pub push_queue: usize,
}

/// Starts eager push and anti-entropy; they stop when `shutdown` is cancelled.
pub fn start<T: PeerTransport + Clone>(
    replica: &Arc<Replica>,
    transport: T,
    settings: Settings,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(push::run(
            replica.clone(),
            transport.clone(),
            settings.push_queue,
            shutdown.clone(),
        )),
        tokio::spawn(anti_entropy::run(
            replica.clone(),
            transport,
            settings.anti_entropy_interval,
            shutdown.clone(),
        )),
    ]
}
