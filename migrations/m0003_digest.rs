//! Schema 3: the anti-entropy digest (`digest` hash tree and `buckets` index).
//!
//! Computed once from every document's metadata; from then on each commit keeps both in its own
//! write batch. The column families are cleared first and written with absolute values, so a
//! re-run after a crash gives the same result.

use std::collections::HashMap;

use crate::store::db::{cfs, handle};
use crate::store::error::StoreError;
use crate::store::{digest, records};

pub(super) fn run(db: &rocksdb::DB) -> Result<(), StoreError> {
    let meta = handle(db, cfs::META)?;
    let digest_cf = handle(db, cfs::DIGEST)?;
    let buckets_cf = handle(db, cfs::BUCKETS)?;
    let mut batch = rocksdb::WriteBatch::default();
    for cf in [digest_cf, buckets_cf] {
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, _) = item?;
            batch.delete_cf(cf, k);
        }
    }
    let mut tree: HashMap<Vec<u8>, u64> = HashMap::new();
    for item in db.iterator_cf(meta, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let m: records::DocMeta = records::decode("document metadata", &v)?;
        let bucket = digest::bucket(&k);
        let leaf = digest::leaf(&k, &m.heads);
        for node in digest::tree_keys(bucket) {
            *tree.entry(node).or_default() ^= leaf;
        }
        batch.put_cf(
            buckets_cf,
            digest::bucket_entry_key(bucket, &k),
            digest::encode_heads(&m.heads),
        );
    }
    for (k, v) in tree {
        batch.put_cf(digest_cf, k, v.to_le_bytes());
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(())
}
