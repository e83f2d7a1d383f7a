//! Wiring: opens the store, builds the one [`Node`] value, serves the API on an already-bound
//! listener until `shutdown` resolves, then drains requests and flushes RocksDB.
//!
//! Taking a bound listener (rather than an address) lets tests start many nodes in one process on
//! port 0 and learn their addresses before serving.

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::problem::ApiError;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::replication::anti_entropy::SyncSessions;
use crate::replication::client::{PeerClient, PeerError};
use crate::replication::membership::Membership;
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the store in {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("peer client: {0}")]
    Peer(#[from] PeerError),
}

/// Everything a request handler needs: configuration, storage, metrics and the shutdown signal.
pub struct Node {
    pub config: Config,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub membership: Arc<Membership>,
    pub peer_client: PeerClient,
    pub sync_sessions: SyncSessions,
    /// Live automerge-repo WebSocket connections.
    pub ws_hub: crate::sync::websocket::Hub,
    /// Slots of long-lived HTTP streams (SSE, long polls), bounded by `max_streams`.
    pub streams: crate::api::streams::StreamSlots,
    /// Cancelled when the node starts shutting down, so long-lived streams end and let the
    /// graceful shutdown finish.
    pub shutdown: CancellationToken,
}

impl Node {
    /// Runs blocking work (RocksDB, Automerge) off the async workers.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::Internal(format!("worker task failed: {e}")))?
    }
}

/// Opens the store and builds the node (separate from [`run`] for tools and benchmarks).
/// `advertise` is the address peers reach this node at.
pub async fn open_node(config: Config, advertise: String) -> Result<Arc<Node>, ServerError> {
    config.validate()?;
    let metrics = Metrics::new();
    let path = config.data_dir.clone();
    std::fs::create_dir_all(&path)?;
    let opts = config.store_options();
    let m = metrics.clone();
    let p = path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&p, opts, m))
        .await?
        .map_err(|source| ServerError::Store {
            path: path.display().to_string(),
            source,
        })?;
    let membership = Membership::new(
        advertise,
        store.node_id().to_string(),
        &config.peers,
        std::time::Duration::from_millis(config.anti_entropy_interval_ms),
    );
    let peer_client = PeerClient::new(config.cluster_secret.clone(), config.peer_bind_ip)?;
    let streams = crate::api::streams::StreamSlots::new(config.max_streams);
    Ok(Arc::new(Node {
        config,
        store: Arc::new(store),
        metrics,
        membership: Arc::new(membership),
        peer_client,
        sync_sessions: SyncSessions::default(),
        ws_hub: Default::default(),
        streams,
        shutdown: CancellationToken::new(),
    }))
}

/// Serves a node on `listener` until `shutdown` resolves; then stops accepting, finishes
/// in-flight requests, and flushes the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr()?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let node = open_node(config, advertise).await?;
    tracing::info!(%addr, node_id = %node.store.node_id(), data_dir = %node.config.data_dir.display(), "concord listening");
    if node.config.tokens.is_empty() {
        if node.config.allow_unauthenticated_remote {
            tracing::warn!("no API tokens configured: serving every client without authentication");
        } else {
            tracing::warn!("no API tokens configured: serving loopback clients only");
        }
    } else {
        tracing::info!(tokens = node.config.tokens.len(), "API tokens required");
    }
    let app = crate::api::router(node.clone());
    let mut tasks = crate::replication::start(&node);
    tasks.push(tokio::spawn(crate::sync::sweep_states(node.clone())));
    let token = node.shutdown.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests");
        token.cancel();
    })
    .await?;
    // Serving can also end on a listener error: stop the background tasks either way.
    node.shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || store.flush())
        .await?
        .map_err(|source| ServerError::Store {
            path: node.config.data_dir.display().to_string(),
            source,
        })?;
    tracing::info!("store flushed; bye");
    Ok(())
}
