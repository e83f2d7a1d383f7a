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
    weight: AtomicU32,
    /// Set when a failed write left the in-memory document ahead of the disk: whoever was
    /// waiting for the lock must not use it, but load the document again.
    poisoned: std::sync::atomic::AtomicBool,
}

pub struct DocState {
    pub doc: Automerge,
    pub meta: DocMeta,
}

impl LoadedDoc {
    /// `heap` is the measured memory the document holds.
    pub fn new(doc: Automerge, meta: DocMeta, heap: i64) -> Arc<Self> {
        let loaded = Arc::new(LoadedDoc {
            state: RwLock::new(DocState { doc, meta }),
            weight: AtomicU32::new(0),
            poisoned: std::sync::atomic::AtomicBool::new(false),
        });
        loaded.set_heap(heap);
        loaded
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

    pub fn set_heap(&self, heap: i64) {
        let w = heap.clamp(1024, i64::from(u32::MAX));
        self.weight.store(w as u32, Ordering::Relaxed);
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
