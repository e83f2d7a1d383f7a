//! The bounded cache of loaded documents, weighed by the heap each one holds (measured, see
//! [`super::memory`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use automerge::Automerge;
use parking_lot::RwLock;

use super::records::DocMeta;

/// A loaded document and its metadata, behind a lock: readers share it, the (single) writer of the
/// document holds it exclusively from applying a change until the change is durable, so no reader
/// sees a write that is not yet acknowledged.
pub struct LoadedDoc {
    pub state: RwLock<DocState>,
    /// Estimated heap: measured when loaded, then grown by each write's estimate.
    weight: AtomicU32,
    /// The heap measured when the document was loaded.
    measured: u32,
    /// Set when a failed write left the in-memory document ahead of the disk: whoever was
    /// waiting for the lock must not use it, but load the document again.
    poisoned: std::sync::atomic::AtomicBool,
}

pub struct DocState {
    pub doc: Automerge,
    pub meta: DocMeta,
    /// Commits left before the JSON of a document that was too large to materialise is built
    /// again (see `materialized::RECHECK_AFTER`); 0: build it on the next commit.
    pub json_skips: u32,
}

impl LoadedDoc {
    /// `heap` is the measured memory the document holds.
    pub fn new(doc: Automerge, meta: DocMeta, heap: i64) -> Arc<Self> {
        let heap = clamp(heap);
        Arc::new(LoadedDoc {
            state: RwLock::new(DocState {
                doc,
                meta,
                json_skips: 0,
            }),
            weight: AtomicU32::new(heap),
            measured: heap,
            poisoned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Accounts for a committed write: `net` is the heap measured across it, `change_bytes` the
    /// size of its changes. Returns true when the estimate has drifted far enough from the last
    /// measurement that the document should be measured again (by reloading it).
    ///
    /// The measurement of a write alone cannot be trusted: the closure that makes the change frees
    /// what it captured (the request's parsed JSON, allocated before) inside the measured span, so
    /// most writes measure negative while the document grows: 1.1-1.5 heap bytes per change byte
    /// for patches, counter increments and text splices (measured on compact copies; a document
    /// grown in place also holds its vectors' spare capacity). A write is therefore counted as at
    /// least three times its change bytes, and once the estimate has doubled (plus 16 KiB) the
    /// document is measured afresh, which keeps reloads geometric: rare, whatever the write rate.
    pub fn add_write(&self, net: i64, change_bytes: usize) -> bool {
        let grown = net.max(3 * change_bytes as i64);
        let heap = clamp(i64::from(self.weight.load(Ordering::Relaxed)) + grown);
        self.weight.store(heap, Ordering::Relaxed);
        u64::from(heap) >= 2 * u64::from(self.measured) + (16 << 10)
    }

    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub fn heap(&self) -> i64 {
        i64::from(self.weight.load(Ordering::Relaxed))
    }
}

fn clamp(heap: i64) -> u32 {
    heap.clamp(1024, i64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_count_at_least_their_changes_and_drift_asks_for_a_measurement() {
        let d = LoadedDoc::new(Automerge::new(), DocMeta::default(), 20_000);
        // A write that measured negative (its request freed inside the span) still counts.
        assert!(!d.add_write(-500, 140));
        assert_eq!(d.heap(), 20_420);
        assert!(
            !d.add_write(10_000, 100),
            "a measured growth larger than the model wins"
        );
        assert_eq!(d.heap(), 30_420);
        let mut remeasure = false;
        for _ in 0..100 {
            remeasure |= d.add_write(0, 140);
        }
        assert!(remeasure, "doubled: measure again");
    }
}

#[derive(Clone)]
pub struct DocCache {
    inner: moka::sync::Cache<Vec<u8>, Arc<LoadedDoc>>,
}

impl DocCache {
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &Vec<u8>, v: &Arc<LoadedDoc>| v.weight.load(Ordering::Relaxed))
            .build();
        DocCache { inner }
    }

    pub fn get(&self, key: &[u8]) -> Option<Arc<LoadedDoc>> {
        self.inner.get(key)
    }

    /// Inserts (or re-inserts, to update the weight after a commit).
    pub fn insert(&self, key: Vec<u8>, doc: Arc<LoadedDoc>) {
        self.inner.insert(key, doc);
    }

    pub fn invalidate(&self, key: &[u8]) {
        self.inner.invalidate(key);
    }

    pub fn weighted_size(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }
}

impl DocCache {
    pub fn clear(&self) {
        self.inner.invalidate_all();
        self.inner.run_pending_tasks();
    }
}
