//! Queries against a brute-force oracle: random documents written, patched and deleted (some
//! before an index exists, some while it builds, some after), random selectors, sorts and page
//! sizes; following bookmarks, `find` returns exactly the documents that filtering every
//! document returns, each once, in the requested order, whichever plan it chose.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use concord::doc::write::{apply, Write};
use concord::find::{find, FindRequest, Query};
use concord::metrics::Metrics;
use concord::query::collate::compare;
use concord::query::{FieldPath, Selector};
use concord::store::index_registry::{BuildState, Definition};
use concord::store::{DocKey, Store, StoreError, StoreOptions};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const COLL: &str = "c";

fn small_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        (0i64..4).prop_map(|n| Some(json!(n))),
        prop::sample::select(vec!["x", "y", "z"]).prop_map(|s| Some(json!(s))),
        Just(Some(json!(true))),
    ]
}

fn document() -> impl Strategy<Value = Map<String, Value>> {
    (small_value(), small_value(), small_value(), 0usize..3).prop_map(|(a, b, d, tags)| {
        let mut m = Map::new();
        if let Some(a) = a {
            m.insert("a".into(), a);
        }
        if let Some(b) = b {
            m.insert("b".into(), b);
        }
        if let Some(d) = d {
            m.insert("c".into(), json!({ "d": d }));
        }
        m.insert("tags".into(), json!(["t"; 3][..tags]));
        m
    })
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Map<String, Value>),
    Patch(usize, Map<String, Value>),
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..25, document()).prop_map(|(i, d)| Op::Put(i, d)),
        2 => (0usize..25, document()).prop_map(|(i, d)| Op::Patch(i, d)),
        1 => (0usize..25).prop_map(Op::Delete),
    ]
}

fn field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c.d"])
}

fn value() -> impl Strategy<Value = Value> {
    small_value().prop_map(|v| v.unwrap_or(json!(2)))
}

fn condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        value(),
        value().prop_map(|v| json!({ "$eq": v })),
        value().prop_map(|v| json!({ "$ne": v })),
        value().prop_map(|v| json!({ "$gt": v })),
        value().prop_map(|v| json!({ "$lte": v })),
        (value(), value()).prop_map(|(x, y)| json!({ "$gte": x, "$lt": y })),
        prop::collection::vec(value(), 1..3).prop_map(|vs| json!({ "$in": vs })),
        any::<bool>().prop_map(|b| json!({ "$exists": b })),
    ]
}

fn conjunction() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(field(), condition(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => conjunction(),
        1 => (conjunction(), conjunction()).prop_map(|(x, y)| json!({ "$or": [x, y] })),
    ]
}

fn sort() -> impl Strategy<Value = Vec<Value>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![json!("a")]),
        Just(vec![json!({"b": "desc"})]),
        Just(vec![json!({"b": "asc"}), json!({"a": "asc"})]),
        Just(vec![json!({"c.d": "desc"})]),
    ]
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        sync_writes: false,
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), opts, Metrics::new()).unwrap();
    (dir, s)
}

fn run(s: &Store, model: &mut BTreeMap<String, Map<String, Value>>, op: &Op) {
    let (i, write) = match op {
        Op::Put(i, d) => (*i, Write::Replace(d.clone())),
        Op::Patch(i, d) => (*i, Write::MergePatch(d.clone())),
        Op::Delete(i) => (*i, Write::Delete),
    };
    let id = format!("d{i:02}");
    if matches!(op, Op::Delete(_) | Op::Patch(..)) && !model.contains_key(&id) {
        return;
    }
    s.write::<_, StoreError>(&DocKey::new(COLL, &id).unwrap(), |doc, _| {
        apply(doc, &write, 1).map_err(StoreError::Doc)
    })
    .unwrap();
    match op {
        Op::Put(_, d) => {
            model.insert(id, d.clone());
        }
        Op::Patch(_, d) => {
            let cur = model.get_mut(&id).unwrap();
            let mut v = Value::Object(std::mem::take(cur));
            merge_patch(&mut v, &Value::Object(d.clone()));
            if let Value::Object(m) = v {
                *cur = m;
            }
        }
        Op::Delete(_) => {
            model.remove(&id);
        }
    }
}

/// RFC 7396, the model of `PATCH`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn define(s: &Store, name: &str, fields: &[&str], partial: Option<Value>) {
    let def = Definition {
        fields: fields.iter().map(|f| f.to_string()).collect(),
        partial_filter: partial,
    };
    s.define_index(COLL, name, &def).unwrap();
}

fn build(s: &Store, steps: usize) {
    for def in s.indexes().building() {
        for _ in 0..steps {
            if s.index_build_step(&def, 3).unwrap() == BuildState::Ready {
                break;
            }
        }
    }
}

fn sort_keys(sort: &[Value]) -> Vec<(FieldPath, bool)> {
    sort.iter()
        .map(|k| match k {
            Value::String(f) => (FieldPath::parse(f).unwrap(), false),
            Value::Object(m) => {
                let (f, d) = m.iter().next().unwrap();
                (FieldPath::parse(f).unwrap(), d == "desc")
            }
            _ => unreachable!(),
        })
        .collect()
}

fn sort_order(keys: &[(FieldPath, bool)], x: &Value, y: &Value) -> Ordering {
    for (p, desc) in keys {
        // An absent field sorts before every value, `null` included.
        let o = match (p.get(x), p.get(y)) {
            (Some(a), Some(b)) => compare(a, b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        };
        let o = if *desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn find_matches_filtering_every_document(
        before in prop::collection::vec(op(), 0..30),
        during in prop::collection::vec(op(), 0..20),
        after in prop::collection::vec(op(), 0..20),
        queries in prop::collection::vec((selector(), sort(), 1usize..8), 1..6),
    ) {
        let (_dir, s) = store();
        let mut model = BTreeMap::new();
        for o in &before { run(&s, &mut model, o); }
        define(&s, "a", &["a"], None);
        define(&s, "ba", &["b", "a"], None);
        define(&s, "cd", &["c.d"], None);
        define(&s, "part", &["b"], Some(json!({"a": 1})));
        build(&s, 2);
        for o in &during { run(&s, &mut model, o); }
        build(&s, 1000);
        for o in &after { run(&s, &mut model, o); }

        for (sel, sort, limit) in queries {
            let selector = Selector::parse(&sel).unwrap();
            let keys = sort_keys(&sort);
            let mut want: Vec<(String, Value)> = model
                .iter()
                .map(|(id, d)| (id.clone(), Value::Object(d.clone())))
                .filter(|(_, d)| selector.matches(d))
                .collect();
            want.sort_by(|x, y| sort_order(&keys, &x.1, &y.1).then(x.0.cmp(&y.0)));

            let mut req = FindRequest {
                selector: Some(sel.clone()),
                sort: sort.clone(),
                limit: Some(limit),
                allow_scan: true,
                ..FindRequest::default()
            };
            let mut got: Vec<(String, Value)> = Vec::new();
            for _ in 0..200 {
                let r = find(&s, COLL, &Query::parse(&req).unwrap()).unwrap();
                prop_assert!(r.docs.len() <= limit);
                got.extend(r.docs.into_iter().map(|d| (d.id, Value::Object(d.doc))));
                match r.bookmark {
                    Some(b) => req.bookmark = Some(b),
                    None => break,
                }
            }
            // In the requested order ...
            for w in got.windows(2) {
                prop_assert_ne!(sort_order(&keys, &w[0].1, &w[1].1), Ordering::Greater,
                    "{} then {} for {} sorted {:?}", w[0].0, w[1].0, sel, sort);
            }
            // ... exactly the matching documents, each once, as they are.
            let mut got_sorted = got.clone();
            got_sorted.sort_by(|x, y| x.0.cmp(&y.0));
            let mut want_sorted = want.clone();
            want_sorted.sort_by(|x, y| x.0.cmp(&y.0));
            prop_assert_eq!(got_sorted, want_sorted, "selector {} sort {:?} limit {}", sel, sort, limit);
        }
    }
}
