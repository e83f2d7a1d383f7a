//! Selector filters for the changes feed (`GET /v1/changes?collection=&selector=`), answered
//! from an index where one covers the selector: each changed document is judged by the values
//! its index entry holds (one point read), not by loading it. Values an entry may hold only in
//! part (long strings, large arrays or objects, integers beyond 2^53) are judged on the document
//! itself. Without a covering index the documents are loaded, which is refused for collections
//! of more than [`super::SMALL_COLLECTION`] documents unless the caller allows the scan.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{insert_path, FindError, SMALL_COLLECTION};
use crate::access::Grant;
use crate::metrics::Metrics;
use crate::query::collate::{self, MAX_STRING_BYTES, MAX_VALUE_BYTES};
use crate::query::selector::Selector;
use crate::store::index_registry::{BuildState, IndexDef};
use crate::store::{DocKey, FeedEntry, Store, StoreError};

/// How changed documents are judged.
pub struct FeedFilter {
    collection: String,
    selector: Selector,
    index: Option<Arc<IndexDef>>,
}

fn paths_of(s: &Selector, out: &mut BTreeSet<Vec<String>>) {
    match s {
        Selector::All(parts) | Selector::Any(parts) | Selector::NoneOf(parts) => {
            parts.iter().for_each(|p| paths_of(p, out))
        }
        Selector::Not(inner) => paths_of(inner, out),
        Selector::Field(p, _) => {
            out.insert(p.segments().to_vec());
        }
    }
}

/// Every path a selector reads.
pub(crate) fn selector_paths(s: &Selector) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    paths_of(s, &mut out);
    out
}

/// Whether a condition's outcome could depend on parts of a value an index key cuts off.
fn exact(v: &Value) -> bool {
    match v {
        Value::String(s) => s.len() < MAX_STRING_BYTES,
        Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() < 9.0e15),
        Value::Array(_) | Value::Object(_) => collate::encoded(v).len() < MAX_VALUE_BYTES,
        _ => true,
    }
}

impl FeedFilter {
    /// A filter for `selector` on `collection`.
    pub fn new(
        store: &Store,
        collection: &str,
        selector: Selector,
        allow_scan: bool,
    ) -> Result<FeedFilter, FindError> {
        let paths = selector_paths(&selector);
        let index = store.indexes().of(collection).into_iter().find(|d| {
            d.partial.is_none()
                && store.indexes().state(d.id) == Some(BuildState::Ready)
                && paths
                    .iter()
                    .all(|p| d.fields.iter().any(|f| f.segments() == p.as_slice()))
        });
        if index.is_none() && !allow_scan && store.collection_count(collection)? > SMALL_COLLECTION
        {
            let fields: Vec<String> = paths.iter().map(|p| p.join(".")).collect();
            return Err(FindError::NeedsIndex {
                collection: collection.to_string(),
                count: store.collection_count(collection)?,
                fields,
            });
        }
        Ok(FeedFilter {
            collection: collection.to_string(),
            selector,
            index,
        })
    }

    /// Whether the changed document matches now (a deleted one never does).
    pub fn keep(
        &self,
        store: &Store,
        metrics: &Metrics,
        e: &FeedEntry,
    ) -> Result<bool, StoreError> {
        if e.deleted || e.collection != self.collection {
            return Ok(false);
        }
        if let Some(def) = &self.index {
            if let Some(doc) = self.indexed_fields(store, def, &e.id)? {
                return Ok(self.selector.matches(&doc));
            }
        }
        metrics.feed_filter_docs_loaded.inc();
        let key = DocKey::new(&self.collection, &e.id)?;
        Ok(store
            .current_json(&key)?
            .is_some_and(|c| self.selector.matches(&Value::Object(c.json))))
    }

    /// The indexed fields of a document, from its index entry; `None` when the entry is missing
    /// or may hold a value only in part.
    fn indexed_fields(
        &self,
        store: &Store,
        def: &IndexDef,
        id: &str,
    ) -> Result<Option<Value>, StoreError> {
        Ok(store
            .index_values(def.id, id)?
            .and_then(|bytes| entry_fields(def, &bytes)))
    }
}

/// The indexed fields of a document as an object, from its index entry's encoded values;
/// `None` when a value may be held only in part (then only the document can judge it).
pub(crate) fn entry_fields(def: &IndexDef, values: &[u8]) -> Option<Value> {
    let mut doc = Map::new();
    let mut rest = values;
    for f in &def.fields {
        if rest.first() == Some(&collate::MISSING) {
            rest = &rest[1..];
            continue;
        }
        let (v, n) = collate::decode(rest)?;
        if !exact(&v) {
            return None;
        }
        rest = &rest[n..];
        insert_path(&mut doc, f.segments(), v);
    }
    Some(Value::Object(doc))
}

/// The changes feed as a caller narrowed to some documents of a collection sees it: entries of
/// documents that are in one of its scopes now (each selector judged as a [`FeedFilter`] is,
/// from an index on the scope's fields where there is one). Deletions are left out: a deleted
/// document's contents are not kept to judge it by.
///
/// A page far behind the head of the feed is answered from the scopes themselves
/// ([`ScopeFeed::page_from_scopes`]): the caller's documents found through the scopes' indexes
/// (or their id prefixes), each one's current feed entry read, so the work follows the caller's
/// documents, not everyone's changes since the cursor.
pub struct ScopeFeed {
    collection: String,
    parts: Vec<ScopePart>,
    /// The caller, which judges a document on its JSON.
    who: Grant,
}

struct ScopePart {
    prefix: Option<String>,
    selector: Option<(Selector, FeedFilter)>,
}

/// A page of the feed: entries with their sequence numbers, and the cursor after it.
pub type FeedPage = (Vec<(u64, FeedEntry)>, u64);

/// Most documents a page from the scopes gathers before the feed is scanned instead.
pub const MAX_SCOPE_DOCS: usize = 10_000;

/// How far behind the head of the feed a narrowed caller's cursor must be for its page to be
/// answered from its documents.
pub const FAR_BEHIND: u64 = 1_000;

impl ScopeFeed {
    pub fn new(store: &Store, collection: &str, who: &Grant) -> Result<ScopeFeed, FindError> {
        let parts = who
            .narrowing(collection)
            .into_iter()
            .map(|s| {
                let selector = match &s.selector {
                    Some((_, sel)) => Some((
                        sel.clone(),
                        FeedFilter::new(store, collection, sel.clone(), true)?,
                    )),
                    None => None,
                };
                Ok(ScopePart {
                    prefix: s.id_prefix.clone(),
                    selector,
                })
            })
            .collect::<Result<Vec<_>, FindError>>()?;
        Ok(ScopeFeed {
            collection: collection.to_string(),
            parts,
            who: who.clone(),
        })
    }

    /// Whether the caller sees the changed document now.
    pub fn keep(
        &self,
        store: &Store,
        metrics: &Metrics,
        e: &FeedEntry,
    ) -> Result<bool, StoreError> {
        if e.deleted || e.collection != self.collection {
            return Ok(false);
        }
        for part in &self.parts {
            if part.prefix.as_deref().is_some_and(|p| !e.id.starts_with(p)) {
                continue;
            }
            match &part.selector {
                None => return Ok(true),
                Some((_, f)) if f.keep(store, metrics, e)? => return Ok(true),
                Some(_) => {}
            }
        }
        Ok(false)
    }

    /// The feed after `since` as the caller sees it, from its documents rather than from the
    /// feed, when `since` is more than [`FAR_BEHIND`] behind the head (closer, reading the few
    /// changes since is cheaper): each document's one current entry up to the watermark, in
    /// feed order (at most `limit`; the cursor is the last one's when the page is full, else the
    /// watermark). `None` when the feed should be read instead: the cursor is close, a scope
    /// cannot be answered this way (no index serves its selector), or the scopes hold more than
    /// [`MAX_SCOPE_DOCS`] documents.
    ///
    /// The watermark is read first, and no commit at or below it is still in flight, so the
    /// indexes and metadata read after it hold every such commit; a commit that slips between
    /// those reads is above the watermark and left to the next page, which judges it afresh.
    pub fn page_from_scopes(
        &self,
        store: &Store,
        since: u64,
        limit: usize,
    ) -> Result<Option<FeedPage>, FindError> {
        let upto = *store.feed_watermark().borrow();
        if upto.saturating_sub(since) <= FAR_BEHIND {
            return Ok(None);
        }
        self.page_between(store, since, upto, limit)
    }

    /// [`ScopeFeed::page_from_scopes`] after `since` up to `upto`, which must be a watermark
    /// read before the call, whatever the distance between them.
    pub fn page_between(
        &self,
        store: &Store,
        since: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Option<FeedPage>, FindError> {
        // The caller's documents: those an index entry or the id shows to be in a scope, and
        // those only their JSON can tell (an index entry that holds a value only in part, or an
        // index that does not hold every field the scope reads).
        let mut admitted = BTreeSet::new();
        let mut unsure = BTreeSet::new();
        for part in &self.parts {
            match (&part.selector, &part.prefix) {
                (Some((sel, _)), prefix) => {
                    let Some(hits) =
                        super::candidates(store, &self.collection, sel, MAX_SCOPE_DOCS)?
                    else {
                        return Ok(None);
                    };
                    for hit in hits {
                        if prefix.as_deref().is_some_and(|p| !hit.id.starts_with(p)) {
                            continue;
                        }
                        match &hit.fields {
                            Some(fields) if sel.matches(fields) => {
                                admitted.insert(hit.id);
                            }
                            Some(_) => {}
                            None => {
                                unsure.insert(hit.id);
                            }
                        }
                    }
                }
                (None, Some(prefix)) => {
                    match store.ids_with_prefix(&self.collection, prefix, MAX_SCOPE_DOCS)? {
                        Some(found) => admitted.extend(found),
                        None => return Ok(None),
                    }
                }
                // A whole collection is no narrowing: such callers read the feed.
                (None, None) => return Ok(None),
            }
            if admitted.len() + unsure.len() > MAX_SCOPE_DOCS {
                return Ok(None);
            }
        }
        unsure.retain(|id| !admitted.contains(id));
        // Batched reads: the documents' metadata (their feed entries), then the JSON of the
        // unsure ones in the window, judged against the scopes.
        let ids: Vec<(String, bool)> = admitted
            .into_iter()
            .map(|id| (id, true))
            .chain(unsure.into_iter().map(|id| (id, false)))
            .collect();
        let keys = ids
            .iter()
            .map(|(id, _)| DocKey::new(&self.collection, id))
            .collect::<Result<Vec<_>, _>>()?;
        let metas = store.meta_many(&keys)?;
        let mut entries = Vec::new();
        let mut to_judge = Vec::new();
        for (((id, sure), key), meta) in ids.into_iter().zip(keys).zip(metas) {
            let Some(meta) = meta else { continue };
            let Some(seq) = meta.feed_seq else { continue };
            if seq <= since || seq > upto || meta.deleted {
                continue;
            }
            let entry = FeedEntry {
                collection: self.collection.clone(),
                id,
                heads: meta.heads,
                deleted: false,
            };
            if sure {
                entries.push((seq, entry));
            } else {
                to_judge.push((seq, entry, key));
            }
        }
        let judge_keys: Vec<DocKey> = to_judge.iter().map(|j| j.2.clone()).collect();
        let jsons = store.current_json_many(&judge_keys)?;
        for ((seq, entry, _), json) in to_judge.into_iter().zip(jsons) {
            let Some(current) = json else { continue };
            if self
                .who
                .sees(&self.collection, &entry.id, &Value::Object(current.json))
            {
                entries.push((seq, entry));
            }
        }
        entries.sort_by_key(|(seq, _)| *seq);
        if entries.len() >= limit {
            entries.truncate(limit);
            let last = entries.last().map_or(upto, |(s, _)| *s);
            return Ok(Some((entries, last)));
        }
        Ok(Some((entries, upto)))
    }
}
