//! Blocking work (RocksDB reads and fsyncs, Automerge loads and merges) run off the async
//! workers, with the caller's own error type: a failed worker is whatever its domain calls a
//! failure of this node, never a peer's or a client's fault.

use thiserror::Error;

/// The worker thread running the closure failed (it panicked or was cancelled at shutdown).
#[derive(Debug, Error)]
#[error("worker task failed: {0}")]
pub struct WorkerFailed(pub String);

/// Runs `f` on the blocking pool and returns its result.
pub async fn run<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<WorkerFailed> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(WorkerFailed(e.to_string())))?
}
