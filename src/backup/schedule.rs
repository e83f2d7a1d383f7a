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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backups_come_on_schedule_with_retention_until_shutdown() {
        let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let metrics = Metrics::new();
        let store =
            Arc::new(Store::open(data.path(), StoreOptions::default(), metrics.clone()).unwrap());
        let backups = Arc::new(Backups::new(Some(dir.path().to_path_buf()), 2));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            backups.clone(),
            store,
            metrics,
            Duration::from_millis(50),
            stop.clone(),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // Retention keeps two; a fourth id means four backups were taken on schedule.
        while backups.list().unwrap().last().is_none_or(|b| b.id < 4) {
            assert!(std::time::Instant::now() < deadline, "no scheduled backups");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(backups.list().unwrap().len(), 2);
    }
}
