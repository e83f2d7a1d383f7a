//! The scheduled backup: every `backup_interval`, a backup of the node's store (with retention),
//! until shutdown. A failed backup is logged and counted, and the next one is tried on time: a
//! full disk today should not stop tomorrow's backup.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{create_now, Backups};
use crate::metrics::Metrics;
use crate::store::Store;

pub async fn run(
    backups: Arc<Backups>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match create_now(backups.clone(), store.clone()).await {
            Ok(c) => {
                metrics.backup_done(true);
                tracing::info!(
                    id = c.backup.id,
                    new_bytes = c.new_bytes,
                    ms = c.duration_ms,
                    "scheduled backup taken"
                );
            }
            Err(e) => {
                metrics.backup_done(false);
                tracing::error!(error = %e, "scheduled backup failed; the next is tried on schedule");
            }
        }
    }
}
