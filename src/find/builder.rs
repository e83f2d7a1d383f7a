//! Builds new indexes over the documents that existed before them, in the background: a step
//! of [`STEP_DOCS`] documents at a time off the async workers, its progress durable after each
//! step (a restart resumes where it stopped), until the index is ready. Writes during a build
//! keep their own entries (the commit path maintains every index, building or not).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::index_registry::BuildState;
use crate::store::Store;

/// Documents indexed per step (one batch, one fsync). Their locks are held for the step, so it
/// stays short: concurrent writes to those documents wait a few milliseconds at most.
pub const STEP_DOCS: usize = 256;

/// Runs until `shutdown`: builds every index that is not ready, then waits for new ones.
pub async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    loop {
        for def in store.indexes().building() {
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let (s, d) = (store.clone(), def.clone());
                match tokio::task::spawn_blocking(move || s.index_build_step(&d, STEP_DOCS)).await {
                    Ok(Ok(BuildState::Ready)) => break,
                    Ok(Ok(BuildState::Building { .. })) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(index = %def.name, collection = %def.collection, error = %e, "index build step failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "index build worker failed");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = store.indexes().changed.notified() => {}
            // A safety net: also look again now and then.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
