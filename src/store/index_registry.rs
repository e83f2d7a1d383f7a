//! The secondary indexes this node knows, by collection, and how far each one's build has come.
//!
//! An index is defined by a document of the system collection [`INDEXES_COLLECTION`] (id
//! `{collection}:{name}`), so definitions replicate like any document; a concurrent redefinition
//! converges to one winner on every node (the definition is one register). Its entries never
//! travel: every node derives them from its own documents, under an id that hashes the whole
//! definition, so a changed definition is a new index that builds afresh.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::query::{FieldPath, Selector};

/// The system collection holding index definitions.
pub const INDEXES_COLLECTION: &str = super::keys::SYSTEM_COLLECTIONS[0];
/// Most indexes one collection may have.
pub const MAX_INDEXES_PER_COLLECTION: usize = 16;
/// Most fields one index may have.
pub const MAX_INDEX_FIELDS: usize = 8;

/// What a client declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_filter: Option<Value>,
}

/// Why a definition is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DefinitionError {
    #[error("an index needs 1 to {MAX_INDEX_FIELDS} fields")]
    FieldCount,
    #[error("`{0}` is not a field path (dots separate fields; escape a dot as \\.)")]
    Field(String),
    #[error("the field `{0}` is listed twice")]
    Duplicate(String),
    #[error("partial_filter: {0}")]
    Filter(String),
}

/// One index, parsed.
#[derive(Debug)]
pub struct IndexDef {
    /// Hash of collection, name and definition: the prefix of its entries.
    pub id: u64,
    pub collection: String,
    pub name: String,
    pub definition: Definition,
    pub fields: Vec<FieldPath>,
    pub partial: Option<Selector>,
}

impl Definition {
    /// Checks the definition and parses its fields and filter.
    pub fn parse(&self) -> Result<(Vec<FieldPath>, Option<Selector>), DefinitionError> {
        if self.fields.is_empty() || self.fields.len() > MAX_INDEX_FIELDS {
            return Err(DefinitionError::FieldCount);
        }
        let mut fields: Vec<FieldPath> = Vec::new();
        for f in &self.fields {
            let p = FieldPath::parse(f).ok_or_else(|| DefinitionError::Field(f.clone()))?;
            if fields.contains(&p) {
                return Err(DefinitionError::Duplicate(f.clone()));
            }
            fields.push(p);
        }
        let partial = match &self.partial_filter {
            None => None,
            Some(v) => {
                Some(Selector::parse(v).map_err(|e| DefinitionError::Filter(e.to_string()))?)
            }
        };
        Ok((fields, partial))
    }

    /// The canonical text stored in the definition document (and hashed into the index id).
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The id of the document defining `name` on `collection`.
pub fn definition_doc_id(collection: &str, name: &str) -> String {
    format!("{collection}:{name}")
}

impl IndexDef {
    /// Reads a definition document's JSON (`collection`, `name`, `definition`); `None` when it is
    /// not a usable definition (written by something else, or by a newer node).
    pub fn from_document(doc: &Map<String, Value>) -> Option<IndexDef> {
        let collection = doc.get("collection")?.as_str()?.to_string();
        let name = doc.get("name")?.as_str()?.to_string();
        let text = doc.get("definition")?.as_str()?;
        let definition: Definition = serde_json::from_str(text).ok()?;
        let (fields, partial) = definition.parse().ok()?;
        let id = xxhash_rust::xxh3::xxh3_64(
            format!("{collection}\0{name}\0{}", definition.canonical()).as_bytes(),
        );
        Some(IndexDef {
            id,
            collection,
            name,
            definition,
            fields,
            partial,
        })
    }

    /// The values part of this index's key for a document (its JSON; an absent field is
    /// [`crate::query::collate::MISSING`]), or `None` when the partial filter excludes it. Every
    /// other document is in the index, so a query on some of its fields never misses one that
    /// lacks the others.
    pub fn entry_values(&self, doc: &Value) -> Option<Vec<u8>> {
        if self.partial.as_ref().is_some_and(|p| !p.matches(doc)) {
            return None;
        }
        let mut out = Vec::new();
        for f in &self.fields {
            match f.get(doc) {
                Some(v) => crate::query::collate::encode(v, &mut out),
                None => out.push(crate::query::collate::MISSING),
            }
        }
        Some(out)
    }
}

/// How far an index's build has come (persisted per node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildState {
    /// Documents after `after` (an id) are still to be indexed; `done` have been.
    Building {
        after: Option<String>,
        done: u64,
    },
    Ready,
}

/// The indexes this node knows.
#[derive(Default)]
pub struct Registry {
    by_collection: RwLock<HashMap<String, Vec<Arc<IndexDef>>>>,
    states: RwLock<HashMap<u64, BuildState>>,
    /// Woken when an index needs building.
    pub changed: tokio::sync::Notify,
}

impl Registry {
    /// The indexes of `collection`.
    pub fn of(&self, collection: &str) -> Vec<Arc<IndexDef>> {
        self.by_collection
            .read()
            .get(collection)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `collection` has any index (the commit path's fast check).
    pub fn any(&self, collection: &str) -> bool {
        self.by_collection
            .read()
            .get(collection)
            .is_some_and(|v| !v.is_empty())
    }

    /// The index named `name` on `collection`.
    pub fn get(&self, collection: &str, name: &str) -> Option<Arc<IndexDef>> {
        self.of(collection).into_iter().find(|d| d.name == name)
    }

    pub fn state(&self, id: u64) -> Option<BuildState> {
        self.states.read().get(&id).cloned()
    }

    pub fn set_state(&self, id: u64, state: BuildState) {
        self.states.write().insert(id, state);
    }

    /// Every index still building.
    pub fn building(&self) -> Vec<Arc<IndexDef>> {
        // Lock order: `by_collection` before `states`, as `install` and `remove` take them.
        let by_collection = self.by_collection.read();
        let states = self.states.read();
        let building = by_collection
            .values()
            .flatten()
            .filter(|d| !matches!(states.get(&d.id), Some(BuildState::Ready)))
            .cloned()
            .collect();
        building
    }

    /// Installs `def` in place of any index of the same collection and name; returns the one it
    /// replaced.
    pub fn install(&self, def: Arc<IndexDef>, state: BuildState) -> Option<Arc<IndexDef>> {
        let mut map = self.by_collection.write();
        let list = map.entry(def.collection.clone()).or_default();
        let old = list
            .iter()
            .position(|d| d.name == def.name)
            .map(|i| list.remove(i));
        if let Some(o) = &old {
            self.states.write().remove(&o.id);
        }
        self.states.write().insert(def.id, state);
        list.push(def);
        list.sort_by(|a, b| a.name.cmp(&b.name));
        drop(map);
        self.changed.notify_one();
        old
    }

    /// Removes the index `name` of `collection`; returns it.
    pub fn remove(&self, collection: &str, name: &str) -> Option<Arc<IndexDef>> {
        let mut map = self.by_collection.write();
        let list = map.get_mut(collection)?;
        let i = list.iter().position(|d| d.name == name)?;
        let old = list.remove(i);
        self.states.write().remove(&old.id);
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(fields: Value, filter: Option<Value>) -> Map<String, Value> {
        let d = Definition {
            fields: serde_json::from_value(fields).unwrap(),
            partial_filter: filter,
        };
        json!({"collection": "tasks", "name": "ix", "definition": d.canonical()})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn definitions_parse_hash_and_key_documents() {
        let a = IndexDef::from_document(&doc(json!(["status", "due"]), None)).unwrap();
        let b = IndexDef::from_document(&doc(json!(["status", "due"]), None)).unwrap();
        let c = IndexDef::from_document(&doc(json!(["due", "status"]), None)).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id, "another definition is another index");
        let k = a
            .entry_values(&json!({"status": "open", "due": 3}))
            .unwrap();
        assert!(
            k < a
                .entry_values(&json!({"status": "open", "due": 4}))
                .unwrap()
        );
        let missing = a.entry_values(&json!({"status": "open"})).unwrap();
        assert!(missing < k, "an absent field sorts first");
        let p =
            IndexDef::from_document(&doc(json!(["due"]), Some(json!({"done": false})))).unwrap();
        assert!(p.entry_values(&json!({"due": 1, "done": false})).is_some());
        assert!(p.entry_values(&json!({"due": 1, "done": true})).is_none());
    }

    #[test]
    fn bad_definitions_are_refused() {
        let d = |f: Value, p: Option<Value>| {
            Definition {
                fields: serde_json::from_value(f).unwrap(),
                partial_filter: p,
            }
            .parse()
            .err()
        };
        assert_eq!(d(json!([]), None), Some(DefinitionError::FieldCount));
        assert_eq!(
            d(json!(["a", "a"]), None),
            Some(DefinitionError::Duplicate("a".into()))
        );
        assert_eq!(
            d(json!(["a..b"]), None),
            Some(DefinitionError::Field("a..b".into()))
        );
        assert!(matches!(
            d(json!(["a"]), Some(json!({"x": {"$nope": 1}}))),
            Some(DefinitionError::Filter(_))
        ));
        assert_eq!(d(json!(["a", "b.c"]), None), None);
    }
}
