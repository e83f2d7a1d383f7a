//! Schema 2: per-collection live document counts.
//!
//! Schema 1 had no `counts` column family, so listing collections meant scanning every document's
//! metadata. This migration computes the counts once from `meta`; from then on every commit keeps
//! them with a merge operand in the same write batch.

use std::collections::BTreeMap;

use crate::store::db::{cfs, handle};
use crate::store::error::StoreError;
use crate::store::{keys::DocKey, records};

pub(super) fn run(db: &rocksdb::DB) -> Result<(), StoreError> {
    let meta = handle(db, cfs::META)?;
    let counts = handle(db, cfs::COUNTS)?;
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for item in db.iterator_cf(meta, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let Some(key) = DocKey::decode(&k) else {
            continue;
        };
        let m: records::DocMeta = records::decode("document metadata", &v)?;
        let entry = totals.entry(key.collection().to_string()).or_default();
        if !m.deleted {
            *entry += 1;
        }
    }
    let mut batch = rocksdb::WriteBatch::default();
    // Start from nothing so a re-run after a crash does not double count.
    for item in db.iterator_cf(counts, rocksdb::IteratorMode::Start) {
        let (k, _) = item?;
        batch.delete_cf(counts, k);
    }
    for (collection, n) in totals {
        batch.put_cf(counts, collection.as_bytes(), n.to_le_bytes());
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(())
}
