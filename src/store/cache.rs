//! The bounded cache of loaded documents, weighed in (estimated) bytes.
//!
//! An Automerge document in memory is several times larger than its saved bytes; the weight is
//! an estimate from the stored size so the cache bound tracks real memory roughly without
//! walking the document.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use automerge::Automerge;
use parking_lot::RwLock;

use super::records::DocMeta;

/// In-memory bytes per stored byte, and the fixed cost of an (even tiny) document.
const MEMORY_PER_STORED_BYTE: u64 = 6;
const MEMORY_PER_DOC: u64 = 2048;

/// A loaded document and its metadata, behind a lock: readers share it, the (single) writer of the
/// document holds it exclusively from applying a change until the change is durable, so no reader
/// sees a write that is not yet acknowledged.
pub struct LoadedDoc {
    pub state: RwLock<DocState>,
    weight: AtomicU32,
}

pub struct DocState {
    pub doc: Automerge,
    pub meta: DocMeta,
}

impl LoadedDoc {
    pub fn new(doc: Automerge, meta: DocMeta) -> Arc<Self> {
        let loaded = Arc::new(LoadedDoc {
            state: RwLock::new(DocState { doc, meta }),
            weight: AtomicU32::new(0),
        });
        let len = loaded.state.read().meta.stored_len();
        loaded.reweigh(len);
        loaded
    }

    pub fn reweigh(&self, stored_len: u64) {
        let w = stored_len
            .saturating_mul(MEMORY_PER_STORED_BYTE)
            .saturating_add(MEMORY_PER_DOC);
        self.weight
            .store(u32::try_from(w).unwrap_or(u32::MAX), Ordering::Relaxed);
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
