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

/// Whether a value decoded from an index key is the whole value: no string (or object key) was
/// cut at [`MAX_STRING_BYTES`] (a cut lands on a character boundary up to 3 bytes below it, so a
/// decoded string that long may have been cut), no array or object stopped adding members at
/// [`MAX_VALUE_BYTES`], and no number lost precision, at any depth.
fn exact(v: &Value) -> bool {
    let whole_str = |s: &str| s.len() + 3 < MAX_STRING_BYTES;
    match v {
        Value::String(s) => whole_str(s),
        Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() < 9.0e15),
        Value::Array(items) => {
            collate::encoded(v).len() < MAX_VALUE_BYTES && items.iter().all(exact)
        }
        Value::Object(members) => {
            collate::encoded(v).len() < MAX_VALUE_BYTES
                && members.iter().all(|(k, x)| whole_str(k) && exact(x))
        }
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
    // Fields nested in one another (`a` and `a.b`) cannot be put back into one object faithfully.
    let nested = def.fields.iter().any(|f| {
        def.fields.iter().any(|g| {
            g.segments().len() > f.segments().len() && g.segments().starts_with(f.segments())
        })
    });
    if nested {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `v` with every number written as its exact value (an integer-valued float as that
    /// integer), so a decoded float equals the integer it came from only if nothing was lost.
    fn norm(v: &Value) -> Value {
        match v {
            Value::Number(n) => Value::String(match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e19 => {
                    format!("{}", f as i128)
                }
                _ => n.to_string(),
            }),
            Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), norm(x))).collect())
            }
            other => other.clone(),
        }
    }

    /// The value an index key holds for `v`, decoded.
    fn through_key(v: &Value) -> Value {
        let bytes = collate::encoded(v);
        collate::decode(&bytes)
            .map(|(d, _)| d)
            .unwrap_or(Value::Null)
    }

    /// `exact` says a decoded value is whole exactly when it equals the original: never "whole"
    /// for a value the key cut (which would judge a selector on the wrong value).
    #[test]
    fn exact_only_for_values_a_key_holds_whole() {
        let long = |n: usize, c: &str| c.repeat(n);
        let cases = [
            json!("short"),
            json!(long(252, "a")),
            json!(long(300, "a")),
            // Three-byte characters: the cut lands below the limit.
            json!(long(100, "€")),
            json!(long(84, "€")),
            json!(12345),
            json!(1.5),
            json!(9_007_199_254_740_993_u64),
            json!([long(300, "b"), 1]),
            json!([1, 2, 3]),
            json!([9_007_199_254_740_993_u64]),
            Value::Object(Map::from_iter([(long(300, "k"), json!(1))])),
            json!({"k": long(300, "v")}),
            json!({"k": [1, {"n": 2}]}),
            json!((0..400).collect::<Vec<_>>()),
        ];
        for v in cases {
            let decoded = through_key(&v);
            if exact(&decoded) {
                assert_eq!(norm(&decoded), norm(&v), "judged whole but cut: {v}");
            }
        }
        // And the plainly whole ones are recognised (the fast path is used at all).
        for v in [
            json!("short"),
            json!(12345),
            json!([1, 2, 3]),
            json!({"k": [1, {"n": 2}]}),
        ] {
            assert!(exact(&through_key(&v)), "{v}");
        }
    }
}
