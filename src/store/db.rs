//! The low-level RocksDB vocabulary every file of the store and every migration shares: column
//! family names, looking a column family up, and the clock rows are stamped with.

use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{ColumnFamily, DB};

use super::error::StoreError;

/// Column family names.
pub mod cfs {
    pub const META: &str = "meta";
    pub const SNAPSHOTS: &str = "snapshots";
    pub const CHANGES: &str = "changes";
    pub const FEED: &str = "feed";
    pub const COUNTS: &str = "counts";
    pub const DIGEST: &str = "digest";
    pub const BUCKETS: &str = "buckets";
    pub const SYNC_STATES: &str = "sync_states";
    pub const INDEX_ENTRIES: &str = "index_entries";
    pub const INDEX_REV: &str = "index_rev";
    pub const INDEX_STATE: &str = "index_state";
    pub const DOC_JSON: &str = "doc_json";
    pub const ALL: [&str; 12] = [
        META,
        SNAPSHOTS,
        CHANGES,
        FEED,
        COUNTS,
        DIGEST,
        BUCKETS,
        SYNC_STATES,
        INDEX_ENTRIES,
        INDEX_REV,
        INDEX_STATE,
        DOC_JSON,
    ];
}

pub fn handle<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Corrupt(format!("column family `{name}` is missing")))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
