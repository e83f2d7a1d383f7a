//! The top of the house: opens the store, builds the one [`Node`] value, assembles the router
//! (the route tables of `api` under the shared layers of `http`), starts the background tasks,
//! serves on an already-bound listener until `shutdown` resolves, then drains requests and
//! flushes RocksDB.
//!
//! Taking a bound listener (rather than an address) lets tests start many nodes in one process on
//! port 0 and learn their addresses before serving.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::config::{Config, ConfigError};
use crate::http::problem::ApiError;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::replication::client::PeerClient;
use crate::replication::transport::PeerError;
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
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Opens the store and builds the node (separate from [`run`] for tools and benchmarks).
/// `advertise` is the address peers reach this node at.
pub async fn open_node(config: Config, advertise: String) -> Result<Arc<Node>, ServerError> {
    config.validate()?;
    let auth = config.authenticator()?;
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
    let peer_tls = match (&config.peer_tls_ca, &config.tls_cert, &config.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(crate::replication::client::PeerTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let peer_client =
        PeerClient::new(config.cluster_secret.clone(), config.peer_bind_ip, peer_tls)?;
    Ok(Arc::new(Node::new(
        config,
        store,
        metrics,
        advertise,
        peer_client,
        auth,
    )))
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
    crate::tls::install_provider();
    // Built before the node opens, so a bad certificate stops the start with a clear error.
    let tls = match config.tls_files() {
        Some(files) => Some((
            crate::tls::Reloadable::new(crate::tls::server_config(&files)?),
            files,
        )),
        None => None,
    };
    let node = open_node(config, advertise).await?;
    tracing::info!(%addr, node_id = %node.store.node_id(), data_dir = %node.config.data_dir.display(), tls = tls.is_some(), "concord listening");
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "serving plain HTTP on a non-loopback address: tokens, the cluster secret and documents travel in clear; set tls_cert and tls_key");
    }
    if !node.auth.any() {
        if node.config.allow_unauthenticated_remote {
            tracing::warn!("no API tokens configured: serving every client without authentication");
        } else {
            tracing::warn!("no API tokens configured: serving loopback clients only");
        }
    } else {
        tracing::info!(
            static_tokens = node.config.tokens.len(),
            signed_tokens = node.auth.verifier().is_some(),
            "API tokens required"
        );
    }
    let app = router(node.clone());
    let settings = crate::replication::Settings {
        anti_entropy_interval: Duration::from_millis(node.config.anti_entropy_interval_ms),
        push_queue: node.config.push_queue,
    };
    let mut tasks = crate::replication::start(
        &node.replica,
        node.peer_client.clone(),
        settings,
        &node.shutdown,
    );
    let ttl = Duration::from_millis(node.config.sync_state_ttl_days.saturating_mul(86_400_000));
    tasks.push(tokio::spawn(crate::find::builder::run(
        node.store.clone(),
        node.shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::sync::sweep_states(
        node.store.clone(),
        ttl,
        node.shutdown.clone(),
    )));
    if node.auth.verifier().is_some() {
        tasks.push(tokio::spawn(reload_keys_on_sighup(node.clone())));
    }
    if let Some((config, files)) = &tls {
        let peers = node.peer_client.clone();
        tasks.push(tokio::spawn(crate::tls::watch(
            files.clone(),
            config.clone(),
            move || {
                if let Err(e) = peers.reload() {
                    tracing::warn!(error = %e, "peer client keeps its previous certificate");
                }
            },
            node.shutdown.clone(),
        )));
    }
    if let Some(every) = node.config.backup_every()? {
        tasks.push(tokio::spawn(crate::backup::schedule::run(
            node.backups.clone(),
            node.store.clone(),
            node.metrics.clone(),
            every,
            node.shutdown.clone(),
        )));
    }
    let token = node.shutdown.clone();
    crate::tls::serve(listener, tls.map(|(c, _)| c), app, async move {
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

/// Re-reads the JWKS file on SIGHUP (it is also re-read when it changes), until shutdown.
async fn reload_keys_on_sighup(node: Arc<Node>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; keys reload when the file changes");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                if let Some(v) = node.auth.verifier() {
                    match v.reload() {
                        Ok(changed) => tracing::info!(changed, "SIGHUP: signing keys re-read"),
                        Err(e) => tracing::warn!(error = %e, "SIGHUP: keys not reloaded; the keys in use stay"),
                    }
                }
            }
        }
    }
}

/// The whole router: health and metrics, the client API (behind tokens), the peer endpoints
/// (behind the cluster secret), and the layers every request passes: body limit, the global
/// concurrency limit, observation, panic containment and request ids.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .merge(crate::api::system_routes())
        .merge(crate::api::console::routes())
        .merge(crate::api::client_routes(node.clone()))
        .merge(crate::api::peer_routes(node.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(node.config.max_body_bytes))
        .layer(
            // Beyond capacity, answer 503 at once rather than queue without bound. The limit is global:
            // `Router::layer` wraps each route, so a per-layer semaphore would be per route.
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    node.config.max_concurrent_requests,
                )),
        )
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            crate::http::observe::observe,
        ))
        .layer(CatchPanicLayer::custom(
            crate::http::observe::panic_response,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(node)
}

async fn overloaded(_: tower::BoxError) -> ApiError {
    ApiError::Overloaded("the node is at its concurrent request limit; retry shortly".into())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
