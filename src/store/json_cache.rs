//! Documents' materialised JSON held in memory, so a read of an unchanged document (a `GET`, a
//! query's page of results) is a hash lookup and a reference count instead of a RocksDB lookup
//! (block-cache probes for the filter, the index and the data block, per document).
//!
//! The cache mirrors column family `doc_json` and must never be behind it: a commit drops its
//! document's entry before its batch is written (so no read that can already see the commit's
//! feed entry, metadata or index entries answers the old JSON from memory) and puts the new one
//! in after, all under the document's lock. Reads fill it
//! from RocksDB, and a fill must not put back a value a commit has just replaced, so each lock
//! stripe counts its commits: a reader notes the count before reading RocksDB and keeps what it
//! read only if, holding the stripe's lock, the count is unchanged (a commit in between means
//! what it read may be stale; the commit put the fresh entry in itself). The lock is only tried:
//! a stripe busy with a commit means a fresh entry is on its way, and a read never waits for an
//! fsync to fill a cache.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::materialized::{Materialized, MAX_JSON_BYTES};
use super::sharded_cache::Sharded;

/// Bytes an entry costs beyond its key, heads and JSON (the cache's own bookkeeping, the
/// allocations' headers), measured roughly: it keeps the bound honest for small documents.
const ENTRY_OVERHEAD: usize = 160;

/// A small document's entry, for sizing the cache's memory of evicted keys.
const TYPICAL_ENTRY: u64 = 400;

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<Vec<u8>, Materialized> for ByBytes {
    fn weight(&self, k: &Vec<u8>, v: &Materialized) -> u64 {
        (k.len() + v.heads.len() * 32 + v.json.len() + ENTRY_OVERHEAD) as u64
    }
}

pub struct JsonCache {
    /// `None` when the configured size is 0 (disabled).
    entries: Option<Sharded<Vec<u8>, Materialized, ByBytes>>,
    /// Commits per lock stripe (see the module doc).
    commits: Box<[AtomicU64]>,
    /// Tests: run once between a read of RocksDB and its fill, to put a commit exactly there.
    #[cfg(test)]
    pub before_fill: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// A reader's note of its stripe's commit count, taken before it reads RocksDB.
#[derive(Clone, Copy)]
pub struct FillTicket {
    stripe: usize,
    commits: u64,
}

impl JsonCache {
    pub fn new(max_bytes: u64, stripes: usize) -> Self {
        // A shard holds four of the largest entries at least.
        let largest = 4 * (MAX_JSON_BYTES + ENTRY_OVERHEAD) as u64;
        let entries = (max_bytes > 0)
            .then(|| super::sharded_cache::new(max_bytes, largest, TYPICAL_ENTRY, ByBytes));
        JsonCache {
            entries,
            commits: (0..stripes).map(|_| AtomicU64::new(0)).collect(),
            #[cfg(test)]
            before_fill: Mutex::new(None),
        }
    }

    pub fn get(&self, enc: &[u8]) -> Option<Materialized> {
        self.entries.as_ref()?.get(enc)
    }

    /// Taken before reading an entry from RocksDB, to [`JsonCache::fill`] with it after.
    pub fn ticket(&self, stripe: usize) -> FillTicket {
        FillTicket {
            stripe,
            commits: self.commits[stripe].load(Ordering::Acquire),
        }
    }

    /// Keeps an entry read from RocksDB, unless a commit of its stripe came in between (or is
    /// under way: `lock` is the stripe's lock, only tried).
    pub fn fill(&self, ticket: FillTicket, lock: &Mutex<()>, enc: &[u8], m: &Materialized) {
        #[cfg(test)]
        {
            let hook = self.before_fill.lock().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        let Some(entries) = &self.entries else {
            return;
        };
        let Some(_held) = lock.try_lock() else {
            return;
        };
        if self.commits[ticket.stripe].load(Ordering::Acquire) == ticket.commits {
            entries.insert(enc.to_vec(), m.clone());
        }
    }

    /// A commit of the document `enc` is about to be written (the caller holds its lock): from
    /// now until [`JsonCache::committed`], reads of it go to RocksDB, which is never behind.
    pub fn committing(&self, enc: &[u8]) {
        if let Some(entries) = &self.entries {
            entries.remove(enc);
        }
    }

    /// A commit of the document `enc` (in `stripe`, whose lock the caller holds) was written:
    /// its entry is now `m` (`None`: the document has no materialised JSON).
    pub fn committed(&self, stripe: usize, enc: &[u8], m: Option<Materialized>) {
        self.commits[stripe].fetch_add(1, Ordering::AcqRel);
        let Some(entries) = &self.entries else {
            return;
        };
        match m {
            Some(m) => entries.insert(enc.to_vec(), m),
            None => {
                entries.remove(enc);
            }
        }
    }

    /// An entry built by a read under the document's lock (no commit can be in between).
    pub fn insert_locked(&self, enc: &[u8], m: Materialized) {
        if let Some(entries) = &self.entries {
            entries.insert(enc.to_vec(), m);
        }
    }

    pub fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }

    /// (estimated bytes, entries).
    pub fn usage(&self) -> (u64, u64) {
        match &self.entries {
            Some(e) => (e.weight(), e.len() as u64),
            None => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> Materialized {
        Materialized {
            heads: vec![[1; 32]],
            json: bytes::Bytes::copy_from_slice(json.as_bytes()),
        }
    }

    #[test]
    fn a_fill_that_raced_a_commit_is_dropped() {
        let cache = JsonCache::new(1 << 20, 4);
        let lock = Mutex::new(());
        // A reader notes the count, reads the old entry; a commit replaces it meanwhile.
        let t = cache.ticket(2);
        cache.committed(2, b"k", Some(m("{\"v\":2}")));
        cache.fill(t, &lock, b"k", &m("{\"v\":1}"));
        assert_eq!(cache.get(b"k").unwrap().json, "{\"v\":2}");
        // A commit deleting the entry: a racing fill does not bring the old one back.
        let t = cache.ticket(2);
        cache.committed(2, b"k", None);
        cache.fill(t, &lock, b"k", &m("{\"v\":2}"));
        assert!(cache.get(b"k").is_none());
        // Without a commit in between, the fill is kept; a commit elsewhere does not matter.
        let t = cache.ticket(2);
        cache.committed(3, b"other", None);
        cache.fill(t, &lock, b"k", &m("{\"v\":3}"));
        assert_eq!(cache.get(b"k").unwrap().json, "{\"v\":3}");
    }

    #[test]
    fn a_fill_never_waits_for_a_commit_in_progress() {
        let cache = JsonCache::new(1 << 20, 1);
        let lock = Mutex::new(());
        let t = cache.ticket(0);
        let held = lock.lock();
        cache.fill(t, &lock, b"k", &m("{}"));
        drop(held);
        assert!(cache.get(b"k").is_none());
    }

    #[test]
    fn the_bound_holds_and_zero_disables() {
        let cache = JsonCache::new(64 << 10, 1);
        let body = "x".repeat(1000);
        for i in 0..1000u32 {
            cache.insert_locked(&i.to_be_bytes(), m(&body));
        }
        let (bytes, entries) = cache.usage();
        assert!(bytes <= 64 << 10, "{bytes}");
        assert!(entries < 1000 && entries > 0, "{entries}");
        let off = JsonCache::new(0, 1);
        off.insert_locked(b"k", m("{}"));
        assert!(off.get(b"k").is_none());
        assert_eq!(off.usage(), (0, 0));
    }
}
