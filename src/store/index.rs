//! Secondary index entries: kept in the same `WriteBatch` as every commit that changes an
//! indexed document (whatever wrote it: REST, ops, bulk, posted changes, client sync, peers,
//! tombstones), built in the background for documents that existed before the index, and
//! scanned by key range for queries.
//!
//! Column families:
//! - `index_entries`: index id (8 bytes) · the document's encoded field values · its id · the
//!   id's length (2 bytes) → nothing. One entry per document per index.
//! - `index_rev`: index id · document id → the encoded values of its entry, so a commit replaces
//!   the old entry without the old JSON, and skips all work when the values did not change.
//! - `index_state`: index id → its [`BuildState`] on this node.

use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{Automerge, ScalarValue};
use rocksdb::WriteBatch;
use serde_json::Value;

use super::db::{cfs, handle};
use super::error::StoreError;
use super::index_registry::{
    definition_doc_id, BuildState, Definition, IndexDef, INDEXES_COLLECTION,
    MAX_INDEXES_PER_COLLECTION,
};
use super::keys::{self, DocKey};
use super::Store;
use crate::doc::contain::contained;
use crate::query::plan::prefix_end;

fn id_prefix(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn entry_key(id: u64, values: &[u8], doc_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + values.len() + doc_id.len() + 2);
    k.extend_from_slice(&id_prefix(id));
    k.extend_from_slice(values);
    k.extend_from_slice(doc_id.as_bytes());
    k.extend_from_slice(&(doc_id.len() as u16).to_be_bytes());
    k
}

fn rev_key(id: u64, doc_id: &str) -> Vec<u8> {
    let mut k = id_prefix(id).to_vec();
    k.extend_from_slice(doc_id.as_bytes());
    k
}

/// Splits an entry (without its index id) into its encoded values and its document id.
pub fn split_entry(entry: &[u8]) -> Option<(&[u8], &str)> {
    let n = entry.len();
    let len = usize::from(u16::from_be_bytes([
        *entry.get(n.checked_sub(2)?)?,
        entry[n - 1],
    ]));
    let id_start = n.checked_sub(2 + len)?;
    let id = std::str::from_utf8(&entry[id_start..n - 2]).ok()?;
    Some((&entry[..id_start], id))
}

/// A change to the registry that a commit of a definition document makes, applied once the
/// commit is durable.
pub(super) struct RegistryChange {
    collection: String,
    name: String,
    new: Option<Arc<IndexDef>>,
}

/// What defining an index did.
#[derive(Debug, PartialEq)]
pub enum Defined {
    Created,
    /// The same definition exists already.
    Unchanged,
    /// Another definition holds the name.
    Conflict(Definition),
    /// The collection has [`MAX_INDEXES_PER_COLLECTION`] indexes.
    TooMany,
}

/// A document's index values, or why they could not be read.
type Judged = Result<Option<Vec<u8>>, StoreError>;

fn encode_state(s: &BuildState) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(s).map_err(|e| StoreError::Corrupt(format!("index state: {e}")))
}

impl Store {
    /// The index entries this commit changes, added to its batch: for each index of the
    /// document's collection, the old entry goes and the new one comes when their values differ.
    /// A commit to a definition document also drops the entries of the index it replaces and
    /// starts the new one's build. Runs under the document's lock.
    pub(super) fn index_commit(
        &self,
        batch: &mut WriteBatch,
        key: &DocKey,
        doc: &Automerge,
        deleted: bool,
        json: Option<&Value>,
    ) -> Result<Option<RegistryChange>, StoreError> {
        let system = key.collection() == INDEXES_COLLECTION;
        if !system && !self.indexes.any(key.collection()) {
            return Ok(None);
        }
        let computed;
        let json = match json {
            Some(j) => j,
            None => {
                computed = contained("index values", || {
                    Value::Object(crate::doc::json::to_json(doc, None))
                })?;
                &computed
            }
        };
        for def in self.indexes.of(key.collection()) {
            let new = if deleted {
                None
            } else {
                def.entry_values(json)
            };
            self.stage_entry(batch, &def, key.id(), new)?;
        }
        if !system {
            return Ok(None);
        }
        let Some((collection, name)) = key.id().split_once(':') else {
            return Ok(None);
        };
        let new = if deleted {
            None
        } else {
            json.as_object()
                .and_then(IndexDef::from_document)
                .filter(|d| d.collection == collection && d.name == name)
                .map(Arc::new)
        };
        let old = self.indexes.get(collection, name);
        if old.as_ref().map(|d| d.id) == new.as_ref().map(|d| d.id) {
            return Ok(None);
        }
        if let Some(o) = &old {
            self.stage_drop(batch, o.id)?;
        }
        if let Some(n) = &new {
            let state = BuildState::Building {
                after: None,
                done: 0,
            };
            batch.put_cf(
                handle(self.db(), cfs::INDEX_STATE)?,
                id_prefix(n.id),
                encode_state(&state)?,
            );
        }
        Ok(Some(RegistryChange {
            collection: collection.to_string(),
            name: name.to_string(),
            new,
        }))
    }

    /// Replaces a document's entry in `def` by one with `new` values (or none).
    fn stage_entry(
        &self,
        batch: &mut WriteBatch,
        def: &IndexDef,
        doc_id: &str,
        new: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let rk = rev_key(def.id, doc_id);
        let old = self
            .db()
            .get_pinned_cf(handle(self.db(), cfs::INDEX_REV)?, &rk)?;
        self.stage_replacement(batch, def, doc_id, rk, old.as_deref(), new)
    }

    /// [`Store::stage_entry`] for many documents, their current entries read in one batched
    /// lookup (an index build's page).
    fn stage_entries(
        &self,
        batch: &mut WriteBatch,
        def: &IndexDef,
        docs: Vec<(&str, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let rev_cf = handle(self.db(), cfs::INDEX_REV)?;
        let rks: Vec<Vec<u8>> = docs.iter().map(|(id, _)| rev_key(def.id, id)).collect();
        let olds = self.db().batched_multi_get_cf(rev_cf, &rks, false);
        for (((doc_id, new), rk), old) in docs.into_iter().zip(rks).zip(olds) {
            let old = old?;
            self.stage_replacement(batch, def, doc_id, rk, old.as_deref(), new)?;
        }
        Ok(())
    }

    /// Stages the change from a document's `old` values in `def` (read from its reverse entry
    /// `rk`) to `new`: nothing when they are equal.
    fn stage_replacement(
        &self,
        batch: &mut WriteBatch,
        def: &IndexDef,
        doc_id: &str,
        rk: Vec<u8>,
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if old == new.as_deref() {
            return Ok(());
        }
        let entries_cf = handle(self.db(), cfs::INDEX_ENTRIES)?;
        if let Some(o) = old {
            batch.delete_cf(entries_cf, entry_key(def.id, o, doc_id));
        }
        match new {
            Some(v) => {
                batch.put_cf(entries_cf, entry_key(def.id, &v, doc_id), []);
                batch.put_cf(handle(self.db(), cfs::INDEX_REV)?, rk, v);
            }
            None => batch.delete_cf(handle(self.db(), cfs::INDEX_REV)?, rk),
        }
        Ok(())
    }

    /// Drops every entry and the state of index `id`.
    fn stage_drop(&self, batch: &mut WriteBatch, id: u64) -> Result<(), StoreError> {
        let p = id_prefix(id).to_vec();
        let end = prefix_end(&p);
        batch.delete_range_cf(handle(self.db(), cfs::INDEX_ENTRIES)?, &p, &end);
        batch.delete_range_cf(handle(self.db(), cfs::INDEX_REV)?, &p, &end);
        batch.delete_cf(handle(self.db(), cfs::INDEX_STATE)?, p);
        Ok(())
    }

    /// Applies a committed definition change to the registry.
    pub(super) fn index_registry_apply(&self, change: RegistryChange) {
        match change.new {
            Some(def) => {
                tracing::info!(collection = %def.collection, index = %def.name, "index defined: building");
                self.indexes.install(
                    def,
                    BuildState::Building {
                        after: None,
                        done: 0,
                    },
                );
            }
            None => {
                tracing::info!(collection = %change.collection, index = %change.name, "index dropped");
                self.indexes.remove(&change.collection, &change.name);
            }
        }
    }

    /// Loads every index definition and its build state (at open).
    pub(super) fn load_indexes(&self) -> Result<(), StoreError> {
        let mut after = None;
        loop {
            let page = self.list(INDEXES_COLLECTION, after.as_deref(), 256)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            for (id, meta) in page {
                if meta.deleted {
                    continue;
                }
                let key = DocKey::new(INDEXES_COLLECTION, &id)?;
                let json = self.read(&key, |doc, _| crate::doc::json::to_json(doc, None))?;
                let Some(def) = json.as_ref().and_then(IndexDef::from_document) else {
                    tracing::warn!(doc = %key, "an index definition this node cannot use");
                    continue;
                };
                let state = match self
                    .db()
                    .get_pinned_cf(handle(self.db(), cfs::INDEX_STATE)?, id_prefix(def.id))?
                {
                    Some(b) => serde_json::from_slice(&b)
                        .map_err(|e| StoreError::Corrupt(format!("index state: {e}")))?,
                    None => BuildState::Building {
                        after: None,
                        done: 0,
                    },
                };
                self.indexes.install(Arc::new(def), state);
            }
        }
    }

    /// Writes (or confirms) the definition of index `name` on `collection`.
    pub fn define_index(
        &self,
        collection: &str,
        name: &str,
        definition: &Definition,
    ) -> Result<Defined, StoreError> {
        keys::validate_collection(collection)?;
        let _define = self.index_define.lock();
        if let Some(existing) = self.indexes.get(collection, name) {
            return Ok(if existing.definition == *definition {
                Defined::Unchanged
            } else {
                Defined::Conflict(existing.definition.clone())
            });
        }
        if self.indexes.of(collection).len() >= MAX_INDEXES_PER_COLLECTION {
            return Ok(Defined::TooMany);
        }
        let key = DocKey::new(INDEXES_COLLECTION, &definition_doc_id(collection, name))?;
        let text = definition.canonical();
        self.write::<_, StoreError>(&key, |doc, _| {
            let mut tx = doc.transaction();
            let put = |tx: &mut automerge::transaction::Transaction<'_>, k: &str, v: &str| {
                tx.put(automerge::ROOT, k, ScalarValue::Str(v.into()))
                    .map_err(|e| StoreError::Doc(crate::doc::DocError::from(e)))
            };
            put(&mut tx, "collection", collection)?;
            put(&mut tx, "name", name)?;
            // One register: concurrent redefinitions converge to one winner, never a blend.
            put(&mut tx, "definition", &text)?;
            tx.commit();
            Ok(())
        })?;
        Ok(Defined::Created)
    }

    /// Deletes the definition of index `name` (its entries go with the commit); `false` when
    /// there is no such index.
    pub fn drop_index(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        let _define = self.index_define.lock();
        if self.indexes.get(collection, name).is_none() {
            return Ok(false);
        }
        let key = DocKey::new(INDEXES_COLLECTION, &definition_doc_id(collection, name))?;
        self.write::<_, StoreError>(&key, |doc, _| {
            crate::doc::tombstone::delete(doc, super::now_ms() as i64)
                .map(|_| ())
                .map_err(StoreError::Doc)
        })?;
        Ok(true)
    }

    /// Indexes up to `max_docs` more documents of a building index; returns its new state.
    /// Holds the locks of those documents while it reads them and writes their entries, so a
    /// concurrent commit can never be overwritten by an older entry.
    pub fn index_build_step(
        &self,
        def: &IndexDef,
        max_docs: usize,
    ) -> Result<BuildState, StoreError> {
        let Some(BuildState::Building { after, done }) = self.indexes.state(def.id) else {
            return Ok(BuildState::Ready);
        };
        let page = self.list(&def.collection, after.as_deref(), max_docs)?;
        let keys: Vec<DocKey> = page
            .iter()
            .filter(|(_, m)| !m.deleted)
            .map(|(id, _)| DocKey::new(&def.collection, id))
            .collect::<Result<_, _>>()?;
        let encs: Vec<Vec<u8>> = keys.iter().map(DocKey::encode).collect();
        let mut stripes: Vec<usize> = encs.iter().map(|e| self.stripe_index(e)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        #[cfg(test)]
        {
            let hook = self.after_listing.lock().take();
            if let Some(hook) = hook {
                hook(self);
            }
        }
        // Lock order: document stripes (ascending) before `index_admin`, as a commit of a
        // definition document takes its stripe and then `index_admin`. The other order hangs
        // both when that document's stripe is among this page's.
        let _guards: Vec<_> = stripes.iter().map(|i| self.stripe_at(*i).lock()).collect();
        // Shared with commits, exclusive of definition changes (see `index_admin`).
        let _admin = self.index_admin.read();
        match self.indexes.state(def.id) {
            // Dropped meanwhile: its entries are gone and must stay gone.
            None => return Ok(BuildState::Ready),
            // Still where this page was listed from.
            Some(BuildState::Building { after: now, .. }) if now == after => {}
            // Dropped and defined again (the same id, its build restarted), or moved on: the
            // page listed from the old position could skip documents; the next step lists again.
            Some(moved) => return Ok(moved),
        }
        // Loading documents is the cost: spread it over the cores, without caching them (a
        // build must not evict the working set).
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let per = keys.len().div_ceil(workers).max(1);
        let pairs: Vec<(&DocKey, &Vec<u8>)> = keys.iter().zip(&encs).collect();
        let json_cf = self.cf(cfs::DOC_JSON)?;
        let judged: Vec<(&DocKey, Judged)> = std::thread::scope(|scope| {
            let handles: Vec<_> = pairs
                .chunks(per)
                .map(|chunk| scope.spawn(move || self.index_values_many(def, json_cf, chunk)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        if judged.len() != keys.len() {
            return Err(StoreError::Corrupt(
                "an index build worker failed; the step will be retried".into(),
            ));
        }
        let mut staged = Vec::with_capacity(judged.len());
        for (key, values) in judged {
            match values {
                Ok(v) => staged.push((key.id(), v)),
                Err(e) if e.is_no_space() => return Err(e),
                // One unreadable document is left out of the index, not the whole build.
                Err(e) => tracing::warn!(doc = %key, error = %e, "index build skipped a document"),
            }
        }
        let mut batch = WriteBatch::default();
        self.stage_entries(&mut batch, def, staged)?;
        let next = match page.last() {
            Some((last, _)) if page.len() >= max_docs => BuildState::Building {
                after: Some(last.clone()),
                done: done + page.len() as u64,
            },
            _ => BuildState::Ready,
        };
        batch.put_cf(
            handle(self.db(), cfs::INDEX_STATE)?,
            id_prefix(def.id),
            encode_state(&next)?,
        );
        if next == BuildState::Ready {
            self.write_batch(batch)?;
        } else {
            // Not synced: a step's entries and the position after it are one batch, so a crash
            // that loses the unsynced end of the log only moves the build back to an earlier
            // position, consistent with the entries kept (RocksDB recovers a prefix of the log,
            // and any later synced commit makes this step durable as well). An fsync per step
            // of 256 documents was a large part of a build's time.
            self.write_batch_unsynced(batch)?;
        }
        self.indexes.set_state(def.id, next.clone());
        if next == BuildState::Ready {
            tracing::info!(collection = %def.collection, index = %def.name, "index ready");
        }
        Ok(next)
    }

    /// The values in `def` of some of a build page's documents (their locks held by the
    /// caller): their materialised JSON read in one batched lookup (the page is in key order,
    /// so neighbours share blocks and the lookups share block-cache probes), from RocksDB
    /// itself, which is never behind the JSON cache, and without filling it (a build must not
    /// evict the working set). A document without a copy is loaded from disk, not cached.
    fn index_values_many<'k>(
        &self,
        def: &IndexDef,
        json_cf: &rocksdb::ColumnFamily,
        docs: &[(&'k DocKey, &Vec<u8>)],
    ) -> Vec<(&'k DocKey, Judged)> {
        let stored = self.db.batched_multi_get_cf(
            json_cf,
            docs.iter().map(|(_, enc)| enc.as_slice()),
            false,
        );
        docs.iter()
            .zip(stored)
            .map(|((key, enc), stored)| {
                let values = match stored {
                    Err(e) => Err(e.into()),
                    Ok(Some(bytes)) => super::materialized::decode(&bytes)
                        .and_then(|m| m.parse())
                        .map(|json| def.entry_values(&Value::Object(json))),
                    Ok(None) => self.index_values_of_loaded(def, key, enc),
                };
                (*key, values)
            })
            .collect()
    }

    /// A document's values in `def` built from the document itself (it has no materialised
    /// JSON), loaded from disk unless cached, and not cached after.
    fn index_values_of_loaded(
        &self,
        def: &IndexDef,
        key: &DocKey,
        enc: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(loaded) = self.loaded_uncached(key, enc)? else {
            return Ok(None);
        };
        let state = loaded.state.read();
        if state.meta.deleted {
            return Ok(None);
        }
        let doc = &state.doc;
        Ok(contained("index values", || {
            def.entry_values(&Value::Object(crate::doc::json::to_json(doc, None)))
        })?)
    }

    /// Entries of index `id` (without the id) in `[lo, hi)`, at most `limit`, forward or
    /// backward.
    pub fn index_entries(
        &self,
        id: u64,
        lo: &[u8],
        hi: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let p = id_prefix(id);
        let start = [p.as_slice(), lo].concat();
        let end = [p.as_slice(), hi].concat();
        let mut iter = self
            .db()
            .raw_iterator_cf(handle(self.db(), cfs::INDEX_ENTRIES)?);
        let mut out = Vec::new();
        if reverse {
            iter.seek_for_prev(&end);
        } else {
            iter.seek(&start);
        }
        while let Some(k) = iter.key() {
            if out.len() >= limit || k < start.as_slice() || k >= end.as_slice() {
                if reverse && k >= end.as_slice() {
                    iter.prev();
                    continue;
                }
                break;
            }
            out.push(k[8..].to_vec());
            if reverse {
                iter.prev();
            } else {
                iter.next();
            }
        }
        iter.status()?;
        Ok(out)
    }

    /// The encoded values of a document's entry in index `id` (none when it has no entry).
    pub fn index_values(&self, id: u64, doc_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db()
            .get_cf(handle(self.db(), cfs::INDEX_REV)?, rev_key(id, doc_id))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use serde_json::json;

    fn store(dir: &std::path::Path) -> Store {
        let opts = StoreOptions {
            sync_writes: false,
            ..StoreOptions::default()
        };
        Store::open(dir, opts, crate::metrics::Metrics::new()).unwrap()
    }

    fn put(s: &Store, id: &str, v: Value) {
        let Value::Object(m) = v else { unreachable!() };
        s.write::<_, StoreError>(&DocKey::new("t", id).unwrap(), |doc, _| {
            crate::doc::write::apply(doc, &crate::doc::write::Write::Replace(m), 1)
                .map_err(StoreError::Doc)
        })
        .unwrap();
    }

    fn ids(s: &Store, def: &IndexDef, reverse: bool) -> Vec<String> {
        s.index_entries(def.id, &[], &[0xff], reverse, 1000)
            .unwrap()
            .iter()
            .map(|e| split_entry(e).unwrap().1.to_string())
            .collect()
    }

    fn build(s: &Store, def: &IndexDef) {
        while s.index_build_step(def, 2).unwrap() != BuildState::Ready {}
    }

    #[test]
    fn a_build_indexes_documents_too_large_to_keep_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let pad = "x".repeat(crate::store::materialized::MAX_JSON_BYTES + 1);
        put(&s, "big", json!({"n": 5, "pad": pad}));
        put(&s, "small", json!({"n": 1}));
        let big = DocKey::new("t", "big").unwrap();
        assert!(
            s.materialized(&big).unwrap().is_none(),
            "the large document has no materialised JSON: the build must load it"
        );
        let def = Definition {
            fields: vec!["n".into()],
            partial_filter: None,
        };
        s.define_index("t", "by_n", &def).unwrap();
        let ix = s.indexes.get("t", "by_n").unwrap();
        build(&s, &ix);
        assert_eq!(ids(&s, &ix, false), ["small", "big"]);
    }

    #[test]
    fn entries_follow_every_commit_and_builds_cover_earlier_documents() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        put(&s, "a", json!({"n": 3}));
        put(&s, "b", json!({"n": 1}));
        put(&s, "c", json!({"x": 1}));
        let def = Definition {
            fields: vec!["n".into()],
            partial_filter: None,
        };
        assert_eq!(s.define_index("t", "by_n", &def).unwrap(), Defined::Created);
        assert_eq!(
            s.define_index("t", "by_n", &def).unwrap(),
            Defined::Unchanged
        );
        let other = Definition {
            fields: vec!["x".into()],
            partial_filter: None,
        };
        assert_eq!(
            s.define_index("t", "by_n", &other).unwrap(),
            Defined::Conflict(def.clone())
        );
        let ix = s.indexes.get("t", "by_n").unwrap();
        // Written after the definition, before the build reaches it.
        put(&s, "d", json!({"n": 2}));
        build(&s, &ix);
        assert_eq!(s.indexes.state(ix.id), Some(BuildState::Ready));
        // `c` has no `n`: it is indexed as absent, before every value.
        assert_eq!(ids(&s, &ix, false), ["c", "b", "d", "a"]);
        assert_eq!(ids(&s, &ix, true), ["a", "d", "b", "c"]);
        // Updates move entries; a delete removes its entry; a field that goes is indexed as absent.
        put(&s, "b", json!({"n": 9}));
        put(&s, "d", json!({"y": 2}));
        s.write::<_, StoreError>(&DocKey::new("t", "a").unwrap(), |doc, _| {
            crate::doc::tombstone::delete(doc, 2)
                .map(|_| ())
                .map_err(StoreError::Doc)
        })
        .unwrap();
        assert_eq!(ids(&s, &ix, false), ["c", "d", "b"]);
        // Reopened: definitions and states come back.
        drop(s);
        let s = store(dir.path());
        let ix = s.indexes.get("t", "by_n").unwrap();
        assert_eq!(s.indexes.state(ix.id), Some(BuildState::Ready));
        assert_eq!(ids(&s, &ix, false), ["c", "d", "b"]);
        assert!(s.drop_index("t", "by_n").unwrap());
        assert!(s.indexes.get("t", "by_n").is_none());
        assert!(s
            .index_entries(ix.id, &[], &[0xff], false, 10)
            .unwrap()
            .is_empty());
    }

    /// A build interrupted by a restart resumes where it stopped, and indexes the documents
    /// written meanwhile exactly once.
    #[test]
    fn a_build_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for i in 0..10 {
            put(&s, &format!("d{i}"), json!({"n": i}));
        }
        let def = Definition {
            fields: vec!["n".into()],
            partial_filter: None,
        };
        s.define_index("t", "by_n", &def).unwrap();
        let ix = s.indexes.get("t", "by_n").unwrap();
        let step = s.index_build_step(&ix, 4).unwrap();
        assert_eq!(
            step,
            BuildState::Building {
                after: Some("d3".into()),
                done: 4
            }
        );
        drop(s);
        let s = store(dir.path());
        let ix = s.indexes.get("t", "by_n").unwrap();
        assert_eq!(s.indexes.state(ix.id), Some(step), "the progress survives");
        put(&s, "d1", json!({"n": 100}));
        put(&s, "e", json!({"n": -1}));
        build(&s, &ix);
        let mut want: Vec<String> = (0..10)
            .filter(|i| *i != 1)
            .map(|i| format!("d{i}"))
            .collect();
        want.insert(0, "e".into());
        want.push("d1".into());
        assert_eq!(ids(&s, &ix, false), want);
    }

    /// A build step and a definition write whose document shares a lock stripe with the
    /// step's page, run against each other many times: with the locks taken in opposite orders
    /// they hang each other (the step held `index_admin` and waited for the stripe the
    /// definition's commit held while it waited for `index_admin`).
    #[test]
    fn a_build_step_and_a_definition_write_never_hang_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(dir.path()));
        for i in 0..64 {
            put(&s, &format!("d{i:03}"), json!({"n": i}));
        }
        let page: std::collections::HashSet<usize> = (0..64)
            .map(|i| s.stripe_index(&DocKey::new("t", &format!("d{i:03}")).unwrap().encode()))
            .collect();
        // Definition documents (of collection `u`) locked by the same stripes as the page.
        let names: Vec<String> = (0..)
            .map(|i| format!("ix{i}"))
            .filter(|n| {
                let k = DocKey::new(INDEXES_COLLECTION, &definition_doc_id("u", n)).unwrap();
                page.contains(&s.stripe_index(&k.encode()))
            })
            .take(8)
            .collect();
        let def = Definition {
            fields: vec!["n".into()],
            partial_filter: None,
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let worker = {
            let s = s.clone();
            std::thread::spawn(move || {
                for round in 0..150 {
                    s.define_index("t", "by_n", &def).unwrap();
                    let ix = s.indexes.get("t", "by_n").unwrap();
                    let name = &names[round % names.len()];
                    std::thread::scope(|scope| {
                        scope.spawn(|| s.index_build_step(&ix, 64).unwrap());
                        scope.spawn(|| {
                            s.define_index("u", name, &def).unwrap();
                            s.drop_index("u", name).unwrap();
                        });
                    });
                    s.drop_index("t", "by_n").unwrap();
                }
                let _ = done_tx.send(());
            })
        };
        match done_rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(()) => worker.join().unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("a build step and a definition write hung each other")
            }
            // The worker panicked: its message is the failure.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(worker.join().unwrap_err())
            }
        }
    }

    /// Runs `change` on another thread from inside the next commit of `s`, between the moment
    /// that commit read the index registry and the moment its batch is written: the interleaving
    /// in which a commit could miss an index being installed (or dropped) at the same time.
    /// `change` gets a second to finish there (it does when nothing holds it back); then the
    /// commit goes on, and the change is joined after it.
    fn during_next_commit(
        s: &std::sync::Arc<Store>,
        change: impl FnOnce(&Store) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        *s.before_write.lock() = Some(Box::new({
            let s = s.clone();
            move |_: &Store| {
                let (done_tx, done_rx) = std::sync::mpsc::channel();
                let handle = std::thread::spawn(move || {
                    change(&s);
                    let _ = done_tx.send(());
                });
                let _ = done_rx.recv_timeout(std::time::Duration::from_secs(1));
                let _ = started_tx.send(handle);
            }
        }));
        // Handed over once the commit that ran the hook comes back.
        std::thread::spawn(move || {
            if let Ok(h) = started_rx.recv() {
                h.join().unwrap();
            }
        })
    }

    fn by_n() -> Definition {
        Definition {
            fields: vec!["n".into()],
            partial_filter: None,
        }
    }

    /// A document created while an index is defined and built from nothing is in the index:
    /// the commit that read "no index" must be written before the index is installed (so the
    /// build lists it), never after the build went past it.
    #[test]
    fn a_commit_racing_an_index_definition_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(dir.path()));
        let changed = during_next_commit(&s, |s| {
            s.define_index("t", "by_n", &by_n()).unwrap();
            let ix = s.indexes.get("t", "by_n").unwrap();
            build(s, &ix);
        });
        put(&s, "a", json!({"n": 1}));
        changed.join().unwrap();
        let ix = s.indexes.get("t", "by_n").unwrap();
        build(&s, &ix);
        assert_eq!(s.indexes.state(ix.id), Some(BuildState::Ready));
        assert_eq!(ids(&s, &ix, false), ["a"], "the racing document is indexed");
    }

    /// A commit that staged an entry for an index dropped at the same time leaves no entry
    /// behind (it is written before the drop deletes the index's entries).
    #[test]
    fn a_commit_racing_an_index_drop_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(dir.path()));
        s.define_index("t", "by_n", &by_n()).unwrap();
        let ix = s.indexes.get("t", "by_n").unwrap();
        build(&s, &ix);
        let changed = during_next_commit(&s, |s| {
            assert!(s.drop_index("t", "by_n").unwrap());
        });
        put(&s, "a", json!({"n": 1}));
        changed.join().unwrap();
        assert!(s.indexes.get("t", "by_n").is_none());
        assert_eq!(
            ids(&s, &ix, false),
            Vec::<String>::new(),
            "no entry survives"
        );
        assert_eq!(
            s.index_values(ix.id, "a").unwrap(),
            None,
            "no reverse entry"
        );
    }

    /// A build step that listed its page before its index was dropped and defined again (the
    /// same definition has the same id) does not carry the old position into the new build.
    #[test]
    fn a_step_from_before_a_redefinition_does_not_skip_documents() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for i in 0..6 {
            put(&s, &format!("d{i}"), json!({"n": i}));
        }
        s.define_index("t", "by_n", &by_n()).unwrap();
        let ix = s.indexes.get("t", "by_n").unwrap();
        // Part-built: positioned after `d3`.
        s.index_build_step(&ix, 2).unwrap();
        s.index_build_step(&ix, 2).unwrap();
        *s.after_listing.lock() = Some(Box::new(|s: &Store| {
            assert!(s.drop_index("t", "by_n").unwrap());
            s.define_index("t", "by_n", &by_n()).unwrap();
        }));
        s.index_build_step(&ix, 2).unwrap();
        let again = s.indexes.get("t", "by_n").unwrap();
        assert_eq!(again.id, ix.id, "the same definition has the same id");
        build(&s, &again);
        assert_eq!(ids(&s, &again, false), ["d0", "d1", "d2", "d3", "d4", "d5"]);
    }

    /// Two callers defining one name at once with different definitions: one is created, the
    /// other told of the conflict (never both told theirs was created).
    #[test]
    fn racing_definitions_of_one_name_create_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for round in 0..50 {
            let name = format!("ix{round}");
            let defs = [
                by_n(),
                Definition {
                    fields: vec!["m".into()],
                    partial_filter: None,
                },
            ];
            let outcomes: Vec<Defined> = std::thread::scope(|scope| {
                let hs: Vec<_> = defs
                    .iter()
                    .map(|d| scope.spawn(|| s.define_index("t", &name, d).unwrap()))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let created = outcomes.iter().filter(|o| **o == Defined::Created).count();
            assert_eq!(created, 1, "round {round}: {outcomes:?}");
            let winner = &s.indexes.get("t", &name).unwrap().definition;
            let i = outcomes
                .iter()
                .position(|o| *o == Defined::Created)
                .unwrap();
            assert_eq!(
                *winner, defs[i],
                "the one told it was created is the one defined"
            );
            assert!(s.drop_index("t", &name).unwrap());
        }
    }

    #[test]
    fn entries_split_into_values_and_id() {
        let e = entry_key(7, &[1, 2, 3], "doc:1");
        assert_eq!(split_entry(&e[8..]), Some((&[1u8, 2, 3][..], "doc:1")));
    }
}
