//! Schema 7: index keys of arrays and objects end at the first member they cannot hold whole
//! (see `query::collate`). Keys written before could order such values against the values'
//! order (a member after a cut string decided a tie that was not one), so a range could miss a
//! matching document. Every index is rebuilt: its entries and reverse entries are dropped and
//! its build starts over (in the background once the node runs; until it is `ready` again it
//! serves no query). Keys of values held whole are the same in both encodings, but telling the
//! affected entries apart would take reading every document anyway.
//!
//! Range deletes and absolute puts: a re-run after a crash gives the same result.

use crate::store::db::{cfs, handle};
use crate::store::error::StoreError;
use crate::store::index_registry::BuildState;

pub(super) fn run(db: &rocksdb::DB) -> Result<(), StoreError> {
    let state_cf = handle(db, cfs::INDEX_STATE)?;
    let mut batch = rocksdb::WriteBatch::default();
    let mut ids = Vec::new();
    for item in db.iterator_cf(state_cf, rocksdb::IteratorMode::Start) {
        let (k, _) = item?;
        ids.push(k.to_vec());
    }
    let fresh = serde_json::to_vec(&BuildState::Building {
        after: None,
        done: 0,
    })
    .map_err(|e| StoreError::Corrupt(format!("index state: {e}")))?;
    for id in &ids {
        let end = crate::store::keys::prefix_end(id);
        batch.delete_range_cf(handle(db, cfs::INDEX_ENTRIES)?, id, &end);
        batch.delete_range_cf(handle(db, cfs::INDEX_REV)?, id, &end);
        batch.put_cf(state_cf, id, &fresh);
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    if !ids.is_empty() {
        tracing::info!(
            indexes = ids.len(),
            "index keys re-encoded: every index rebuilds"
        );
    }
    Ok(())
}
