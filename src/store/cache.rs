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
    /// Set when the document was loaded from disk with a change log long enough that loading it
    /// again would cost more than the snapshot (see `Store::commit`): its next commit folds the
    /// log into the snapshot.
    pub fold_log: bool,
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
                fold_log: false,
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

/// The largest document the cache promises to hold, by its estimated heap: a larger one is
/// loaded again by each use (as one larger than the whole cache always was).
const LARGEST_DOC: u64 = 64 << 20;

/// A small document's heap, for sizing the cache's memory of evicted keys.
const TYPICAL_DOC: u64 = 8 << 10;

/// What the cache holds: the document and its weight when it was (re)inserted. The cache must
/// see the same weight when it evicts an entry as when it admitted it, while the document's own
/// estimate grows with each write; a commit re-inserts the document to account for its growth.
#[derive(Clone)]
struct Entry {
    doc: Arc<LoadedDoc>,
    weight: u32,
}

#[derive(Clone)]
struct ByHeap;

impl quick_cache::Weighter<Vec<u8>, Entry> for ByHeap {
    fn weight(&self, _key: &Vec<u8>, entry: &Entry) -> u64 {
        u64::from(entry.weight)
    }
}

#[derive(Clone)]
pub struct DocCache {
    inner: Arc<super::sharded_cache::Sharded<Vec<u8>, Entry, ByHeap>>,
}

impl DocCache {
    pub fn new(max_bytes: u64) -> Self {
        DocCache {
            inner: Arc::new(super::sharded_cache::new(
                max_bytes,
                LARGEST_DOC,
                TYPICAL_DOC,
                ByHeap,
            )),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Arc<LoadedDoc>> {
        self.inner.get(key).map(|e| e.doc)
    }

    /// Inserts (or re-inserts, to update the weight after a commit).
    pub fn insert(&self, key: Vec<u8>, doc: Arc<LoadedDoc>) {
        let weight = doc.weight.load(Ordering::Relaxed);
        self.inner.insert(key, Entry { doc, weight });
    }

    pub fn invalidate(&self, key: &[u8]) {
        self.inner.remove(key);
    }

    pub fn weighted_size(&self) -> u64 {
        self.inner.weight()
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.len() as u64
    }

    pub fn clear(&self) {
        self.inner.clear();
    }
}
