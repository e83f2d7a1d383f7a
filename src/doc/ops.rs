//! CRDT operations on JSON Pointer paths (`POST .../ops`), applied together as one change.

use automerge::transaction::Transactable;
use automerge::{ObjType, Prop, ScalarValue};
use serde::Deserialize;
use serde_json::Value;

use super::json::{current_at, put_new, reconcile, Current};
use super::pointer::{self, Slot};
use super::DocError;

/// One operation. Paths are JSON Pointers (RFC 6901); list positions are indexes, `-` appends.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Sets the value at `path` (reconciled against what is there, like a replace).
    Set { path: String, value: Value },
    /// Removes a map key, or `count` list elements starting at the index.
    Remove {
        path: String,
        #[serde(default)]
        count: Option<usize>,
    },
    /// Adds `by` (default 1) to the counter at `path`; a missing map key becomes a counter.
    Increment {
        path: String,
        #[serde(default = "one")]
        by: i64,
    },
    /// Creates (or resets) a counter at `path` with `value` (default 0).
    Counter {
        path: String,
        #[serde(default)]
        value: i64,
    },
    /// Edits the text at `path`: deletes `delete` characters at `index`, then inserts `insert`.
    /// Positions count Unicode code points.
    Splice {
        path: String,
        index: usize,
        #[serde(default)]
        delete: usize,
        #[serde(default)]
        insert: String,
    },
    /// Inserts `value` (or each of `values`) into the list at `path`, before `index` (default: at
    /// the end).
    Insert {
        path: String,
        #[serde(default)]
        index: Option<usize>,
        #[serde(default, deserialize_with = "present")]
        value: Option<Value>,
        #[serde(default)]
        values: Option<Vec<Value>>,
    },
}

fn one() -> i64 {
    1
}

/// Distinguishes `"value": null` (insert a null) from a missing `value`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Set { path, .. }
            | Op::Remove { path, .. }
            | Op::Increment { path, .. }
            | Op::Counter { path, .. }
            | Op::Splice { path, .. }
            | Op::Insert { path, .. } => path,
        }
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> DocError {
    DocError::InvalidTarget {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Applies one op inside a transaction.
pub fn apply<T: Transactable>(tx: &mut T, op: &Op) -> Result<(), DocError> {
    let path = op.path();
    let tokens = pointer::parse(path)?;
    match op {
        Op::Set { value, .. } => match pointer::resolve_slot(tx, path, &tokens)? {
            Slot::Index { obj, index, len } if index == len => {
                put_new(tx, &obj, Prop::Seq(index), value, true)
            }
            slot => {
                let cur = current_at(tx, slot.obj(), slot.prop())?;
                reconcile(tx, slot.obj(), slot.prop(), value, cur)
            }
        },
        Op::Remove { count, .. } => match pointer::resolve_slot(tx, path, &tokens)? {
            Slot::Key { obj, key } => {
                if tx.get(&obj, key.as_str())?.is_none() {
                    return Err(DocError::PathNotFound(path.to_string()));
                }
                tx.delete(&obj, key.as_str())?;
                Ok(())
            }
            Slot::Index { obj, index, len } => {
                let n = count.unwrap_or(1);
                if index >= len || n > len - index {
                    return Err(invalid(
                        path,
                        format!("cannot remove {n} element(s) at {index} from a list of {len}"),
                    ));
                }
                tx.splice(
                    &obj,
                    index,
                    n as isize,
                    std::iter::empty::<automerge::hydrate::Value>(),
                )?;
                Ok(())
            }
        },
        Op::Increment { by, .. } => {
            let slot = pointer::resolve_slot(tx, path, &tokens)?;
            if let Slot::Index { index, len, .. } = slot {
                if index == len {
                    return Err(invalid(
                        path,
                        "increment needs an existing counter, not the end of a list",
                    ));
                }
            }
            match current_at(tx, slot.obj(), slot.prop())? {
                Some(Current::Counter(_)) => Ok(tx.increment(slot.obj(), slot.prop(), *by)?),
                None => Ok(tx.put(slot.obj(), slot.prop(), ScalarValue::counter(*by))?),
                Some(_) => Err(invalid(
                    path,
                    "not a counter (create one with the `counter` op)",
                )),
            }
        }
        Op::Counter { value, .. } => match pointer::resolve_slot(tx, path, &tokens)? {
            Slot::Index { obj, index, len } if index == len => {
                Ok(tx.insert(&obj, index, ScalarValue::counter(*value))?)
            }
            slot => Ok(tx.put(slot.obj(), slot.prop(), ScalarValue::counter(*value))?),
        },
        Op::Splice {
            index,
            delete,
            insert,
            ..
        } => {
            let (obj, typ) = pointer::resolve_object(tx, path, &tokens)?;
            if typ != ObjType::Text {
                return Err(invalid(path, "splice needs text (a JSON string)"));
            }
            let len = tx.length(&obj);
            if *index > len || *delete > len - index {
                return Err(invalid(
                    path,
                    format!("cannot delete {delete} at {index} from text of length {len}"),
                ));
            }
            tx.splice_text(&obj, *index, *delete as isize, insert)?;
            Ok(())
        }
        Op::Insert {
            index,
            value,
            values,
            ..
        } => {
            let (obj, typ) = pointer::resolve_object(tx, path, &tokens)?;
            if typ != ObjType::List {
                return Err(invalid(path, "insert needs a list (a JSON array)"));
            }
            let len = tx.length(&obj);
            let at = index.unwrap_or(len);
            if at > len {
                return Err(invalid(
                    path,
                    format!("index {at} is past the end of a list of {len}"),
                ));
            }
            let items: Vec<&Value> = match (value, values) {
                (Some(v), None) => vec![v],
                (None, Some(vs)) => vs.iter().collect(),
                _ => {
                    return Err(DocError::BadOp(
                        "insert takes exactly one of `value` or `values`".into(),
                    ))
                }
            };
            for (i, v) in items.into_iter().enumerate() {
                put_new(tx, &obj, Prop::Seq(at + i), v, true)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::json::to_json;
    use automerge::Automerge;
    use serde_json::json;

    fn run(doc: &mut Automerge, ops: Value) -> Result<(), DocError> {
        let ops: Vec<Op> = serde_json::from_value(ops).unwrap();
        doc.transact(|tx| {
            for op in &ops {
                apply(tx, op)?;
            }
            Ok::<_, DocError>(())
        })
        .map(|_| ())
        .map_err(|f| f.error)
    }

    #[test]
    fn all_ops() {
        let mut doc = Automerge::new();
        run(
            &mut doc,
            json!([
                {"op": "set", "path": "/t", "value": "hello"},
                {"op": "set", "path": "/l", "value": [1, 2, 3]},
                {"op": "counter", "path": "/c"},
                {"op": "increment", "path": "/c", "by": 5},
                {"op": "splice", "path": "/t", "index": 5, "insert": " world"},
                {"op": "insert", "path": "/l", "index": 0, "value": 0},
                {"op": "insert", "path": "/l", "values": [4, 5]},
                {"op": "remove", "path": "/l/1", "count": 2},
                {"op": "set", "path": "/l/-", "value": {"x": 1}},
                {"op": "set", "path": "/gone", "value": 1},
                {"op": "remove", "path": "/gone"},
            ]),
        )
        .unwrap();
        assert_eq!(
            Value::Object(to_json(&doc, None)),
            json!({"t": "hello world", "l": [0, 3, 4, 5, {"x": 1}], "c": 5})
        );
    }

    #[test]
    fn concurrent_increments_add() {
        let mut a = Automerge::new();
        run(&mut a, json!([{"op": "counter", "path": "/n"}])).unwrap();
        let mut b = a.fork();
        run(&mut a, json!([{"op": "increment", "path": "/n"}])).unwrap();
        run(&mut b, json!([{"op": "increment", "path": "/n"}])).unwrap();
        a.merge(&mut b).unwrap();
        assert_eq!(to_json(&a, None)["n"], json!(2));
    }

    #[test]
    fn bad_targets_are_errors_and_roll_back() {
        let mut doc = Automerge::new();
        run(&mut doc, json!([{"op": "set", "path": "/a", "value": 1}])).unwrap();
        let heads = doc.get_heads();
        for bad in [
            json!([{"op": "increment", "path": "/a"}]),
            json!([{"op": "remove", "path": "/missing"}]),
            json!([{"op": "set", "path": "/a/b", "value": 1}]),
            json!([{"op": "splice", "path": "/a", "index": 0}]),
            json!([{"op": "set", "path": "/x", "value": 1}, {"op": "set", "path": "", "value": 1}]),
        ] {
            assert!(run(&mut doc, bad.clone()).is_err(), "{bad} should fail");
            assert_eq!(doc.get_heads(), heads, "{bad} must not leave a change");
        }
    }
}
