//! Property tests: JSON round-trips exactly, and replaying the same changes in any order gives
//! the same document.

use automerge::{Automerge, Change};
use concord::doc::json::to_json;
use concord::doc::write::{apply, Write};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(|u| Value::Number(u.into())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(".{0,8}", json_value(), 0..8).prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any JSON object stored and read back is equal, numbers included; so is one replaced by
    /// another (the diff path), and both survive save/load.
    #[test]
    fn json_round_trips(a in json_object(), b in json_object()) {
        let mut doc = Automerge::new();
        apply(&mut doc, &Write::Replace(a.clone()), 1).unwrap();
        prop_assert_eq!(&to_json(&doc, None), &a);
        let v1 = doc.get_heads();
        apply(&mut doc, &Write::Replace(b.clone()), 2).unwrap();
        prop_assert_eq!(&to_json(&doc, None), &b);
        prop_assert_eq!(&to_json(&doc, Some(&v1)), &a);
        let loaded = Automerge::load(&doc.save()).unwrap();
        prop_assert_eq!(&to_json(&loaded, None), &b);
    }

    /// Several writers edit forks of one document; their changes applied in any two orders
    /// give identical documents (same JSON, same heads).
    #[test]
    fn any_order_converges(
        base in json_object(),
        edits in prop::collection::vec((0usize..3, json_object(), any::<bool>()), 1..12),
        seed in any::<u64>(),
    ) {
        let mut origin = Automerge::new();
        apply(&mut origin, &Write::Replace(base), 1).unwrap();
        let mut forks: Vec<Automerge> = (0..3).map(|_| origin.fork()).collect();
        for (i, (w, body, patch)) in edits.into_iter().enumerate() {
            let write = if patch { Write::MergePatch(body) } else { Write::Replace(body) };
            apply(&mut forks[w], &write, i as i64).unwrap();
            if i % 4 == 3 {
                // Occasionally learn from a neighbour, so changes have cross-writer deps.
                let (l, r) = forks.split_at_mut(1);
                l[0].merge(&mut r[0]).unwrap();
            }
        }
        let mut all: Vec<Change> = forks.iter().flat_map(|f| f.get_changes(&[])).collect();
        all.sort_by_key(|c| c.hash());
        all.dedup_by_key(|c| c.hash());

        let mut shuffled = all.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut x = Automerge::new();
        x.apply_changes(all).unwrap();
        let mut y = Automerge::new();
        for c in shuffled {
            y.apply_changes([c]).unwrap();
        }
        prop_assert_eq!(x.get_heads(), y.get_heads());
        prop_assert_eq!(to_json(&x, None), to_json(&y, None));
    }
}
