//! The writes the API offers on a whole document, each applied as (at most) one Automerge change.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ObjId, Prop};
use serde_json::{Map, Value};

use super::json::{current_at, put_new, reconcile, reconcile_map, Current};
use super::ops::{self, Op};
use super::{tombstone, DocError};

/// A write request against one document.
#[derive(Debug, Clone)]
pub enum Write {
    /// Make the document equal to this object (applied as a diff).
    Replace(Map<String, Value>),
    /// RFC 7396 JSON merge patch.
    MergePatch(Map<String, Value>),
    /// CRDT operations on paths.
    Ops(Vec<Op>),
    /// A tombstone.
    Delete,
}

/// Applies `write` to `doc` as one change stamped `time_ms`. A write that changes nothing makes no
/// change (except creating a document, or re-creating a deleted one, which records an empty change). On error nothing is applied.
pub fn apply(doc: &mut Automerge, write: &Write, time_ms: i64) -> Result<(), DocError> {
    let opts = |_: &()| CommitOptions::default().with_time(time_ms);
    let result = match write {
        Write::Delete => return tombstone::delete(doc, time_ms).map(|_| ()),
        Write::Replace(body) => {
            doc.transact_with(opts, |tx| reconcile_map(tx, &automerge::ROOT, body))
        }
        Write::MergePatch(patch) => {
            doc.transact_with(opts, |tx| merge_patch(tx, &automerge::ROOT, patch))
        }
        Write::Ops(list) => doc.transact_with(opts, |tx| {
            for op in list {
                ops::apply(tx, op)?;
            }
            Ok(())
        }),
    };
    let success = result.map_err(|f| f.error)?;
    if success.hash.is_none() && (doc.get_heads().is_empty() || tombstone::is_deleted(doc, None)) {
        tombstone::recreate(doc, time_ms);
    }
    Ok(())
}

/// RFC 7396 applied directly to the Automerge tree, so that unchanged parts produce no operations.
fn merge_patch<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    patch: &Map<String, Value>,
) -> Result<(), DocError> {
    for (key, value) in patch {
        let prop = Prop::Map(key.clone());
        match value {
            Value::Null => {
                if tx.get(obj, key.as_str())?.is_some() {
                    tx.delete(obj, key.as_str())?;
                }
            }
            Value::Object(inner) => match current_at(tx, obj, prop.clone())? {
                Some(Current::Map(child)) => merge_patch(tx, &child, inner)?,
                _ => put_new(tx, obj, prop, &without_nulls(value), false)?,
            },
            other => {
                let cur = current_at(tx, obj, prop.clone())?;
                reconcile(tx, obj, prop, other, cur)?;
            }
        }
    }
    Ok(())
}

/// A merge patch applied to nothing: objects lose their null members (RFC 7396 §2).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::json::to_json;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut doc = Automerge::new();
        apply(
            &mut doc,
            &Write::Replace(obj(json!({"a": "b", "c": {"d": "e", "f": "g"}}))),
            1,
        )
        .unwrap();
        apply(
            &mut doc,
            &Write::MergePatch(obj(
                json!({"a": "z", "c": {"f": null}, "n": {"x": null, "y": 1}}),
            )),
            2,
        )
        .unwrap();
        assert_eq!(
            Value::Object(to_json(&doc, None)),
            json!({"a": "z", "c": {"d": "e"}, "n": {"y": 1}})
        );
    }

    #[test]
    fn delete_then_recreate() {
        let mut doc = Automerge::new();
        apply(&mut doc, &Write::Replace(obj(json!({"a": 1}))), 1).unwrap();
        apply(&mut doc, &Write::Delete, 2).unwrap();
        assert!(tombstone::is_deleted(&doc, None));
        apply(&mut doc, &Write::Replace(Map::new()), 3).unwrap();
        assert!(!tombstone::is_deleted(&doc, None));
        assert!(to_json(&doc, None).is_empty());
    }

    #[test]
    fn delete_concurrent_with_update_keeps_the_update() {
        let mut a = Automerge::new();
        apply(&mut a, &Write::Replace(obj(json!({"a": 1, "b": 1}))), 1).unwrap();
        let mut b = a.fork();
        apply(&mut a, &Write::Delete, 2).unwrap();
        apply(&mut b, &Write::MergePatch(obj(json!({"b": 2}))), 2).unwrap();
        a.merge(&mut b).unwrap();
        assert!(!tombstone::is_deleted(&a, None));
        assert_eq!(Value::Object(to_json(&a, None)), json!({"b": 2}));
    }

    #[test]
    fn delete_concurrent_with_edits_inside_fields_removes_those_edits() {
        let mut a = Automerge::new();
        let start = json!({"s": "old", "c": {"x": 1}, "k": 1});
        apply(&mut a, &Write::Replace(obj(start)), 1).unwrap();
        let mut b = a.fork();
        let mut only_edits = a.fork();
        apply(&mut a, &Write::Delete, 2).unwrap();
        let patch = json!({"s": "new", "c": {"x": 2}, "k": 2});
        apply(&mut b, &Write::MergePatch(obj(patch)), 2).unwrap();
        let edits = json!({"s": "new", "c": {"x": 2}});
        apply(&mut only_edits, &Write::MergePatch(obj(edits)), 2).unwrap();
        let mut deleted = a.fork();
        a.merge(&mut b).unwrap();
        assert_eq!(Value::Object(to_json(&a, None)), json!({"k": 2}));
        deleted.merge(&mut only_edits).unwrap();
        assert!(tombstone::is_deleted(&deleted, None));
    }

    #[test]
    fn concurrent_deletes_stay_deleted() {
        let mut a = Automerge::new();
        apply(&mut a, &Write::Replace(obj(json!({"a": 1}))), 1).unwrap();
        let mut b = a.fork();
        apply(&mut a, &Write::Delete, 2).unwrap();
        apply(&mut b, &Write::Delete, 2).unwrap();
        a.merge(&mut b).unwrap();
        assert!(tombstone::is_deleted(&a, None));
    }
}
