//! Schema 4: the `sync_states` column family, where client sync states are persisted.
//!
//! RocksDB creates the (empty) column family when the store opens; there is nothing to convert.
//! The version still moves, so an older Concord refuses this directory with a clear message
//! instead of failing to open an unknown column family.

use crate::store::error::StoreError;

pub(super) fn run(_db: &rocksdb::DB) -> Result<(), StoreError> {
    Ok(())
}
