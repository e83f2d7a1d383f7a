//! The node's state: everything a request handler or background task reaches through one
//! `Arc<Node>`. It sits low in the house: it holds the store, metrics, configuration, this node as
//! a replica (membership, peer sync sessions), the peer transport, the WebSocket hub and the
//! stream slots, and none of those depends on it. The HTTP layers above take it as their state.

pub mod streams;
pub mod ws_hub;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::access::tokens::Authenticator;
use crate::blocking::WorkerFailed;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::replication::client::PeerClient;
use crate::replication::membership::Membership;
use crate::replication::Replica;
use crate::store::Store;
use streams::StreamSlots;
use ws_hub::Hub;

/// Everything a request handler needs: configuration, storage, metrics and the shutdown signal.
pub struct Node {
    pub config: Config,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// The cluster as this node sees it (the same value as `replica.membership`).
    pub membership: Arc<Membership>,
    /// This node as a replica, for the peer endpoints and the replication tasks.
    pub replica: Arc<Replica>,
    /// How this node reaches its peers.
    pub peer_client: PeerClient,
    /// Live automerge-repo WebSocket connections.
    pub ws_hub: Arc<Hub>,
    /// Slots of long-lived HTTP streams (SSE, long polls), bounded by `max_streams`.
    pub streams: StreamSlots,
    /// Turns clients' bearer values into grants (static tokens, signed tokens).
    pub auth: Arc<Authenticator>,
    /// The backup directory (`backup_dir`), one backup at a time.
    pub backups: Arc<crate::backup::Backups>,
    /// Cancelled when the node starts shutting down, so long-lived streams end and let the
    /// graceful shutdown finish.
    pub shutdown: CancellationToken,
}

impl Node {
    /// Assembles a node from its opened store; `advertise` is the address peers reach it at.
    pub fn new(
        config: Config,
        store: Store,
        metrics: Arc<Metrics>,
        advertise: String,
        peer_client: PeerClient,
        auth: Authenticator,
    ) -> Node {
        let store = Arc::new(store);
        let membership = Arc::new(Membership::new(
            advertise,
            store.node_id().to_string(),
            &config.peers,
            std::time::Duration::from_millis(config.anti_entropy_interval_ms),
        ));
        let replica = Arc::new(Replica::new(
            store.clone(),
            metrics.clone(),
            membership.clone(),
        ));
        let streams = StreamSlots::new(config.max_streams);
        let backups = Arc::new(crate::backup::Backups::new(
            config.backup_dir.clone(),
            config.backup_keep_last,
        ));
        Node {
            backups,
            config,
            store,
            metrics,
            membership,
            replica,
            peer_client,
            ws_hub: Arc::default(),
            streams,
            auth: Arc::new(auth),
            shutdown: CancellationToken::new(),
        }
    }

    /// Runs blocking work (RocksDB, Automerge) off the async workers, with the caller's error
    /// type.
    pub async fn blocking<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<WorkerFailed> + Send + 'static,
    {
        crate::blocking::run(f).await
    }
}
