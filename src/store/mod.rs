//! RocksDB storage of Automerge documents.
//!
//! Column families:
//! - `meta`: doc key → [`DocMeta`] (heads, tombstone flag, sizes, feed position);
//! - `snapshots`: doc key → compacted `save()` bytes;
//! - `changes`: doc key 0x00 seq → one incremental Automerge change since the snapshot;
//! - `feed`: feed seq → [`FeedEntry`], the latest entry of each changed document;
//! - `counts`: collection → live documents (i64, kept by a merge operator);
//! - `digest`: the anti-entropy hash tree (see [`digest`]);
//! - `buckets`: digest bucket + doc key → heads, to expand a bucket into its documents;
//! - `sync_states`: client id + doc key → last use and the client's persisted sync state;
//! - `default`: node id and schema version.
//!
//! Every commit is one `WriteBatch` (changes, metadata, compaction, feed entry, count, digest) written
//! with a synced WAL: acknowledged means durable, and a crash can never leave these disagreeing.
//! Concurrent commits to different documents are grouped into shared fsyncs by RocksDB's write
//! group leader. Commits to one document are serialised by a striped lock that is also held while
//! a document is loaded from disk, so no stale copy can ever enter the cache.

pub mod arrived;
pub mod cache;
pub mod db;
pub mod digest;
pub mod error;
pub mod feed;
pub mod index;
pub mod index_registry;
pub mod integrity;
pub mod json_cache;
pub mod keys;
pub mod materialized;
pub mod migrate;
pub mod records;
pub mod sharded_cache;
pub mod sync_states;

use std::sync::Arc;

use automerge::{ActorId, Automerge, ReadDoc};
use parking_lot::{Mutex, RwLock};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use uuid::Uuid;

pub use cache::{DocState, LoadedDoc};
pub use db::{cfs, handle, now_ms};
pub use error::StoreError;
pub use keys::DocKey;
pub use records::{DocMeta, FeedEntry};

use crate::doc::{contain::contained, tombstone, DocError};
use crate::memory;
use crate::metrics::{Metrics, StoreStats};
pub use arrived::Arrived;
use arrived::NewChanges;
use cache::DocCache;
use feed::FeedSeq;

const NODE_ID_KEY: &[u8] = b"node_id";
/// RocksDB's block cache (table blocks read from disk).
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// All memtables together.
const MEMTABLE_BYTES: usize = 64 << 20;
/// One column family's memtable.
const WRITE_BUFFER_BYTES: usize = 16 << 20;
const LOCK_STRIPES: usize = 1024;
/// A document loaded with at least this many changes logged after its snapshot (and a log at
/// least `1 / FOLD_LOG_SNAPSHOT_RATIO` of the snapshot's bytes) has the log folded into the
/// snapshot by its next commit. Applying a logged change costs ~3.5× what the same change costs
/// inside a snapshot (`benches/doc_ops.rs`, `change_log`), and a document that was evicted once
/// is likely to be loaded again; one kept in the cache never pays for the fold.
const FOLD_LOG_CHANGES: usize = 8;
const FOLD_LOG_SNAPSHOT_RATIO: u64 = 4;

/// Storage tuning, from the node's configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bound of the loaded-document cache, in estimated bytes.
    pub cache_bytes: u64,
    /// Bound of the in-memory copies of documents' materialised JSON (0: none kept).
    pub json_cache_bytes: u64,
    /// Incrementals are folded into a new snapshot once they exceed both the snapshot's size and
    /// this many bytes.
    pub compact_min_bytes: u64,
    /// Sync the WAL before acknowledging a write. Only tests and benchmarks of the ceiling turn
    /// this off.
    pub sync_writes: bool,
    /// Largest stored size a local commit may give a document.
    pub max_document_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 256 << 20,
            json_cache_bytes: 64 << 20,
            compact_min_bytes: 16 << 10,
            sync_writes: true,
            max_document_bytes: 64 << 20,
        }
    }
}

#[cfg(test)]
type TestHook = Box<dyn FnOnce(&Store) + Send>;

/// Where a commit's changes came from: local writes are pushed to peers, changes received from
/// peers are not (their origin already pushes them, and anti-entropy repairs the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Peer,
}

/// A durable commit, as announced to subscribers (replication's eager push, live feeds).
#[derive(Debug, Clone)]
pub struct CommitEvent {
    pub key: DocKey,
    /// The new Automerge changes, in their binary encoding, when they total at most
    /// [`INLINE_CHANGE_BYTES`]; larger ones are read from the store by whoever needs them (after
    /// [`CommitEvent::before`]). The broadcast keeps its last events alive, and peers' push queues
    /// hold events: this bounds what both can pin.
    pub changes: Option<Vec<Vec<u8>>>,
    /// The document's heads before the commit.
    pub before: Vec<[u8; 32]>,
    pub heads: Vec<[u8; 32]>,
    pub origin: Origin,
}

/// Most change bytes a [`CommitEvent`] carries.
pub const INLINE_CHANGE_BYTES: usize = 4 << 10;
/// Commit events the broadcast keeps for subscribers that fall behind.
const EVENTS: usize = 4096;

/// What a write did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The metadata after the write.
    pub meta: DocMeta,
    /// Whether the write made any change (a no-op write stores nothing).
    pub changed: bool,
    /// Whether the document did not exist (or was deleted) before and is live now.
    pub created: bool,
}

pub struct Store {
    db: Arc<DB>,
    db_opts: Options,
    block_cache: rocksdb::Cache,
    cache: DocCache,
    json_cache: json_cache::JsonCache,
    /// Tests: run once by a commit after its batch is written, before memory is updated.
    #[cfg(test)]
    after_write: Mutex<Option<TestHook>>,
    /// Tests: run once by a commit after it staged its batch (and read the index registry),
    /// before the batch is written.
    #[cfg(test)]
    before_write: Mutex<Option<TestHook>>,
    /// Tests: run once by an index build step after it listed its page, before it locks it.
    #[cfg(test)]
    after_listing: Mutex<Option<TestHook>>,
    stripes: Box<[Mutex<()>]>,
    feed: FeedSeq,
    node_id: Uuid,
    actor: ActorId,
    options: StoreOptions,
    metrics: Arc<Metrics>,
    events: tokio::sync::broadcast::Sender<Arc<CommitEvent>>,
    tree: digest::Tree,
    /// Persisted client sync states per owner, counted on first use (see `sync_states`).
    sync_state_counts: Mutex<std::collections::HashMap<String, u64>>,
    /// Live documents per collection: the `counts` column family, mirrored. Commits add their
    /// deltas to both; reads use this, because a count read from RocksDB folds every merge
    /// operand still in the memtable (one per create or delete), which costs milliseconds once
    /// a bulk load has left hundreds of thousands there.
    counts: Mutex<std::collections::BTreeMap<String, i64>>,
    /// The secondary indexes this node knows (see `index`).
    indexes: index_registry::Registry,
    /// Written while an index definition changes (its commit through the registry update);
    /// read by every other commit from reading the registry until its batch is written, and by
    /// each build step. So a commit that read the registry before an index was installed is
    /// written before the install, and the build (which lists committed documents) sees it;
    /// and a commit that staged entries for an index is written before that index's entries
    /// are deleted. Taken after document stripes, never before.
    index_admin: RwLock<()>,
    /// Held by `define_index` and `drop_index` from checking the registry to writing the
    /// definition, so two callers of this node racing on one name cannot both be told theirs
    /// was created. Taken before any document stripe.
    index_define: Mutex<()>,
}

fn counts_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let decode = |b: &[u8]| <[u8; 8]>::try_from(b).map(i64::from_le_bytes).unwrap_or(0);
    let mut total = existing.map(decode).unwrap_or(0);
    for op in operands {
        total = total.saturating_add(decode(op));
    }
    Some(total.to_le_bytes().to_vec())
}

/// Calls `f` with the key and bytes of each of the document's logged changes, in order; returns
/// how many there were.
fn scan_log(db: &DB, key: &DocKey, mut f: impl FnMut(&[u8], &[u8])) -> Result<usize, StoreError> {
    let prefix = key.changes_prefix();
    // Bounded: files and blocks past the document's changes are not read.
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_upper_bound(keys::prefix_end(&prefix));
    let mut iter = db.raw_iterator_cf_opt(handle(db, cfs::CHANGES)?, ro);
    iter.seek(&prefix);
    let mut logged = 0;
    while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
        if !k.starts_with(&prefix) {
            break;
        }
        f(k, v);
        logged += 1;
        iter.next();
    }
    iter.status()?;
    Ok(logged)
}

/// Appends the document's stored incremental changes (in order) to `out`; returns how many.
fn append_changes(db: &DB, key: &DocKey, out: &mut Vec<u8>) -> Result<usize, StoreError> {
    scan_log(db, key, |_, change| out.extend_from_slice(change))
}

/// A document as stored: its snapshot and the changes after it (Automerge work contained, so
/// corrupt bytes become an error). Used by the store and by migrations, which have no store.
pub(crate) fn load_stored(db: &DB, key: &DocKey) -> Result<Automerge, StoreError> {
    load_stored_counted(db, key).map(|(doc, _)| doc)
}

/// [`load_stored`], and how many changes were logged after the snapshot.
fn load_stored_counted(db: &DB, key: &DocKey) -> Result<(Automerge, usize), StoreError> {
    let enc = key.encode();
    let snapshot = db.get_pinned_cf(handle(db, cfs::SNAPSHOTS)?, &enc)?;
    let mut changes = Vec::new();
    let logged = append_changes(db, key, &mut changes)?;
    let doc = contained(&key.to_string(), || -> Result<Automerge, DocError> {
        let mut doc = match &snapshot {
            Some(s) => {
                Automerge::load(s).map_err(|e| DocError::Corrupt(format!("snapshot: {e}")))?
            }
            None => Automerge::new(),
        };
        if !changes.is_empty() {
            doc.load_incremental(&changes)
                .map_err(|e| DocError::Corrupt(format!("changes: {e}")))?;
        }
        Ok(doc)
    })??;
    Ok((doc, logged))
}

/// The keys of the document's logged changes, to delete them when the log is folded into a
/// snapshot. Point deletes, not a range: every range deletion in a memtable makes the next read
/// of the column family rebuild the memtable's list of ranges, which frequent folds would make
/// quadratic.
fn logged_change_keys(db: &DB, key: &DocKey) -> Result<Vec<Box<[u8]>>, StoreError> {
    let mut out = Vec::new();
    scan_log(db, key, |k, _| out.push(k.into()))?;
    Ok(out)
}

/// A live document's JSON and the heads it is at.
#[derive(Debug, Clone)]
pub struct CurrentJson {
    pub json: serde_json::Map<String, serde_json::Value>,
    pub heads: Vec<[u8; 32]>,
}

impl CurrentJson {
    fn of(m: materialized::Materialized) -> Result<Self, StoreError> {
        Ok(CurrentJson {
            json: m.parse()?,
            heads: m.heads,
        })
    }

    /// The version string clients see (the heads, as in an ETag without quotes).
    pub fn version(&self) -> String {
        crate::doc::heads::format(&crate::doc::heads::from_stored(&self.heads))
    }
}

impl Store {
    /// Opens (creating if needed) the store in `path`, migrating it to the current schema.
    pub fn open(
        path: &std::path::Path,
        options: StoreOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let fresh = !path.join("CURRENT").exists();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        db_opts.set_max_background_jobs(2);
        db_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Memtables of all column families together: without this bound each of the eight grows
        // to its own write buffer before it flushes (half a gigabyte in a soak test).
        db_opts.set_db_write_buffer_size(MEMTABLE_BYTES);
        db_opts.enable_statistics();
        db_opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptTimers);
        let block_cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&block_cache);
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache, so their memory is bounded by it
        // instead of growing with the data (level 0's stay pinned: they are read on every get).
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Partitioned: a file's index and filter are cut into blocks of the data blocks' size
        // under a small pinned top level. Whole, each is about a megabyte per 64 MB file, and a
        // cache too small for all of them (a million documents against 64 MiB) read and
        // decompressed a megabyte to find one key: profiled, most of a cold document load.
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        let descriptors = cfs::ALL.iter().map(|name| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_block_based_table_factory(&table);
            // Smaller flushes: shorter stalls, a smaller WAL preallocation, and less free space
            // needed to resume after the disk was full.
            o.set_write_buffer_size(WRITE_BUFFER_BYTES);
            if *name == cfs::COUNTS {
                o.set_merge_operator_associative("i64_add", counts_merge);
            }
            if *name == cfs::DIGEST {
                o.set_merge_operator_associative("u64_xor", digest::xor_merge);
            }
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, descriptors)?;
        migrate::run(&db, fresh)?;

        let node_id = match db.get(NODE_ID_KEY)? {
            Some(b) => Uuid::from_slice(&b).map_err(|_| StoreError::Corrupt("node id".into()))?,
            None => {
                let id = Uuid::new_v4();
                let mut o = WriteOptions::default();
                o.set_sync(true);
                db.put_opt(NODE_ID_KEY, id.as_bytes(), &o)?;
                id
            }
        };
        let last_feed = {
            let feed_cf = handle(&db, cfs::FEED)?;
            match db.iterator_cf(feed_cf, IteratorMode::End).next() {
                Some(item) => decode_seq(&item?.0)?,
                None => 0,
            }
        };
        let tree = digest::Tree::load(&db, handle(&db, cfs::DIGEST)?)?;
        let mut counts = std::collections::BTreeMap::new();
        for item in db.iterator_cf(handle(&db, cfs::COUNTS)?, IteratorMode::Start) {
            let (k, v) = item?;
            let n = <[u8; 8]>::try_from(v.as_ref())
                .map(i64::from_le_bytes)
                .unwrap_or(0);
            counts.insert(String::from_utf8_lossy(&k).into_owned(), n);
        }
        let store = Store {
            tree,
            db: Arc::new(db),
            db_opts,
            block_cache,
            cache: DocCache::new(options.cache_bytes),
            json_cache: json_cache::JsonCache::new(options.json_cache_bytes, LOCK_STRIPES),
            #[cfg(test)]
            after_write: Mutex::new(None),
            #[cfg(test)]
            before_write: Mutex::new(None),
            #[cfg(test)]
            after_listing: Mutex::new(None),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            sync_state_counts: Mutex::new(Default::default()),
            counts: Mutex::new(counts),
            feed: FeedSeq::new(last_feed),
            actor: ActorId::from(node_id.as_bytes().as_slice()),
            node_id,
            options,
            metrics,
            events: tokio::sync::broadcast::Sender::new(EVENTS),
            indexes: Default::default(),
            index_admin: RwLock::new(()),
            index_define: Mutex::new(()),
        };
        store.load_indexes()?;
        Ok(store)
    }

    /// The secondary indexes this node knows, and their build states.
    pub fn indexes(&self) -> &index_registry::Registry {
        &self.indexes
    }

    /// Every durable commit, in commit order per document. A subscriber that falls behind loses
    /// events (it is told so) rather than slowing writers.
    pub fn subscribe_commits(&self) -> tokio::sync::broadcast::Receiver<Arc<CommitEvent>> {
        self.events.subscribe()
    }

    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// Makes this store a new replica: a new node id (and with it a new Automerge actor id),
    /// and no client sync states. For a copy of another node's data (a restored backup): two
    /// live nodes committing under one actor id with the same sequence numbers would corrupt
    /// every replica, and the clients' sync states describe exchanges with the other node.
    /// Takes effect when the store is next opened; returns the new id.
    pub fn become_new_replica(&self) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        let mut batch = WriteBatch::default();
        batch.put(NODE_ID_KEY, id.as_bytes());
        let cf = self.cf(cfs::SYNC_STATES)?;
        let mut iter = self.db.raw_iterator_cf(cf);
        iter.seek_to_first();
        while let Some(k) = iter.key() {
            batch.delete_cf(cf, k);
            iter.next();
        }
        iter.status()?;
        let mut o = WriteOptions::default();
        o.set_sync(true);
        self.db.write_opt(batch, &o)?;
        Ok(id)
    }

    /// Flushes memtables and the WAL; called on graceful shutdown so the next start replays nothing.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        for name in cfs::ALL {
            self.db.flush_cf(handle(&self.db, name)?)?;
        }
        Ok(())
    }

    fn db(&self) -> &DB {
        &self.db
    }

    /// The RocksDB database itself, for machinery that works on whole databases (backups).
    pub(crate) fn rocks(&self) -> &DB {
        &self.db
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        handle(&self.db, name)
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<()> {
        self.stripe_at(self.stripe_index(key))
    }

    fn stripe_index(&self, key: &[u8]) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        (h as usize) % self.stripes.len()
    }

    fn stripe_at(&self, i: usize) -> &Mutex<()> {
        &self.stripes[i]
    }

    /// Writes a batch with the store's durability (a synced WAL unless tests turned it off).
    fn write_batch(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.options.sync_writes);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// A batch of derived data whose loss in a crash only repeats work (the caller says why):
    /// written to the log, not synced.
    fn write_batch_unsynced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.db.write(batch)?;
        Ok(())
    }

    fn read_meta(&self, key: &[u8]) -> Result<Option<DocMeta>, StoreError> {
        match self.db.get_pinned_cf(self.cf(cfs::META)?, key)? {
            None => Ok(None),
            Some(b) => records::decode("document metadata", &b).map(Some),
        }
    }

    /// Loads a document from disk (Automerge work contained: corrupt bytes become an error).
    fn load_from_disk(&self, key: &DocKey, meta: DocMeta) -> Result<Arc<LoadedDoc>, StoreError> {
        let what = key.to_string();
        let meter = memory::Meter::start();
        let (mut doc, logged) = load_stored_counted(&self.db, key)?;
        doc.set_actor(self.actor.clone());
        let stored: Vec<[u8; 32]> = doc.get_heads().iter().map(|h| h.0).collect();
        if stored != meta.heads {
            // The metadata is written in the same batch as the changes, so this means damage.
            return Err(DocError::Corrupt(format!(
                "{what}: stored changes do not reach the recorded heads"
            ))
            .into());
        }
        let fold_log = logged >= FOLD_LOG_CHANGES
            && meta.incr_len * FOLD_LOG_SNAPSHOT_RATIO >= meta.snapshot_len;
        let loaded = LoadedDoc::new(doc, meta, meter.retained());
        loaded.state.write().fold_log = fold_log;
        Ok(loaded)
    }

    /// The cached document, loading it if needed; `None` when it does not exist. Takes the
    /// document's stripe lock for a load, unless the caller already holds it.
    fn get_loaded(
        &self,
        key: &DocKey,
        enc: &[u8],
        locked: bool,
    ) -> Result<Option<Arc<LoadedDoc>>, StoreError> {
        if let Some(d) = self.cache.get(enc) {
            self.metrics.cache_hits.inc();
            return Ok(Some(d));
        }
        let _guard = if locked {
            None
        } else {
            Some(self.stripe(enc).lock())
        };
        if let Some(d) = self.cache.get(enc) {
            self.metrics.cache_hits.inc();
            return Ok(Some(d));
        }
        self.metrics.cache_misses.inc();
        let Some(meta) = self.read_meta(enc)? else {
            return Ok(None);
        };
        let loaded = self.load_from_disk(key, meta)?;
        self.cache.insert(enc.to_vec(), loaded.clone());
        Ok(Some(loaded))
    }

    /// The cached document, or one loaded from disk without entering the cache (for bulk reads
    /// that must not evict the working set); the caller holds the document's lock.
    fn loaded_uncached(
        &self,
        key: &DocKey,
        enc: &[u8],
    ) -> Result<Option<Arc<LoadedDoc>>, StoreError> {
        if let Some(d) = self.cache.get(enc) {
            return Ok(Some(d));
        }
        match self.read_meta(enc)? {
            Some(meta) => self.load_from_disk(key, meta).map(Some),
            None => Ok(None),
        }
    }

    /// Runs `f` on the document, or returns `None` when it does not exist (deleted documents do
    /// exist: `f` sees `meta.deleted`).
    pub fn read<R>(
        &self,
        key: &DocKey,
        f: impl FnOnce(&Automerge, &DocMeta) -> R,
    ) -> Result<Option<R>, StoreError> {
        let enc = key.encode();
        for _ in 0..8 {
            let Some(loaded) = self.get_loaded(key, &enc, false)? else {
                return Ok(None);
            };
            let state = loaded.state.read();
            if loaded.is_poisoned() {
                continue; // a write failed while we waited: load again from disk
            }
            let r = contained(&key.to_string(), || f(&state.doc, &state.meta))?;
            return Ok(Some(r));
        }
        Err(StoreError::Corrupt(format!(
            "{key}: could not get a consistent copy"
        )))
    }

    /// The document as stored, with its whole history: its snapshot followed by the changes
    /// after it, which together are a valid Automerge file (`load` / `load_incremental` take
    /// it), and its metadata; `None` when it does not exist. Read under the document's lock, so
    /// no commit or compaction lands between the parts; the document is not loaded.
    pub fn stored_bytes(&self, key: &DocKey) -> Result<Option<(Vec<u8>, DocMeta)>, StoreError> {
        let enc = key.encode();
        let _guard = self.stripe(&enc).lock();
        let Some(meta) = self.read_meta(&enc)? else {
            return Ok(None);
        };
        let mut out = self
            .db
            .get_cf(self.cf(cfs::SNAPSHOTS)?, &enc)?
            .unwrap_or_default();
        append_changes(&self.db, key, &mut out)?;
        Ok(Some((out, meta)))
    }

    /// A document's materialised JSON from memory, counted as a hit. A miss is counted by the
    /// caller once it goes to RocksDB, so a read that tries memory twice (the async path, then
    /// the blocking one) counts once.
    fn cached_json(&self, enc: &[u8]) -> Option<materialized::Materialized> {
        let m = self.json_cache.get(enc);
        if m.is_some() {
            self.metrics.json_cache_hits.inc();
        }
        m
    }

    /// The document's materialised JSON, when it has one (it is live and not too large).
    pub fn materialized(
        &self,
        key: &DocKey,
    ) -> Result<Option<materialized::Materialized>, StoreError> {
        let enc = key.encode();
        if let Some(m) = self.cached_json(&enc) {
            return Ok(Some(m));
        }
        self.metrics.json_cache_misses.inc();
        self.materialized_from_disk(&enc)
    }

    /// The materialised JSON read from RocksDB, kept in memory unless a commit came between.
    fn materialized_from_disk(
        &self,
        enc: &[u8],
    ) -> Result<Option<materialized::Materialized>, StoreError> {
        let stripe = self.stripe_index(enc);
        let ticket = self.json_cache.ticket(stripe);
        match self.db.get_pinned_cf(self.cf(cfs::DOC_JSON)?, enc)? {
            None => Ok(None),
            Some(b) => {
                let m = materialized::decode(&b)?;
                self.json_cache
                    .fill(ticket, self.stripe_at(stripe), enc, &m);
                Ok(Some(m))
            }
        }
    }

    /// [`Store::materialized`] answered from memory alone (memtables and the block cache), for
    /// a caller on an async worker that must not wait for the disk. `None` whenever that cannot
    /// answer (the entry's block is not cached, the document has no entry, an error): the caller
    /// then takes the blocking path, which meets any error again.
    pub fn materialized_in_memory(&self, key: &DocKey) -> Option<materialized::Materialized> {
        let enc = key.encode();
        if let Some(m) = self.cached_json(&enc) {
            return Some(m);
        }
        let stripe = self.stripe_index(&enc);
        let ticket = self.json_cache.ticket(stripe);
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_read_tier(rocksdb::ReadTier::BlockCache);
        let cf = self.cf(cfs::DOC_JSON).ok()?;
        let bytes = self.db.get_pinned_cf_opt(cf, &enc, &ro).ok()??;
        let m = materialized::decode(&bytes).ok()?;
        // Counted only here: when RocksDB's memory could not answer, the caller's blocking read
        // counts the miss.
        self.metrics.json_cache_misses.inc();
        self.json_cache
            .fill(ticket, self.stripe_at(stripe), &enc, &m);
        Some(m)
    }

    /// A live document's JSON and heads, from its materialised copy or, when it has none, built
    /// from the document (and kept for the next read); `None` when it does not exist or is
    /// deleted.
    pub fn current_json(&self, key: &DocKey) -> Result<Option<CurrentJson>, StoreError> {
        if let Some(m) = self.materialized(key)? {
            return CurrentJson::of(m).map(Some);
        }
        self.materialize(key)
    }

    /// [`Store::current_json`] for a caller whose [`Store::materialized`] just found no copy (and
    /// counted that miss): the copy is built, without counting the same miss again.
    pub fn current_json_after_miss(&self, key: &DocKey) -> Result<Option<CurrentJson>, StoreError> {
        self.materialize(key)
    }

    /// [`Store::current_json`] of many documents at once, in the order of `keys`. Copies held in
    /// memory are taken from there; the others are read with one batched lookup (RocksDB's
    /// MultiGet shares the block-cache probes and the file reads among the keys), which is what
    /// a query reading a page of documents spent most of its time on; a document without a copy
    /// is built as one read would. Each copy is at least as new as every commit acknowledged
    /// before the call; they are not one snapshot (a page may mix older and newer copies).
    pub fn current_json_many(
        &self,
        keys: &[DocKey],
    ) -> Result<Vec<Option<CurrentJson>>, StoreError> {
        let cf = self.cf(cfs::DOC_JSON)?;
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| k.encode()).collect();
        let mut found: Vec<Option<materialized::Materialized>> =
            encoded.iter().map(|e| self.cached_json(e)).collect();
        // Only what memory did not hold goes to RocksDB, in one batch.
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        self.metrics.json_cache_misses.inc_by(missing.len() as u64);
        let tickets: Vec<_> = missing
            .iter()
            .map(|&i| self.json_cache.ticket(self.stripe_index(&encoded[i])))
            .collect();
        let got = self
            .db
            .batched_multi_get_cf(cf, missing.iter().map(|&i| &encoded[i]), false);
        for ((&i, ticket), entry) in missing.iter().zip(tickets).zip(got) {
            if let Some(bytes) = entry? {
                let m = materialized::decode(&bytes)?;
                let lock = self.stripe(&encoded[i]);
                self.json_cache.fill(ticket, lock, &encoded[i], &m);
                found[i] = Some(m);
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (key, m) in keys.iter().zip(found) {
            out.push(match m {
                Some(m) => Some(CurrentJson::of(m)?),
                // No copy in memory or in RocksDB: built as one read would.
                None => self.materialize(key)?,
            });
        }
        Ok(out)
    }

    /// Builds the JSON of a document that has no materialised copy (a write dropped it) and
    /// keeps it, under the document's lock, so no commit slips between reading the document and
    /// keeping the copy: a copy is never older than the commit that follows it.
    fn materialize(&self, key: &DocKey) -> Result<Option<CurrentJson>, StoreError> {
        let enc = key.encode();
        let _guard = self.stripe(&enc).lock();
        // Another read may have built it while this one waited for the lock (its miss was
        // counted by the read that came here).
        if let Some(m) = self.json_cache.get(&enc) {
            return CurrentJson::of(m).map(Some);
        }
        if let Some(m) = self.materialized_from_disk(&enc)? {
            return CurrentJson::of(m).map(Some);
        }
        let Some(loaded) = self.get_loaded(key, &enc, true)? else {
            return Ok(None);
        };
        let state = loaded.state.read();
        if state.meta.deleted {
            return Ok(None);
        }
        let doc = &state.doc;
        let json = contained(&key.to_string(), || {
            serde_json::Value::Object(crate::doc::json::to_json(doc, None))
        })?;
        if let Some(bytes) = materialized::serialise(&json)? {
            // Not synced: the copy is derived, and rebuilt when a crash loses it. The WAL is
            // written in order, so a later synced commit (which drops it) cannot survive
            // without it.
            let entry = materialized::encode(&state.meta.heads, &bytes);
            match self.db.put_cf(self.cf(cfs::DOC_JSON)?, &enc, entry) {
                Ok(()) => self.json_cache.insert_locked(
                    &enc,
                    materialized::Materialized {
                        heads: state.meta.heads.clone(),
                        json: bytes.into(),
                    },
                ),
                Err(e) => {
                    tracing::debug!(doc = %key, error = %e, "could not keep a materialised copy")
                }
            }
        }
        let serde_json::Value::Object(json) = json else {
            return Ok(None);
        };
        Ok(Some(CurrentJson {
            json,
            heads: state.meta.heads.clone(),
        }))
    }

    /// Metadata only, without loading the document.
    pub fn meta(&self, key: &DocKey) -> Result<Option<DocMeta>, StoreError> {
        let enc = key.encode();
        if let Some(d) = self.cache.get(&enc) {
            return Ok(Some(d.state.read().meta.clone()));
        }
        self.read_meta(&enc)
    }

    /// [`Store::meta`] of many documents, in the order of `keys`, with one batched read.
    pub fn meta_many(&self, keys: &[DocKey]) -> Result<Vec<Option<DocMeta>>, StoreError> {
        let cf = self.cf(cfs::META)?;
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| k.encode()).collect();
        self.db
            .batched_multi_get_cf(cf, &encoded, false)
            .into_iter()
            .map(|r| match r? {
                None => Ok(None),
                Some(b) => records::decode("document metadata", &b).map(Some),
            })
            .collect()
    }

    /// Runs `f` on the document (a new, empty one when it does not exist: `meta` is `None` then),
    /// and durably stores whatever changes `f` made, in one batch, before returning.
    ///
    /// `f` must leave the document unchanged when it fails (Automerge transactions roll back).
    pub fn write<R, E>(
        &self,
        key: &DocKey,
        f: impl FnOnce(&mut Automerge, Option<&DocMeta>) -> Result<R, E>,
    ) -> Result<(R, Committed), E>
    where
        E: From<StoreError>,
    {
        self.write_from(Origin::Local, key, f)
    }

    /// [`Store::write`], recording where the changes came from.
    pub fn write_from<R, E>(
        &self,
        origin: Origin,
        key: &DocKey,
        f: impl FnOnce(&mut Automerge, Option<&DocMeta>) -> Result<R, E>,
    ) -> Result<(R, Committed), E>
    where
        E: From<StoreError>,
    {
        self.write_arrived(origin, key, |doc, meta| f(doc, meta).map(|v| (v, None)))
    }

    /// [`Store::write_from`] for a writer that applies received chunks: it may return them as
    /// [`Arrived`], and they are stored as they are when the document shows they are exactly the
    /// changes it applied, instead of being rebuilt by Automerge.
    pub fn write_arrived<R, E>(
        &self,
        origin: Origin,
        key: &DocKey,
        f: impl FnOnce(&mut Automerge, Option<&DocMeta>) -> Result<(R, Option<Arrived>), E>,
    ) -> Result<(R, Committed), E>
    where
        E: From<StoreError>,
    {
        let enc = key.encode();
        let _guard = self.stripe(&enc).lock();
        let loaded = match self.get_loaded(key, &enc, true)? {
            Some(l) => l,
            None => {
                let meter = memory::Meter::start();
                let doc = Automerge::new().with_actor(self.actor.clone());
                LoadedDoc::new(doc, DocMeta::default(), meter.retained())
            }
        };
        let mut state = loaded.state.write();
        if loaded.is_poisoned() {
            // Cannot happen: a poisoned copy leaves the cache under this stripe's lock, which we
            // hold. Refuse rather than build on a copy that is ahead of the disk.
            return Err(E::from(StoreError::Corrupt(format!(
                "{key}: stale copy; retry"
            ))));
        }
        let existed = !state.meta.heads.is_empty();
        let before = state.doc.get_heads();
        let was_live = existed && !state.meta.deleted;
        let meta_in = if existed {
            Some(state.meta.clone())
        } else {
            None
        };

        let missing_before = state.doc.get_missing_deps(&[]);
        let changes_before = state.doc.stats().num_changes;
        let meter = memory::Meter::start();
        let outcome = contained(&key.to_string(), || f(&mut state.doc, meta_in.as_ref()));
        let grown = meter.retained();
        let (value, arrived) = match outcome {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                // Most failed writes (412, 404, a refused op) leave the document as it was:
                // Automerge transactions roll back, so the cached copy stays and a retry needs no
                // reload. But the closure may have left something in memory that is not on disk
                // (changes applied, or queued for missing dependencies, before it failed): then
                // nobody may read this copy again.
                let unchanged = state.doc.get_heads() == before
                    && state.doc.get_missing_deps(&[]) == missing_before;
                if !unchanged {
                    loaded.poison();
                    self.cache.invalidate(&enc);
                }
                drop(state);
                return Err(e);
            }
            Err(panic) => {
                loaded.poison();
                self.cache.invalidate(&enc);
                drop(state);
                return Err(E::from(StoreError::Doc(panic)));
            }
        };

        let new_changes = match arrived
            .and_then(|a| a.verify(&state.doc, changes_before, missing_before.len()))
        {
            Some(kept) => kept,
            None => NewChanges::Built(state.doc.get_changes(&before)),
        };
        if new_changes.is_empty() {
            let meta = state.meta.clone();
            return Ok((
                value,
                Committed {
                    meta,
                    changed: false,
                    created: false,
                },
            ));
        }
        let change_bytes = new_changes.bytes();
        match self.commit(key, &enc, &mut state, new_changes, was_live, origin) {
            Ok(meta) => {
                let created = !was_live && !meta.deleted;
                let remeasure = loaded.add_write(grown, change_bytes);
                drop(state);
                if remeasure {
                    // Estimates drift: the next use loads it from disk, measured exactly.
                    self.cache.invalidate(&enc);
                } else {
                    self.cache.insert(enc, loaded);
                }
                Ok((
                    value,
                    Committed {
                        meta,
                        changed: true,
                        created,
                    },
                ))
            }
            Err(e) => {
                // The in-memory document is ahead of the disk: nobody may read it again.
                loaded.poison();
                self.cache.invalidate(&enc);
                drop(state);
                Err(E::from(e))
            }
        }
    }

    /// Writes the batch for one commit. On success `state.meta` is the new metadata.
    fn commit(
        &self,
        key: &DocKey,
        enc: &[u8],
        state: &mut DocState,
        changes: NewChanges,
        was_live: bool,
        origin: Origin,
    ) -> Result<DocMeta, StoreError> {
        let mut meta = state.meta.clone();
        let old_heads = std::mem::take(&mut meta.heads);
        let mut batch = WriteBatch::default();
        let changes_cf = self.cf(cfs::CHANGES)?;
        let raw = match changes {
            NewChanges::Built(changes) => changes
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect::<Vec<_>>(),
            NewChanges::Changes(chunks) => chunks,
            NewChanges::Document(saved) => {
                // The document was empty: its one saved form is all of it. Peers that need its
                // changes read them from the store (the event carries none).
                batch.put_cf(self.cf(cfs::SNAPSHOTS)?, enc, &saved);
                meta.snapshot_len = saved.len() as u64;
                Vec::new()
            }
        };
        let doc = &state.doc;
        let deleted = contained("tombstone check", || tombstone::is_deleted(doc, None))?;
        meta.deleted = deleted;
        meta.heads = doc.get_heads().iter().map(|h| h.0).collect();
        meta.updated_ms = now_ms();

        let logged_len = meta.incr_len + raw.iter().map(|b| b.len() as u64).sum::<u64>();
        let outgrown = logged_len > meta.snapshot_len.max(self.options.compact_min_bytes);
        if !(outgrown || std::mem::take(&mut state.fold_log)) {
            for bytes in &raw {
                batch.put_cf(changes_cf, key.change_key(meta.next_seq), bytes);
                meta.next_seq += 1;
            }
            meta.incr_len = logged_len;
        } else {
            // The log and this commit's changes become one new snapshot.
            let snapshot = contained("snapshot", || doc.save())?;
            batch.put_cf(self.cf(cfs::SNAPSHOTS)?, enc, &snapshot);
            for logged in logged_change_keys(&self.db, key)? {
                batch.delete_cf(changes_cf, logged);
            }
            meta.next_seq += raw.len() as u64;
            meta.snapshot_len = snapshot.len() as u64;
            meta.incr_len = 0;
            self.metrics.compactions.inc();
        }

        if origin == Origin::Local && meta.stored_len() > self.options.max_document_bytes {
            return Err(StoreError::DocumentTooLarge {
                limit: self.options.max_document_bytes,
            });
        }

        let bucket = digest::bucket(enc);
        let leaf_delta = digest::leaf(enc, &old_heads) ^ digest::leaf(enc, &meta.heads);
        let digest_cf = self.cf(cfs::DIGEST)?;
        for node in digest::tree_keys(bucket) {
            batch.merge_cf(digest_cf, node, leaf_delta.to_le_bytes());
        }
        batch.put_cf(
            self.cf(cfs::BUCKETS)?,
            digest::bucket_entry_key(bucket, enc),
            digest::encode_heads(&meta.heads),
        );

        // See `index_admin`: held to the end, past the registry update.
        let system = key.collection() == index_registry::INDEXES_COLLECTION;
        let _admin_write = system.then(|| self.index_admin.write());
        let _admin_read = (!system).then(|| self.index_admin.read());
        // Built once per commit: the materialised copy and the index entries both use it.
        let json = if deleted {
            None
        } else if state.json_skips > 0 {
            // Too large to keep a few commits ago: most likely still so.
            state.json_skips -= 1;
            None
        } else {
            Some(contained("materialise", || {
                serde_json::Value::Object(crate::doc::json::to_json(&state.doc, None))
            })?)
        };
        let kept = match &json {
            Some(j) => materialized::serialise(j)?,
            None => None,
        };
        if json.is_some() && kept.is_none() {
            state.json_skips = materialized::RECHECK_AFTER;
        }
        materialized::stage(
            &mut batch,
            self.cf(cfs::DOC_JSON)?,
            enc,
            &meta.heads,
            kept.as_deref(),
        );
        let registry_change = self.index_commit(&mut batch, key, doc, deleted, json.as_ref())?;

        let delta = i64::from(!deleted) - i64::from(was_live);
        if delta != 0 {
            batch.merge_cf(
                self.cf(cfs::COUNTS)?,
                key.collection().as_bytes(),
                delta.to_le_bytes(),
            );
        }

        let feed_cf = self.cf(cfs::FEED)?;
        let seq = self.feed.begin();
        if let Some(old) = meta.feed_seq {
            batch.delete_cf(feed_cf, old.to_be_bytes());
        }
        meta.feed_seq = Some(seq);
        let entry = FeedEntry {
            collection: key.collection().to_string(),
            id: key.id().to_string(),
            heads: meta.heads.clone(),
            deleted,
        };
        #[cfg(test)]
        {
            let hook = self.before_write.lock().take();
            if let Some(hook) = hook {
                hook(self);
            }
        }
        self.json_cache.committing(enc);
        let result = (|| {
            batch.put_cf(feed_cf, seq.to_be_bytes(), records::encode(&entry)?);
            batch.put_cf(self.cf(cfs::META)?, enc, records::encode(&meta)?);
            let mut wo = WriteOptions::default();
            wo.set_sync(self.options.sync_writes);
            self.db.write_opt(batch, &wo)?;
            Ok::<_, StoreError>(())
        })();
        self.feed.finish(seq, result.is_ok());
        if let Err(e) = &result {
            if e.is_no_space() {
                self.metrics.writes_refused_no_space.inc();
            }
        }
        result?;
        #[cfg(test)]
        {
            let hook = self.after_write.lock().take();
            if let Some(hook) = hook {
                hook(self);
            }
        }
        self.json_cache.committed(
            self.stripe_index(enc),
            enc,
            kept.map(|json| materialized::Materialized {
                heads: meta.heads.clone(),
                json: json.into(),
            }),
        );
        if delta != 0 {
            *self
                .counts
                .lock()
                .entry(key.collection().to_string())
                .or_default() += delta;
        }
        if let Some(change) = registry_change {
            self.index_registry_apply(change);
        }
        self.tree.apply(bucket, leaf_delta);
        self.metrics.commits.inc();
        state.meta = meta.clone();
        // Nobody listening is fine (a single node); a lagging listener is told it lagged.
        let inline =
            !raw.is_empty() && raw.iter().map(Vec::len).sum::<usize>() <= INLINE_CHANGE_BYTES;
        let _ = self.events.send(Arc::new(CommitEvent {
            key: key.clone(),
            changes: inline.then_some(raw),
            before: old_heads,
            heads: meta.heads.clone(),
            origin,
        }));
        Ok(meta)
    }

    /// The ids of `collection` that start with `prefix` (deleted documents included), in id
    /// order; `None` when there are more than `cap`.
    pub fn ids_with_prefix(
        &self,
        collection: &str,
        prefix: &str,
        cap: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        keys::validate_collection(collection)?;
        let coll = keys::collection_prefix(collection);
        let mut start = coll.clone();
        start.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        let mut iter = self.db.raw_iterator_cf(self.cf(cfs::META)?);
        iter.seek(&start);
        while let Some(k) = iter.key() {
            if !k.starts_with(&start) {
                break;
            }
            if out.len() >= cap {
                return Ok(None);
            }
            out.push(String::from_utf8_lossy(&k[coll.len()..]).into_owned());
            iter.next();
        }
        iter.status()?;
        Ok(Some(out))
    }

    /// Documents of a collection in id order, after `after`, at most `limit` (tombstones too).
    pub fn list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, DocMeta)>, StoreError> {
        self.list_prefixed(collection, "", after, limit)
    }

    /// Like [`Store::list`], only ids that start with `id_prefix` (all when it is empty).
    pub fn list_prefixed(
        &self,
        collection: &str,
        id_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, DocMeta)>, StoreError> {
        keys::validate_collection(collection)?;
        let prefix = keys::collection_prefix(collection);
        let mut wanted = prefix.clone();
        wanted.extend_from_slice(id_prefix.as_bytes());
        let start = match after {
            Some(a) => {
                keys::validate_id(a)?;
                let mut s = prefix.clone();
                s.extend_from_slice(a.as_bytes());
                s.push(0); // strictly after `a`
                s.max(wanted.clone())
            }
            None => wanted.clone(),
        };
        let mut out = Vec::new();
        let mut iter = self.db.raw_iterator_cf(self.cf(cfs::META)?);
        iter.seek(&start);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&wanted) || out.len() >= limit {
                break;
            }
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((id, records::decode("document metadata", v)?));
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// Every collection and its number of live documents.
    pub fn collections(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self
            .counts
            .lock()
            .iter()
            .map(|(c, n)| (c.clone(), *n))
            .collect())
    }

    /// Live documents in `collection`.
    pub fn collection_count(&self, collection: &str) -> Result<i64, StoreError> {
        Ok(self.counts.lock().get(collection).copied().unwrap_or(0))
    }

    /// Feed entries after `since`, up to the watermark; at most `limit` matching `collection`.
    /// Returns them with the last sequence number examined (the cursor to resume from).
    pub fn feed_page(
        &self,
        since: u64,
        limit: usize,
        collection: Option<&str>,
    ) -> Result<(Vec<(u64, FeedEntry)>, u64), StoreError> {
        self.feed_page_where(since, limit, collection, &|_| Ok(true))
    }

    /// [`Store::feed_page`], keeping only the entries `keep` accepts (it runs as the page is
    /// read, so `limit` counts kept entries).
    pub fn feed_page_where(
        &self,
        since: u64,
        limit: usize,
        collection: Option<&str>,
        keep: &dyn Fn(&FeedEntry) -> Result<bool, StoreError>,
    ) -> Result<(Vec<(u64, FeedEntry)>, u64), StoreError> {
        let upto = self.feed.watermark();
        let mut out = Vec::new();
        let mut last = since.min(upto);
        // A collection filter may skip many entries: bound the work of one page.
        let max_scan = limit.saturating_mul(10).max(10_000);
        let mut scanned = 0;
        let mut iter = self.db.raw_iterator_cf(self.cf(cfs::FEED)?);
        iter.seek(since.saturating_add(1).to_be_bytes());
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            let seq = decode_seq(k)?;
            if seq > upto || out.len() >= limit || scanned >= max_scan {
                break;
            }
            scanned += 1;
            last = seq;
            let entry: FeedEntry = records::decode("feed entry", v)?;
            if collection.is_none_or(|c| c == entry.collection) && keep(&entry)? {
                out.push((seq, entry));
            }
            iter.next();
        }
        iter.status()?;
        if out.len() < limit && scanned < max_scan {
            // Nothing more up to the watermark: resume from there.
            last = upto.max(last);
        }
        Ok((out, last))
    }

    pub fn feed_watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feed.subscribe()
    }

    /// The digest's root.
    pub fn digest_root(&self) -> u64 {
        self.tree.root()
    }

    /// The digest nodes at `level` (1-3) under node `parent` of the level above.
    pub fn digest_children(&self, level: usize, parent: usize) -> Vec<u64> {
        self.tree.children(level, parent)
    }

    /// The documents of a bucket (a level-3 digest node) with their heads.
    pub fn bucket_docs(&self, bucket: u16) -> Result<BucketDocs, StoreError> {
        let prefix = bucket.to_be_bytes();
        let mut out = Vec::new();
        let mut iter = self.db.raw_iterator_cf(self.cf(cfs::BUCKETS)?);
        iter.seek(prefix);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(key) = DocKey::decode(&k[2..]) {
                out.push((key, digest::decode_heads(v)));
            }
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// Gauges for `/metrics`.
    pub fn stats(&self) -> StoreStats {
        let (mut sst, mut memtables) = (0, 0);
        for name in cfs::ALL {
            if let Ok(cf) = self.cf(name) {
                let prop = |p: &str| {
                    self.db
                        .property_int_value_cf(cf, p)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                sst += prop("rocksdb.total-sst-files-size");
                memtables += prop("rocksdb.cur-size-all-mem-tables");
            }
        }
        let (json_cache_bytes, json_cache_docs) = self.json_cache.usage();
        StoreStats {
            cache_bytes: self.cache.weighted_size(),
            cache_docs: self.cache.entry_count(),
            json_cache_bytes,
            json_cache_docs,
            store_bytes: sst + memtables,
            memtable_bytes: memtables,
            block_cache_bytes: self.block_cache.get_usage() as u64,
            wal_syncs: self
                .db_opts
                .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced),
            block_reads: self
                .db_opts
                .get_ticker_count(rocksdb::statistics::Ticker::BlockCacheDataMiss),
        }
    }

    /// Test hook: drops every cached document so the next access loads from disk.
    pub fn clear_cache(&self) {
        self.cache.clear();
        self.json_cache.clear();
    }
}

/// A digest bucket's documents and their heads.
pub type BucketDocs = Vec<(DocKey, Vec<[u8; 32]>)>;

fn decode_seq(k: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(k)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("feed key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    fn put(doc: &mut Automerge, field: &str, value: i64) -> Result<(), StoreError> {
        let mut tx = doc.transaction();
        tx.put(ROOT, field, value)
            .map_err(|e| StoreError::Doc(DocError::from(e)))?;
        tx.commit();
        Ok(())
    }

    #[test]
    fn a_refused_write_keeps_the_cached_copy_and_a_half_done_one_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let store = Store::open(dir.path(), StoreOptions::default(), metrics.clone()).unwrap();
        let key = DocKey::new("c", "d").unwrap();
        store
            .write::<_, StoreError>(&key, |doc, _| put(doc, "a", 1))
            .unwrap();
        let misses = metrics.cache_misses.get();

        // Refused before changing anything (as a 412 or a 404 is): the copy stays cached.
        let refused =
            store.write::<(), StoreError>(&key, |_, _| Err(StoreError::Corrupt("refused".into())));
        assert!(refused.is_err());
        store.read(&key, |_, _| ()).unwrap();
        assert_eq!(metrics.cache_misses.get(), misses, "reread from the cache");

        // Failed after a change was applied in memory: that copy is ahead of the disk and must go.
        let half = store.write::<(), StoreError>(&key, |doc, _| {
            put(doc, "b", 2)?;
            Err(StoreError::Corrupt("failed late".into()))
        });
        assert!(half.is_err());
        let has_b = store
            .read(&key, |doc, _| doc.get(ROOT, "b").unwrap().is_some())
            .unwrap();
        assert_eq!(has_b, Some(false), "the unstored change is not visible");
        assert_eq!(metrics.cache_misses.get(), misses + 1, "reloaded from disk");
    }

    /// A document loaded from disk with a long change log has the log folded into its snapshot by
    /// its next commit; one kept in memory keeps appending to its log, and so does one loaded
    /// with a short log.
    #[test]
    fn the_first_commit_after_loading_a_long_change_log_folds_it() {
        let dir = tempfile::tempdir().unwrap();
        let long = DocKey::new("c", "long").unwrap();
        let short = DocKey::new("c", "short").unwrap();
        let write = |store: &Store, key: &DocKey, v: i64| {
            store
                .write::<_, StoreError>(key, |doc, _| put(doc, "v", v))
                .unwrap();
        };
        {
            let metrics = Metrics::new();
            let store = Store::open(dir.path(), StoreOptions::default(), metrics.clone()).unwrap();
            for v in 0..20 {
                write(&store, &long, v);
            }
            for v in 0..3 {
                write(&store, &short, v);
            }
            assert_eq!(metrics.compactions.get(), 0, "cached: nothing folded");
            assert_eq!(logged_change_keys(&store.db, &long).unwrap().len(), 20);
        }
        let metrics = Metrics::new();
        let store = Store::open(dir.path(), StoreOptions::default(), metrics.clone()).unwrap();
        write(&store, &long, 100);
        write(&store, &short, 100);
        assert_eq!(metrics.compactions.get(), 1, "only the long log is folded");
        let meta = store.meta(&long).unwrap().unwrap();
        assert_eq!(meta.incr_len, 0);
        assert!(meta.snapshot_len > 0);
        assert!(logged_change_keys(&store.db, &long).unwrap().is_empty());
        assert_eq!(logged_change_keys(&store.db, &short).unwrap().len(), 4);
        // Folded once: the next commit of the cached document appends again.
        write(&store, &long, 101);
        assert_eq!(logged_change_keys(&store.db, &long).unwrap().len(), 1);
        assert_eq!(metrics.compactions.get(), 1);
        drop(store);

        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        let v = |key: &DocKey| {
            store
                .read(key, |doc, _| match doc.get(ROOT, "v").unwrap() {
                    Some((automerge::Value::Scalar(s), _)) => s.as_i64(),
                    _ => None,
                })
                .unwrap()
                .flatten()
        };
        assert_eq!(
            v(&long),
            Some(101),
            "the snapshot and the log after it hold every write"
        );
        assert_eq!(v(&short), Some(100));
    }

    /// Reads that fill the in-memory JSON race commits of the same document: whatever the
    /// interleaving, once the last write is acknowledged every read path answers it (a fill of a
    /// value read before a commit and kept after it would answer an older one for good).
    #[test]
    fn reads_racing_commits_never_leave_a_stale_copy_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            sync_writes: false,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options, Metrics::new()).unwrap();
        let keys: Vec<DocKey> = (0..4)
            .map(|i| DocKey::new("c", &format!("d{i}")).unwrap())
            .collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        let value = |m: &materialized::Materialized| m.parse().unwrap()["v"].as_i64();
        for round in 0..20 {
            done.store(false, std::sync::atomic::Ordering::Relaxed);
            std::thread::scope(|s| {
                for r in 0..3 {
                    let (store, keys, done) = (&store, &keys, &done);
                    s.spawn(move || {
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            match r {
                                0 => {
                                    for k in keys {
                                        let _ = store.materialized(k).unwrap();
                                    }
                                }
                                1 => {
                                    let _ = store.current_json_many(keys).unwrap();
                                }
                                _ => {
                                    for k in keys {
                                        let _ = store.materialized_in_memory(k);
                                    }
                                }
                            }
                        }
                    });
                }
                for v in 0..50 {
                    for k in &keys {
                        store
                            .write::<_, StoreError>(k, |doc, _| put(doc, "v", round * 100 + v))
                            .unwrap();
                    }
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let last = Some(round * 100 + 49);
            for k in &keys {
                assert_eq!(
                    store.materialized(k).unwrap().as_ref().and_then(value),
                    last
                );
                assert_eq!(
                    store.materialized_in_memory(k).as_ref().and_then(value),
                    last
                );
            }
            for c in store.current_json_many(&keys).unwrap() {
                assert_eq!(c.unwrap().json["v"].as_i64(), last);
            }
        }
    }

    /// The race above, made to happen: on each read path, a commit lands between the read of
    /// RocksDB and the fill of memory. The read may answer the value before the commit (it began
    /// first), but memory must not keep it.
    #[test]
    fn a_commit_between_a_read_and_its_fill_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        let key = DocKey::new("c", "d").unwrap();
        let value = |m: &materialized::Materialized| m.parse().unwrap()["v"].as_i64();
        for path in 0..3 {
            let before = path * 10;
            store
                .write::<_, StoreError>(&key, |doc, _| put(doc, "v", before))
                .unwrap();
            store.clear_cache();
            let (go, went) = std::sync::mpsc::channel::<()>();
            let (done, finished) = std::sync::mpsc::channel::<()>();
            *store.json_cache.before_fill.lock() = Some(Box::new(move || {
                go.send(()).unwrap();
                finished.recv().unwrap();
            }));
            std::thread::scope(|s| {
                let (store, key) = (&store, &key);
                s.spawn(move || {
                    went.recv().unwrap();
                    store
                        .write::<_, StoreError>(key, |doc, _| put(doc, "v", before + 1))
                        .unwrap();
                    done.send(()).unwrap();
                });
                let read = match path {
                    0 => store.materialized(key).unwrap().as_ref().and_then(value),
                    1 => store.current_json_many(std::slice::from_ref(key)).unwrap()[0]
                        .as_ref()
                        .and_then(|c| c.json["v"].as_i64()),
                    _ => {
                        // The in-memory path reads the block cache: warm it first.
                        store.db.flush().unwrap();
                        let _ = store
                            .db
                            .get_cf(store.cf(cfs::DOC_JSON).unwrap(), key.encode());
                        store.materialized_in_memory(key).as_ref().and_then(value)
                    }
                };
                assert!(
                    read == Some(before) || read == Some(before + 1),
                    "path {path}: {read:?}"
                );
            });
            assert!(
                store.json_cache.before_fill.lock().is_none(),
                "path {path}: no fill ran"
            );
            assert_eq!(
                store.materialized(&key).unwrap().as_ref().and_then(value),
                Some(before + 1),
                "path {path}: a stale copy stayed in memory"
            );
        }
    }

    /// A document nested deeper than JSON parsers go (a sync client or ops can build one) is
    /// read like any other, again and again: its JSON is built, not kept and parsed back.
    #[test]
    fn a_deeply_nested_document_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        let key = DocKey::new("c", "deep").unwrap();
        store
            .write::<_, StoreError>(&key, |doc, _| {
                let mut tx = doc.transaction();
                let mut obj = ROOT;
                for _ in 0..200 {
                    obj = tx
                        .put_object(&obj, "a", automerge::ObjType::Map)
                        .map_err(|e| StoreError::Doc(DocError::from(e)))?;
                }
                tx.put(&obj, "leaf", 1)
                    .map_err(|e| StoreError::Doc(DocError::from(e)))?;
                tx.commit();
                Ok(())
            })
            .unwrap();
        for _ in 0..2 {
            let got = store.current_json(&key).unwrap().expect("the document");
            let mut v = &serde_json::Value::Object(got.json);
            for _ in 0..200 {
                v = &v["a"];
            }
            assert_eq!(v["leaf"], 1);
            let many = store.current_json_many(std::slice::from_ref(&key)).unwrap();
            assert!(many[0].is_some());
        }
    }

    /// Once a commit's batch is written, whatever can see it (its feed entry, its metadata) must
    /// not read the document's old JSON from memory: between the write and the update of memory,
    /// a read answers the new JSON (from RocksDB).
    #[test]
    fn memory_is_never_behind_a_written_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        let key = DocKey::new("c", "d").unwrap();
        store
            .write::<_, StoreError>(&key, |doc, _| put(doc, "v", 1))
            .unwrap();
        assert!(store.materialized(&key).unwrap().is_some(), "in memory now");
        let seen = Arc::new(Mutex::new(None));
        let (seen_in, k) = (seen.clone(), key.clone());
        *store.after_write.lock() = Some(Box::new(move |s: &Store| {
            let from_feed = s.read_meta(&k.encode()).unwrap().unwrap().heads;
            let m = s
                .materialized_in_memory(&k)
                .or_else(|| s.materialized(&k).unwrap());
            *seen_in.lock() = Some((from_feed, m.unwrap()));
        }));
        store
            .write::<_, StoreError>(&key, |doc, _| put(doc, "v", 2))
            .unwrap();
        let (heads, m) = seen.lock().take().expect("the hook ran");
        assert_eq!(m.heads, heads, "the JSON read is of the written commit");
        assert_eq!(m.parse().unwrap()["v"], 2);
    }

    /// The materialised entry is never stale and a read keeps it: after every kind of commit
    /// (local writes, a delete, a re-create, a peer's changes, in a plain and in an indexed
    /// collection, a document whose JSON grows past the size bound and shrinks back) there is no
    /// entry or one equal to the document's JSON at its heads, and after a read there is one.
    #[test]
    fn materialised_json_is_never_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other = Store::open(other_dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        let key = DocKey::new("c", "d").unwrap();
        let live = || {
            store
                .read(&key, |doc, meta| {
                    (!meta.deleted)
                        .then(|| (crate::doc::json::to_json(doc, None), meta.heads.clone()))
                })
                .unwrap()
                .flatten()
        };
        let not_stale = |what: &str| {
            if let Some(m) = store.materialized(&key).unwrap() {
                let (json, heads) =
                    live().unwrap_or_else(|| panic!("{what}: entry of a deleted doc"));
                assert_eq!(
                    (m.parse().unwrap(), m.heads),
                    (json, heads),
                    "{what}: stale"
                );
            }
        };
        let check = |what: &str| {
            not_stale(what);
            let current = store.current_json(&key).unwrap();
            match live() {
                Some((json, heads)) => {
                    let c = current.unwrap_or_else(|| panic!("{what}: no JSON"));
                    assert_eq!((&c.json, &c.heads), (&json, &heads), "{what}");
                    let m = store.materialized(&key).unwrap();
                    let m = m.unwrap_or_else(|| panic!("{what}: not kept by the read"));
                    assert_eq!((m.parse().unwrap(), m.heads), (json, heads), "{what}");
                }
                None => {
                    assert!(current.is_none(), "{what}");
                    assert_eq!(store.materialized(&key).unwrap(), None, "{what}");
                }
            }
        };
        let patch = |store: &Store, body: serde_json::Value| {
            let serde_json::Value::Object(m) = body else {
                unreachable!()
            };
            store
                .write::<_, StoreError>(&key, |doc, _| {
                    crate::doc::write::apply(doc, &crate::doc::write::Write::MergePatch(m), 1)
                        .map_err(StoreError::Doc)
                })
                .unwrap();
        };
        patch(&store, serde_json::json!({"a": 1, "b": {"c": "x"}}));
        check("created");
        patch(&store, serde_json::json!({"a": 2, "b": {"c": null}}));
        not_stale("patched, before a read");
        check("patched");
        // Just read, so in the memtable: the in-memory read answers, and the same.
        assert_eq!(
            store.materialized_in_memory(&key),
            store.materialized(&key).unwrap()
        );
        store
            .write::<_, StoreError>(&key, |doc, _| {
                crate::doc::tombstone::delete(doc, 2).map_err(StoreError::Doc)
            })
            .unwrap();
        check("deleted");
        assert_eq!(store.materialized_in_memory(&key), None);
        patch(&store, serde_json::json!({"again": true}));
        check("re-created");

        patch(&other, serde_json::json!({"from_peer": [1, 2, 3]}));
        let changes = other
            .read(&key, |doc, _| doc.get_changes(&[]))
            .unwrap()
            .unwrap();
        store
            .write_from::<_, StoreError>(Origin::Peer, &key, |doc, _| {
                doc.apply_changes(changes)
                    .map_err(|e| StoreError::Doc(DocError::from(e)))
            })
            .unwrap();
        check("merged a peer's changes");
        assert_eq!(
            store.materialized(&key).unwrap().unwrap().parse().unwrap()["from_peer"],
            serde_json::json!([1, 2, 3])
        );

        let big = "x".repeat(materialized::MAX_JSON_BYTES + 1);
        patch(&store, serde_json::json!({ "big": big }));
        let current = store.current_json(&key).unwrap().unwrap();
        assert_eq!(current.json["big"], serde_json::json!(big), "built on read");
        assert_eq!(store.materialized(&key).unwrap(), None, "too large to keep");
        patch(&store, serde_json::json!({ "big": null }));
        check("shrunk back");

        // In an indexed collection the commit itself keeps the copy current.
        let def = index_registry::Definition {
            fields: vec!["a".into()],
            partial_filter: None,
        };
        store.define_index("c", "by_a", &def).unwrap();
        patch(&store, serde_json::json!({"a": 3}));
        let m = store
            .materialized(&key)
            .unwrap()
            .expect("kept by the commit");
        assert_eq!(m.parse().unwrap()["a"], 3);
        check("indexed");
    }
}
