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
