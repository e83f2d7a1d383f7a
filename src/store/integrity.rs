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

    fn merge(&mut self, other: IntegrityReport) {
        self.documents += other.documents;
        self.tombstones += other.tombstones;
        for (c, n) in other.live {
            *self.live.entry(c).or_default() += n;
        }
        self.problem_count += other.problem_count;
        for p in other.problems {
            if self.problems.len() < MAX_LISTED {
                self.problems.push(p);
            }
        }
    }

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
    }
}

/// Documents handed to a checking thread at a time.
const CHUNK: usize = 256;

/// One document's raw key and metadata, as iterated.
type Raw = (Box<[u8]>, Box<[u8]>);

/// Checks one document, adding what it found to `part` and its digest leaf to `root`.
fn check_one(
    db: &rocksdb::DB,
    json_cf: &rocksdb::ColumnFamily,
    k: &[u8],
    v: &[u8],
    part: &mut IntegrityReport,
    root: &mut u64,
) {
    part.documents += 1;
    let Some(key) = DocKey::decode(k) else {
        part.problem(format!("undecodable document key {}", hex::encode(k)));
        return;
    };
    let meta: DocMeta = match records::decode("document metadata", v) {
        Ok(m) => m,
        Err(e) => return part.problem(format!("{key}: {e}")),
    };
    let doc = match load_stored(db, &key) {
        Ok(d) => d,
        Err(e) => return part.problem(format!("{key}: does not load: {e}")),
    };
    let mut heads: Vec<[u8; 32]> = doc.get_heads().iter().map(|h| h.0).collect();
    let mut stored = meta.heads.clone();
    heads.sort_unstable();
    stored.sort_unstable();
    if heads != stored {
        part.problem(format!(
            "{key}: its changes are at other heads than its metadata records"
        ));
    }
    let deleted = crate::doc::tombstone::is_deleted(&doc, None);
    if deleted != meta.deleted {
        part.problem(format!(
            "{key}: metadata says deleted = {}, its changes say {deleted}",
            meta.deleted
        ));
    }
    if deleted {
        part.tombstones += 1;
    } else {
        *part.live.entry(key.collection().to_string()).or_default() += 1;
    }
    match db.get_pinned_cf(json_cf, k) {
        Ok(Some(bytes)) => match materialized::decode(&bytes) {
            Ok(m) if m.heads != meta.heads => part.problem(format!(
                "{key}: its materialised JSON is of another version"
            )),
            Ok(m) => {
                if let Err(e) = m.parse() {
                    part.problem(format!("{key}: {e}"));
                }
            }
            Err(e) => part.problem(format!("{key}: {e}")),
        },
        Ok(None) => {}
        Err(e) => part.problem(format!("{key}: materialised JSON unreadable: {e}")),
    }
    *root ^= digest::leaf(k, &meta.heads);
}

impl Store {
    /// Loads every document and checks it against the store's derived data (see the module
    /// doc), on as many threads as the machine has cores. `progress` is called with the number
    /// of documents checked so far, every 10,000. Reads only: safe on a serving node, though it
    /// reads the whole store.
    pub fn check_integrity(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Result<IntegrityReport, StoreError> {
        let db = self.db();
        let json_cf = handle(db, cfs::DOC_JSON)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Raw>>(threads * 2);
        let rx = std::sync::Mutex::new(rx);
        let (mut report, root, scanned) = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let rx = &rx;
                    scope.spawn(move || {
                        let (mut part, mut root) = (IntegrityReport::default(), 0u64);
                        loop {
                            let chunk = match rx.lock() {
                                Ok(r) => r.recv(),
                                Err(_) => break,
                            };
                            let Ok(chunk) = chunk else { break };
                            for (k, v) in chunk {
                                check_one(db, json_cf, &k, &v, &mut part, &mut root);
                            }
                        }
                        (part, root)
                    })
                })
                .collect();
            let scanned = (|| -> Result<u64, StoreError> {
                let mut iter = db.raw_iterator_cf(handle(db, cfs::META)?);
                iter.seek_to_first();
                let (mut chunk, mut n) = (Vec::with_capacity(CHUNK), 0u64);
                while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                    chunk.push((k.into(), v.into()));
                    n += 1;
                    if chunk.len() == CHUNK {
                        if tx.send(std::mem::take(&mut chunk)).is_err() {
                            break;
                        }
                        if n % 10_000 < CHUNK as u64 {
                            progress(n);
                        }
                    }
                    iter.next();
                }
                iter.status()?;
                if !chunk.is_empty() {
                    let _ = tx.send(chunk);
                }
                Ok(n)
            })();
            drop(tx);
            let mut report = IntegrityReport::default();
            let mut root = 0u64;
            for w in workers {
                // A checking thread that panicked (Automerge is contained, so this is a bug):
                // its documents count as unchecked below.
                if let Ok((part, r)) = w.join() {
                    report.merge(part);
                    root ^= r;
                }
            }
            (report, root, scanned)
        });
        let scanned = scanned?;
        progress(scanned);
        if scanned != report.documents {
            report.problem(format!(
                "{} of {scanned} documents could not be checked",
                scanned - report.documents
            ));
        }
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
