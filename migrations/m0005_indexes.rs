//! Schema 5: secondary indexes. The column families `index_entries`, `index_rev` and
//! `index_state`, and the system collection `_indexes` whose documents define indexes.
//!
//! RocksDB creates the (empty) column families when the store opens and an older store has no
//! index definitions, so there is nothing to convert. The version still moves, so an older
//! Concord refuses this directory (it would commit without maintaining index entries) instead of
//! silently leaving indexes stale.

use crate::store::error::StoreError;

pub(super) fn run(_db: &rocksdb::DB) -> Result<(), StoreError> {
    Ok(())
}
