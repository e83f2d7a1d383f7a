//! Schema 6: column family `doc_json`, each live document's JSON beside it (see
//! `store::materialized`).
//!
//! Built here from every live document, so reads never meet a document that lacks its entry
//! only because it was written before this version (a document may still lack one when its JSON
//! is too large to keep, and readers fall back then). Entries are absolute puts, so a re-run after a
//! crash gives the same result; they are written in batches to bound memory.

use crate::store::db::{cfs, handle};
use crate::store::error::StoreError;
use crate::store::{load_stored, materialized, records, DocKey};

const BATCH_DOCS: usize = 1_000;

pub(super) fn run(db: &rocksdb::DB) -> Result<(), StoreError> {
    let meta_cf = handle(db, cfs::META)?;
    let json_cf = handle(db, cfs::DOC_JSON)?;
    let mut batch = rocksdb::WriteBatch::default();
    let mut done = 0u64;
    for item in db.iterator_cf(meta_cf, rocksdb::IteratorMode::Start) {
        let (enc, v) = item?;
        let meta: records::DocMeta = records::decode("document metadata", &v)?;
        let Some(key) = DocKey::decode(&enc) else {
            return Err(StoreError::Corrupt(
                "a document key that does not decode".into(),
            ));
        };
        let json = if meta.deleted {
            None
        } else {
            let doc = load_stored(db, &key)?;
            let json = serde_json::Value::Object(crate::doc::json::to_json(&doc, None));
            materialized::serialise(&json)?
        };
        materialized::stage(&mut batch, json_cf, &enc, &meta.heads, json.as_deref());
        done += 1;
        if batch.len() >= BATCH_DOCS {
            db.write(std::mem::take(&mut batch))?;
            if done.is_multiple_of(100_000) {
                tracing::info!(documents = done, "materialising documents' JSON");
            }
        }
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(())
}
