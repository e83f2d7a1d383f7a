//! The order of JSON values, and an order-preserving byte encoding of it for index keys.
//!
//! Order: `null` < `false` < `true` < numbers < strings < arrays < objects. Numbers by value
//! (`1` equals `1.0`); strings by their UTF-8 bytes; arrays element by element, a prefix first;
//! objects as their (key, value) pairs in key order, compared the same way.
//!
//! [`encode`] writes bytes whose lexicographic order is that order, and each encoding delimits
//! itself, so compound keys are concatenations. Index keys are bounded: strings are cut at
//! [`MAX_STRING_BYTES`] and arrays or objects stop adding members past [`MAX_VALUE_BYTES`], and
//! numbers are encoded as 64-bit floats (integers beyond 2^53 share keys with their neighbours).
//! An array or object ends its key at the first member the key cannot hold whole (with a marker
//! that sorts above any continuation), since members after a false tie would order it by the
//! wrong member. So the encoding never reverses the order (`a < b` gives `key(a) <= key(b)`):
//! values still sort in the right place relative to all others; values that encode the same
//! are told apart by the exact filter every query applies to the documents it loads, and among
//! themselves come in document id order.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// Longest string prefix (bytes) an index key holds.
pub const MAX_STRING_BYTES: usize = 256;
/// An array or object stops adding members to its key once its encoding reaches this size.
pub const MAX_VALUE_BYTES: usize = 1024;

/// An absent field, in index keys (before every value, so `$exists: false` is a key range too).
pub const MISSING: u8 = 0x00;
/// Type ranks, in order; also the first byte of each encoding.
pub const NULL: u8 = 0x01;
pub const FALSE: u8 = 0x02;
pub const TRUE: u8 = 0x03;
pub const NUMBER: u8 = 0x04;
pub const STRING: u8 = 0x05;
pub const ARRAY: u8 = 0x06;
pub const OBJECT: u8 = 0x07;

/// The rank of a value's type (its encoding's first byte).
pub fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => NULL,
        Value::Bool(false) => FALSE,
        Value::Bool(true) => TRUE,
        Value::Number(_) => NUMBER,
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    }
}

/// Compares numbers exactly (integers as integers, otherwise as floats).
pub fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

/// The order of JSON values (see the module docs).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                match compare(p, q) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => compare_objects(x, y),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    v
}

fn compare_objects(x: &Map<String, Value>, y: &Map<String, Value>) -> Ordering {
    let (x, y) = (sorted(x), sorted(y));
    for ((ka, va), (kb, vb)) in x.iter().zip(&y) {
        match ka
            .as_bytes()
            .cmp(kb.as_bytes())
            .then_with(|| compare(va, vb))
        {
            Ordering::Equal => {}
            o => return o,
        }
    }
    x.len().cmp(&y.len())
}

/// Whether two values are equal in this order (`1` and `1.0` are).
pub fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

/// Appends a string's encoding; returns whether it holds the whole string.
fn encode_str(s: &str, out: &mut Vec<u8>) -> bool {
    let mut cut = s.len().min(MAX_STRING_BYTES);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    for &b in &s.as_bytes()[..cut] {
        if b == 0 {
            out.extend_from_slice(&[0, 0xff]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0, 0]);
    cut == s.len()
}

/// Whether a number's key (a 64-bit float) tells it apart from every other number.
fn exact_number(n: &Number) -> bool {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, Some(f)) => f as i128 == i128::from(i),
        (_, Some(u), Some(f)) => f as i128 == i128::from(u),
        _ => true,
    }
}

/// The 8 bytes of a number whose unsigned order is the numbers' order.
pub fn number_bytes(n: &Number) -> [u8; 8] {
    let f = n.as_f64().unwrap_or(0.0);
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits ^ (1 << 63)
    };
    ordered.to_be_bytes()
}

/// Ends an array or object that holds all its members.
const END: u8 = 0x00;
/// Ends an array or object whose key stops at a member it could not hold whole (a string cut,
/// an integer beyond 2^53, a container cut), or at the size bound. Members after such a one
/// would order keys by what follows a tie that is not one in the values, so the key ends there,
/// and above every continuation: it ties with the values sharing what it holds, and sorts after
/// every value that is smaller there.
const END_CUT: u8 = 0xff;

/// Appends the order-preserving encoding of `v` (see the module docs for its bounds).
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    encode_exact(v, out);
}

/// [`encode`]; returns whether the key holds all of `v` (equal keys then mean equal values).
fn encode_exact(v: &Value, out: &mut Vec<u8>) -> bool {
    out.push(rank(v));
    match v {
        Value::Null | Value::Bool(_) => true,
        Value::Number(n) => {
            out.extend_from_slice(&number_bytes(n));
            exact_number(n)
        }
        Value::String(s) => encode_str(s, out),
        Value::Array(a) => {
            let start = out.len();
            for item in a {
                if out.len() - start >= MAX_VALUE_BYTES || !encode_exact(item, out) {
                    out.push(END_CUT);
                    return false;
                }
            }
            out.push(END);
            true
        }
        Value::Object(m) => {
            let start = out.len();
            for (k, item) in sorted(m) {
                if out.len() - start >= MAX_VALUE_BYTES {
                    out.push(END_CUT);
                    return false;
                }
                out.push(STRING);
                if !encode_str(k, out) || !encode_exact(item, out) {
                    out.push(END_CUT);
                    return false;
                }
            }
            out.push(END);
            true
        }
    }
}

/// The encoding of `v` alone.
pub fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

fn decode_str(bytes: &[u8]) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match (bytes.get(i)?, bytes.get(i + 1)) {
            (0, Some(0)) => return Some((String::from_utf8(out).ok()?, i + 2)),
            (0, Some(0xff)) => {
                out.push(0);
                i += 2;
            }
            (0, _) => return None,
            (b, _) => {
                out.push(*b);
                i += 1;
            }
        }
    }
}

/// Reads one encoded value back (as cut to the key bounds); returns it and the bytes it took.
/// Numbers come back as floats.
pub fn decode(bytes: &[u8]) -> Option<(Value, usize)> {
    let (&tag, rest) = bytes.split_first()?;
    Some(match tag {
        NULL => (Value::Null, 1),
        FALSE => (Value::Bool(false), 1),
        TRUE => (Value::Bool(true), 1),
        NUMBER => {
            let raw = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            let bits = if raw >> 63 == 1 {
                raw ^ (1 << 63)
            } else {
                !raw
            };
            let n = Number::from_f64(f64::from_bits(bits))?;
            (Value::Number(n), 9)
        }
        STRING => {
            let (s, n) = decode_str(rest)?;
            (Value::String(s), 1 + n)
        }
        ARRAY => {
            let mut items = Vec::new();
            let mut at = 1;
            while !matches!(*bytes.get(at)?, END | END_CUT) {
                let (v, n) = decode(&bytes[at..])?;
                items.push(v);
                at += n;
            }
            (Value::Array(items), at + 1)
        }
        OBJECT => {
            let mut m = Map::new();
            let mut at = 1;
            while !matches!(*bytes.get(at)?, END | END_CUT) {
                if bytes[at] != STRING {
                    return None;
                }
                let (k, n) = decode_str(&bytes[at + 1..])?;
                at += 1 + n;
                if *bytes.get(at)? == END_CUT {
                    // Cut after a key it could not hold whole.
                    m.insert(k, Value::Null);
                    break;
                }
                let (v, n) = decode(&bytes[at..])?;
                at += n;
                m.insert(k, v);
            }
            (Value::Object(m), at + 1)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn types_order_as_documented() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e300),
            json!(-5),
            json!(0),
            json!(0.5),
            json!(1),
            json!(u64::MAX),
            json!(""),
            json!("a"),
            json!("a\u{0}"),
            json!("ab"),
            json!("é"),
            json!([]),
            json!([null]),
            json!([1, 2]),
            json!([2]),
            json!({}),
            json!({"a": 1}),
            json!({"a": 1, "b": 0}),
            json!({"b": 0}),
        ];
        for w in ordered.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            assert!(
                encoded(&w[0]) < encoded(&w[1]),
                "{} < {} encoded",
                w[0],
                w[1]
            );
        }
        assert!(equal(&json!(1), &json!(1.0)));
        assert_eq!(encoded(&json!(1)), encoded(&json!(1.0)));
        assert_eq!(encoded(&json!(0.0)), encoded(&json!(-0.0)));
    }

    #[test]
    fn long_values_are_cut_but_stay_in_order() {
        let long = "x".repeat(MAX_STRING_BYTES + 10);
        let longer = format!("{long}y");
        assert_eq!(encoded(&json!(long)), encoded(&json!(longer)));
        assert!(encoded(&json!(long)) < encoded(&json!("y")));
        let big: Vec<u64> = (0..1000).collect();
        assert!(encoded(&json!(big)).len() < MAX_VALUE_BYTES + 16);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[a-c\u{0}é]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{1,2}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Values the keys cannot hold whole: long strings sharing prefixes, integers past 2^53,
    /// arrays past the size bound, inside containers with members after them.
    fn lossy_value() -> impl Strategy<Value = Value> {
        let long = "x".repeat(MAX_STRING_BYTES - 2);
        let leaf = prop_oneof![
            "[ab]{0,4}".prop_map(move |t| json!(format!("{long}{t}"))),
            (-3i64..3).prop_map(|d| json!((1i64 << 53) + d)),
            (0u64..3).prop_map(|d| json!(u64::MAX - d)),
            (-2i64..2).prop_map(|n| json!(n)),
            Just(json!(vec!["y".repeat(MAX_STRING_BYTES); 4])),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[ab]{1,2}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn a_cut_member_ends_its_container_above_what_follows_a_tie() {
        let long = "x".repeat(MAX_STRING_BYTES);
        let (whole, cut) = (json!([long, 7]), json!([format!("{long}b"), 0]));
        assert_eq!(compare(&whole, &cut), Ordering::Less);
        assert!(encoded(&whole) < encoded(&cut));
        assert_eq!(
            encoded(&json!([format!("{long}b"), 0])),
            encoded(&json!([format!("{long}c"), -5]))
        );
        let big = 1u64 << 53;
        assert!(encoded(&json!([big, "z"])) <= encoded(&json!([big + 1, "a"])));
        assert!(
            decode(&encoded(&cut)).is_some(),
            "cut keys decode (for explain)"
        );
    }

    proptest! {
        /// Keys never reverse the order of values, whatever they had to cut.
        #[test]
        fn keys_never_reverse_the_order(a in lossy_value(), b in lossy_value()) {
            let (ka, kb) = (encoded(&a), encoded(&b));
            match compare(&a, &b) {
                Ordering::Less => prop_assert!(ka <= kb, "{} < {} but keys reverse", a, b),
                Ordering::Greater => prop_assert!(ka >= kb, "{} > {} but keys reverse", a, b),
                Ordering::Equal => prop_assert_eq!(ka, kb),
            }
        }

        /// The encoding's byte order is the value order (for values within the key bounds and
        /// integers within 2^53, exactly; ties in the encoding are ties in the order).
        #[test]
        fn encoding_order_is_value_order(a in json_value(), b in json_value()) {
            let small = |v: &Value| v.as_i64().is_none_or(|n| n.unsigned_abs() < 1 << 53);
            fn all_small(v: &Value, small: &dyn Fn(&Value) -> bool) -> bool {
                match v {
                    Value::Array(a) => a.iter().all(|x| all_small(x, small)),
                    Value::Object(m) => m.values().all(|x| all_small(x, small)),
                    v => small(v),
                }
            }
            prop_assume!(all_small(&a, &small) && all_small(&b, &small));
            prop_assert_eq!(encoded(&a).cmp(&encoded(&b)), compare(&a, &b), "{} vs {}", a, b);
            let (back, n) = decode(&encoded(&a)).unwrap();
            prop_assert_eq!(n, encoded(&a).len());
            prop_assert!(equal(&back, &a), "{} decoded as {}", a, back);
        }
    }
}
