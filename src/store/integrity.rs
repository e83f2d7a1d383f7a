//! The integrity check of a whole store: every document loads, its stored metadata, its
//! materialised JSON and its digest leaf agree with what its changes say, and the per-collection
//! counts and the anti-entropy digest root agree with the documents.
//!
//! A restored backup is checked this way before it is handed to a node (`concord backup
//! restore` / `verify`), so a damaged copy is refused instead of served: the digest and the
//! counts are derived data kept in the commits' own batches, so any file missing or older than
//! its neighbours shows up as a disagreement here even when every file's checksum is right.

use std::collections::BTreeMap;

use serde::Serialize;

use super::db::{cfs, handle};
use super::error::StoreError;
use super::keys::DocKey;
use super::{digest, load_stored, materialized, records, DocMeta, Store};

/// Problems listed in a report at most (the total is counted).
const MAX_LISTED: usize = 100;

/// What [`Store::check_integrity`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntegrityReport {
    /// Documents stored (tombstones included).
    pub documents: u64,
    /// Live documents per collection, counted from the documents themselves.
    pub live: BTreeMap<String, i64>,
    pub tombstones: u64,
    /// The digest root recomputed from every document's heads (hex).
    pub digest_root: String,
    /// Problems found (at most 100 listed) and how many in all.
    pub problems: Vec<String>,
    pub problem_count: u64,
}

impl IntegrityReport {
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }

    pub fn live_total(&self) -> i64 {
        self.live.values().sum()
    }

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
    }
}

impl Store {
    /// Loads every document and checks it against the store's derived data (see the module
    /// doc). `progress` is called with the number of documents checked so far, every 10,000.
    /// Reads only: safe on a serving node, though it reads the whole store.
    pub fn check_integrity(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Result<IntegrityReport, StoreError> {
        let db = self.db();
        let mut report = IntegrityReport::default();
        let mut root = 0u64;
        let json_cf = handle(db, cfs::DOC_JSON)?;
        let mut iter = db.raw_iterator_cf(handle(db, cfs::META)?);
        iter.seek_to_first();
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            report.documents += 1;
            if report.documents % 10_000 == 0 {
                progress(report.documents);
            }
            let Some(key) = DocKey::decode(k) else {
                report.problem(format!("undecodable document key {}", hex::encode(k)));
                iter.next();
                continue;
            };
            let meta: DocMeta = match records::decode("document metadata", v) {
                Ok(m) => m,
                Err(e) => {
                    report.problem(format!("{key}: {e}"));
                    iter.next();
                    continue;
                }
            };
            match load_stored(db, &key) {
                Err(e) => report.problem(format!("{key}: does not load: {e}")),
                Ok(doc) => {
                    let mut heads: Vec<[u8; 32]> = doc.get_heads().iter().map(|h| h.0).collect();
                    let mut stored = meta.heads.clone();
                    heads.sort_unstable();
                    stored.sort_unstable();
                    if heads != stored {
                        report.problem(format!(
                            "{key}: its changes are at other heads than its metadata records"
                        ));
                    }
                    let deleted = crate::doc::tombstone::is_deleted(&doc, None);
                    if deleted != meta.deleted {
                        report.problem(format!(
                            "{key}: metadata says deleted = {}, its changes say {deleted}",
                            meta.deleted
                        ));
                    }
                    if deleted {
                        report.tombstones += 1;
                    } else {
                        *report.live.entry(key.collection().to_string()).or_default() += 1;
                    }
                    if let Some(bytes) = db.get_pinned_cf(json_cf, k)? {
                        match materialized::decode(&bytes) {
                            Ok(m) if m.heads != meta.heads => report.problem(format!(
                                "{key}: its materialised JSON is of another version"
                            )),
                            Ok(m) => {
                                if let Err(e) = m.parse() {
                                    report.problem(format!("{key}: {e}"));
                                }
                            }
                            Err(e) => report.problem(format!("{key}: {e}")),
                        }
                    }
                    root ^= digest::leaf(k, &meta.heads);
                }
            }
            iter.next();
        }
        iter.status()?;
        progress(report.documents);
        report.digest_root = format!("{root:016x}");
        if root != self.digest_root() {
            report.problem(format!(
                "the digest root on disk is {:016x}, the documents give {root:016x}",
                self.digest_root()
            ));
        }
        let counts = self.collections()?;
        let stored: BTreeMap<String, i64> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
        let names: std::collections::BTreeSet<String> =
            stored.keys().chain(report.live.keys()).cloned().collect();
        for c in names {
            let s = stored.get(&c).copied().unwrap_or(0);
            let n = report.live.get(&c).copied().unwrap_or(0);
            if s != n {
                report.problem(format!(
                    "collection `{c}`: the stored count is {s}, its live documents number {n}"
                ));
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::write::{apply, Write};
    use crate::metrics::Metrics;
    use crate::store::StoreOptions;

    fn put(store: &Store, c: &str, id: &str, body: serde_json::Value) {
        let key = DocKey::new(c, id).unwrap();
        let serde_json::Value::Object(m) = body else {
            panic!("object")
        };
        store
            .write::<_, StoreError>(&key, |doc, _| {
                apply(doc, &Write::Replace(m), 1).map_err(StoreError::Doc)
            })
            .unwrap();
    }

    #[test]
    fn a_sound_store_passes_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        for i in 0..20 {
            put(&store, "a", &format!("d{i}"), serde_json::json!({"n": i}));
        }
        put(&store, "b", "x", serde_json::json!({"n": 1}));
        let key = DocKey::new("a", "d3").unwrap();
        store
            .write::<_, StoreError>(&key, |doc, _| {
                apply(doc, &Write::Delete, 2).map_err(StoreError::Doc)
            })
            .unwrap();
        let report = store.check_integrity(|_| {}).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.documents, 21);
        assert_eq!(report.tombstones, 1);
        assert_eq!(report.live.get("a"), Some(&19));
        assert_eq!(report.live.get("b"), Some(&1));

        // A document whose changes are gone (a lost file, say): its metadata and the digest
        // still say it exists.
        let db = store.db();
        let victim = DocKey::new("a", "d7").unwrap();
        let cf = handle(db, cfs::CHANGES).unwrap();
        let prefix = victim.changes_prefix();
        db.delete_range_cf(cf, &prefix, &crate::store::keys::prefix_end(&prefix))
            .unwrap();
        db.delete_cf(handle(db, cfs::SNAPSHOTS).unwrap(), victim.encode())
            .unwrap();
        let report = store.check_integrity(|_| {}).unwrap();
        assert!(!report.ok());
        assert!(
            report.problems.iter().any(|p| p.contains("a/d7")),
            "{:?}",
            report.problems
        );
    }
}
