//! Prometheus metrics for one node.
//!
//! Each node owns its registry (no process-global recorder), so tests that run several nodes in
//! one process see each node's own figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: HistogramFamily,
    pub commits: Counter,
    pub compactions: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub ae_rounds: Family<PeerLabels, Counter>,
    pub ae_docs_repaired: Family<PeerLabels, Counter>,
    pub ae_bytes_sent: Family<PeerLabels, Counter>,
    pub ae_bytes_received: Family<PeerLabels, Counter>,
    pub push_changes: Family<PeerLabels, Counter>,
    pub push_bytes: Family<PeerLabels, Counter>,
    pub push_dropped: Counter,
    pub push_docs_rejected: Counter,
    pub replication_docs_skipped: Counter,
    pub feed_filter_docs_loaded: Counter,
    pub sync_states_over_quota: Counter,
    pub writes_refused_no_space: Counter,
    backups_taken: Counter,
    backups_failed: Counter,
    last_backup_seconds: Gauge,
    wal_syncs: Counter,
    wal_syncs_seen: AtomicU64,
    block_reads: Counter,
    block_reads_seen: AtomicU64,
    cache_bytes: Gauge,
    cache_docs: Gauge,
    json_cache_bytes: Gauge,
    json_cache_docs: Gauge,
    pub json_cache_hits: Counter,
    pub json_cache_misses: Counter,
    store_bytes: Gauge,
    memtable_bytes: Gauge,
    block_cache_bytes: Gauge,
    heap_allocated_bytes: Gauge,
    heap_resident_bytes: Gauge,
    websockets_open: Gauge,
    websocket_documents: Gauge,
    streams_open: Gauge,
    uptime_seconds: Gauge,
    started: std::time::Instant,
}

/// Connection figures sampled when metrics are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveStats {
    pub websockets_open: usize,
    pub websocket_documents: usize,
    pub streams_open: usize,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("concord");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let m = Metrics {
            http_requests,
            http_latency,
            commits: Counter::default(),
            compactions: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            ae_rounds: Family::default(),
            ae_docs_repaired: Family::default(),
            ae_bytes_sent: Family::default(),
            ae_bytes_received: Family::default(),
            push_changes: Family::default(),
            push_bytes: Family::default(),
            push_dropped: Counter::default(),
            push_docs_rejected: Counter::default(),
            replication_docs_skipped: Counter::default(),
            feed_filter_docs_loaded: Counter::default(),
            sync_states_over_quota: Counter::default(),
            writes_refused_no_space: Counter::default(),
            backups_taken: Counter::default(),
            backups_failed: Counter::default(),
            last_backup_seconds: Gauge::default(),
            wal_syncs: Counter::default(),
            wal_syncs_seen: AtomicU64::new(0),
            block_reads: Counter::default(),
            block_reads_seen: AtomicU64::new(0),
            cache_bytes: Gauge::default(),
            json_cache_bytes: Gauge::default(),
            json_cache_docs: Gauge::default(),
            json_cache_hits: Counter::default(),
            json_cache_misses: Counter::default(),
            cache_docs: Gauge::default(),
            store_bytes: Gauge::default(),
            memtable_bytes: Gauge::default(),
            block_cache_bytes: Gauge::default(),
            heap_allocated_bytes: Gauge::default(),
            heap_resident_bytes: Gauge::default(),
            websockets_open: Gauge::default(),
            uptime_seconds: Gauge::default(),
            started: std::time::Instant::now(),
            websocket_documents: Gauge::default(),
            streams_open: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            m.http_latency.clone(),
        );
        registry.register(
            "commits",
            "Document commits written to RocksDB",
            m.commits.clone(),
        );
        registry.register(
            "compactions",
            "Document snapshot compactions",
            m.compactions.clone(),
        );
        registry.register("cache_hits", "Document cache hits", m.cache_hits.clone());
        registry.register(
            "cache_misses",
            "Document cache misses (loads from disk)",
            m.cache_misses.clone(),
        );
        registry.register(
            "wal_syncs",
            "WAL fsyncs (group commit shares one among many writes)",
            m.wal_syncs.clone(),
        );
        registry.register(
            "block_reads",
            "Data blocks RocksDB read from disk because its block cache missed",
            m.block_reads.clone(),
        );
        registry.register(
            "websockets_open",
            "automerge-repo WebSocket connections open or being upgraded",
            m.websockets_open.clone(),
        );
        registry.register(
            "websocket_documents",
            "Documents open over all automerge-repo WebSocket connections",
            m.websocket_documents.clone(),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since this node started",
            m.uptime_seconds.clone(),
        );
        registry.register(
            "streams_open",
            "Long-lived HTTP streams open (SSE, long polls), bounded by max_streams",
            m.streams_open.clone(),
        );
        registry.register(
            "writes_refused_no_space",
            "Commits refused because the disk was full (writes resume once space is freed)",
            m.writes_refused_no_space.clone(),
        );
        registry.register(
            "backups_taken",
            "Backups taken (on request or on schedule)",
            m.backups_taken.clone(),
        );
        registry.register(
            "backups_failed",
            "Backups that failed (on request or on schedule)",
            m.backups_failed.clone(),
        );
        registry.register(
            "last_backup_timestamp_seconds",
            "When the last successful backup finished (Unix time; 0: none since start)",
            m.last_backup_seconds.clone(),
        );
        registry.register(
            "cache_bytes",
            "Estimated bytes of loaded documents in the cache",
            m.cache_bytes.clone(),
        );
        registry.register(
            "cache_documents",
            "Loaded documents in the cache",
            m.cache_docs.clone(),
        );
        registry.register(
            "json_cache_bytes",
            "Estimated bytes of documents' JSON held in memory (bounded by json_cache_bytes)",
            m.json_cache_bytes.clone(),
        );
        registry.register(
            "json_cache_documents",
            "Documents whose JSON is held in memory",
            m.json_cache_docs.clone(),
        );
        registry.register(
            "json_cache_hits",
            "Reads of a document's JSON answered from memory",
            m.json_cache_hits.clone(),
        );
        registry.register(
            "json_cache_misses",
            "Reads of a document's JSON that went to RocksDB",
            m.json_cache_misses.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes in RocksDB files and memtables",
            m.store_bytes.clone(),
        );
        registry.register(
            "memtable_bytes",
            "Bytes in RocksDB memtables (bounded to 64 MiB for all column families)",
            m.memtable_bytes.clone(),
        );
        registry.register(
            "heap_allocated_bytes",
            "Bytes the process has allocated (jemalloc)",
            m.heap_allocated_bytes.clone(),
        );
        registry.register(
            "heap_resident_bytes",
            "Bytes jemalloc holds resident (allocated, freed pages not yet returned, metadata)",
            m.heap_resident_bytes.clone(),
        );
        registry.register(
            "block_cache_bytes",
            "Bytes in RocksDB's block cache (bounded to 64 MiB)",
            m.block_cache_bytes.clone(),
        );
        registry.register(
            "anti_entropy_rounds",
            "Completed anti-entropy rounds, by peer",
            m.ae_rounds.clone(),
        );
        registry.register(
            "anti_entropy_docs_repaired",
            "Documents reconciled by anti-entropy, by peer",
            m.ae_docs_repaired.clone(),
        );
        registry.register(
            "anti_entropy_bytes_sent",
            "Anti-entropy request bytes, by peer",
            m.ae_bytes_sent.clone(),
        );
        registry.register(
            "anti_entropy_bytes_received",
            "Anti-entropy response bytes, by peer",
            m.ae_bytes_received.clone(),
        );
        registry.register(
            "push_changes",
            "Changes pushed eagerly, by peer",
            m.push_changes.clone(),
        );
        registry.register(
            "push_bytes",
            "Eager push request bytes, by peer",
            m.push_bytes.clone(),
        );
        registry.register(
            "push_dropped",
            "Changes not pushed (queue full, lagging or failed); anti-entropy repairs them",
            m.push_dropped.clone(),
        );
        registry.register(
            "push_docs_rejected",
            "Documents in eager pushes that a peer could not take (its answer says why; \
             anti-entropy retries them)",
            m.push_docs_rejected.clone(),
        );
        registry.register(
            "feed_filter_docs_loaded",
            "Documents the changes feed loaded to judge a selector (no index covered it, or an \
             entry held a value only in part); judged from an index entry otherwise",
            m.feed_filter_docs_loaded.clone(),
        );
        registry.register(
            "replication_docs_skipped",
            "Documents this node could not read, store or serve on a peer path (each is logged \
             with its key); every other document still moves",
            m.replication_docs_skipped.clone(),
        );
        registry.register(
            "sync_states_over_quota",
            "Client sync states not kept because their principal owns max_sync_states_per_principal",
            m.sync_states_over_quota.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// The Prometheus text exposition, with store gauges refreshed from `stats`.
    /// Counts a finished backup (and stamps the time of a successful one).
    pub fn backup_done(&self, ok: bool) {
        if ok {
            self.backups_taken.inc();
            self.last_backup_seconds
                .set((crate::store::now_ms() / 1000) as i64);
        } else {
            self.backups_failed.inc();
        }
    }

    /// Time since this node started (since its metrics were created, when the node opens).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn render(&self, stats: StoreStats, live: LiveStats) -> String {
        self.uptime_seconds.set(self.uptime().as_secs() as i64);
        self.websockets_open.set(live.websockets_open as i64);
        self.websocket_documents
            .set(live.websocket_documents as i64);
        self.streams_open.set(live.streams_open as i64);
        self.cache_bytes.set(stats.cache_bytes as i64);
        self.cache_docs.set(stats.cache_docs as i64);
        self.json_cache_bytes.set(stats.json_cache_bytes as i64);
        self.json_cache_docs.set(stats.json_cache_docs as i64);
        self.store_bytes.set(stats.store_bytes as i64);
        self.memtable_bytes.set(stats.memtable_bytes as i64);
        self.block_cache_bytes.set(stats.block_cache_bytes as i64);
        if let Some((allocated, resident)) = crate::memory::heap() {
            self.heap_allocated_bytes.set(allocated as i64);
            self.heap_resident_bytes.set(resident as i64);
        }
        let before = self.wal_syncs_seen.swap(stats.wal_syncs, Ordering::Relaxed);
        self.wal_syncs
            .inc_by(stats.wal_syncs.saturating_sub(before));
        let before = self
            .block_reads_seen
            .swap(stats.block_reads, Ordering::Relaxed);
        self.block_reads
            .inc_by(stats.block_reads.saturating_sub(before));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The store's figures a scrape reports.
#[derive(Debug, Clone, Copy)]
pub struct StoreStats {
    pub cache_bytes: u64,
    pub cache_docs: u64,
    pub json_cache_bytes: u64,
    pub json_cache_docs: u64,
    pub store_bytes: u64,
    pub memtable_bytes: u64,
    pub block_cache_bytes: u64,
    pub wal_syncs: u64,
    /// Data blocks read from disk (block cache misses).
    pub block_reads: u64,
}
