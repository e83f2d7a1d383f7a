//! Selectors: which documents a query wants, in the Mango / MongoDB operator language.
//!
//! `{"status": "open", "due": {"$lt": "2027-01-01"}}` is a conjunction of conditions on fields;
//! a field named without an operator means equality, and an object without operators is a
//! selector on the fields of a nested object (`{"project": {"id": 7}}` is `project.id == 7`).
//! Operators: `$eq $ne $gt $gte $lt $lte $in $nin $exists $type $size $mod $regex $all
//! $elemMatch $not` on a field, and `$and $or $nor $not` over selectors.
//!
//! Semantics, decided once and documented in the README:
//! - values are what `GET` returns (counters are numbers, text is a string), compared in the
//!   order of [`super::collate`];
//! - `$gt $gte $lt $lte` compare within a type (numbers with numbers, strings with strings,
//!   booleans with booleans, ...): `{"$gt": 5}` never matches a string;
//! - a field that is absent matches only `$exists: false`, and a `$not` (or `$nor`) of something
//!   it does not match; in particular `$ne` and `$nin` need the field to exist;
//! - arrays are values like any other: equality with an array compares whole arrays; to look
//!   inside one use `$elemMatch`, `$all` or `$size` (or a path with an index, `tags.0`).

use std::cmp::Ordering;

use serde_json::{Map, Value};
use thiserror::Error;

use super::collate::{self, compare, equal, rank};
use super::path::FieldPath;

/// A selector that cannot be used: which operator, at which path, and why.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid selector: {message} (operator `{operator}` at `{path}`)")]
pub struct SelectorError {
    pub operator: String,
    pub path: String,
    pub message: String,
}

fn err(operator: &str, path: &FieldPath, message: impl Into<String>) -> SelectorError {
    SelectorError {
        operator: operator.to_string(),
        path: if path.is_root() {
            "(the value itself)".into()
        } else {
            path.to_string()
        },
        message: message.into(),
    }
}

/// JSON types, for `$type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    fn parse(s: &str) -> Option<JsonType> {
        Some(match s {
            "null" => JsonType::Null,
            "boolean" => JsonType::Boolean,
            "number" => JsonType::Number,
            "string" => JsonType::String,
            "array" => JsonType::Array,
            "object" => JsonType::Object,
            _ => return None,
        })
    }

    fn of(v: &Value) -> JsonType {
        match v {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Boolean,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }
}

/// A condition on one value.
#[derive(Debug, Clone)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Type(JsonType),
    Size(u64),
    Mod(i64, i64),
    Regex(regex::Regex),
    All(Vec<Value>),
    ElemMatch(Box<Selector>),
    Not(Box<Cond>),
    And(Vec<Cond>),
}

/// A parsed selector.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Every part matches (`$and`, and the fields of one object).
    All(Vec<Selector>),
    /// Some part matches (`$or`).
    Any(Vec<Selector>),
    /// No part matches (`$nor`).
    NoneOf(Vec<Selector>),
    /// The selector does not match (`$not` over a selector).
    Not(Box<Selector>),
    /// A condition on the value at a path.
    Field(FieldPath, Cond),
}

/// Largest compiled regular expression (bytes), so a pattern cannot take the node's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Deepest nesting of selectors and operators.
const MAX_DEPTH: usize = 32;

impl Selector {
    /// Parses a selector (a JSON object).
    pub fn parse(v: &Value) -> Result<Selector, SelectorError> {
        parse_selector(v, &FieldPath::root(), false, 0)
    }

    /// The selector that matches every document (`{}`).
    pub fn everything() -> Selector {
        Selector::All(Vec::new())
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Selector::All(parts) => parts.iter().all(|p| p.matches(doc)),
            Selector::Any(parts) => parts.iter().any(|p| p.matches(doc)),
            Selector::NoneOf(parts) => !parts.iter().any(|p| p.matches(doc)),
            Selector::Not(s) => !s.matches(doc),
            Selector::Field(path, cond) => cond.matches(path.get(doc)),
        }
    }

    /// The conjuncts of the top level: the parts of an `All`, or the selector itself.
    pub fn conjuncts(&self) -> Vec<&Selector> {
        match self {
            Selector::All(parts) => parts.iter().flat_map(|p| p.conjuncts()).collect(),
            s => vec![s],
        }
    }
}

/// Types compare with their own kind only: both booleans share one bracket.
fn bracket(v: &Value) -> u8 {
    match rank(v) {
        collate::TRUE => collate::FALSE,
        r => r,
    }
}

fn ordered(v: Option<&Value>, x: &Value, want: impl Fn(Ordering) -> bool) -> bool {
    v.is_some_and(|v| bracket(v) == bracket(x) && want(compare(v, x)))
}

impl Cond {
    /// Whether the value (absent: `None`) satisfies the condition.
    pub fn matches(&self, v: Option<&Value>) -> bool {
        match self {
            Cond::Eq(x) => v.is_some_and(|v| equal(v, x)),
            Cond::Ne(x) => v.is_some_and(|v| !equal(v, x)),
            Cond::Gt(x) => ordered(v, x, |o| o == Ordering::Greater),
            Cond::Gte(x) => ordered(v, x, |o| o != Ordering::Less),
            Cond::Lt(x) => ordered(v, x, |o| o == Ordering::Less),
            Cond::Lte(x) => ordered(v, x, |o| o != Ordering::Greater),
            Cond::In(xs) => v.is_some_and(|v| xs.iter().any(|x| equal(v, x))),
            Cond::Nin(xs) => v.is_some_and(|v| !xs.iter().any(|x| equal(v, x))),
            Cond::Exists(b) => v.is_some() == *b,
            Cond::Type(t) => v.is_some_and(|v| JsonType::of(v) == *t),
            Cond::Size(n) => matches!(v, Some(Value::Array(a)) if a.len() as u64 == *n),
            Cond::Mod(d, r) => v
                .and_then(integer)
                .is_some_and(|n| n.checked_rem(*d) == Some(*r)),
            Cond::Regex(re) => matches!(v, Some(Value::String(s)) if re.is_match(s)),
            Cond::All(xs) => match v {
                Some(Value::Array(a)) => {
                    !xs.is_empty() && xs.iter().all(|x| a.iter().any(|e| equal(e, x)))
                }
                _ => false,
            },
            Cond::ElemMatch(s) => match v {
                Some(Value::Array(a)) => a.iter().any(|e| s.matches(e)),
                _ => false,
            },
            Cond::Not(c) => !c.matches(v),
            Cond::And(cs) => cs.iter().all(|c| c.matches(v)),
        }
    }
}

/// An integral number as an `i64` (`3` and `3.0` are; `3.5` is not).
fn integer(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn parse_selector(
    v: &Value,
    base: &FieldPath,
    ops_on_value: bool,
    depth: usize,
) -> Result<Selector, SelectorError> {
    if depth > MAX_DEPTH {
        return Err(err("", base, format!("nested deeper than {MAX_DEPTH}")));
    }
    let Value::Object(m) = v else {
        return Err(err("", base, "a selector is a JSON object"));
    };
    let mut parts = Vec::new();
    for (k, val) in m {
        match k.as_str() {
            "$and" | "$or" | "$nor" => {
                let Value::Array(items) = val else {
                    return Err(err(k, base, "expects an array of selectors"));
                };
                if items.is_empty() {
                    return Err(err(k, base, "expects at least one selector"));
                }
                let subs = items
                    .iter()
                    .map(|s| parse_selector(s, base, ops_on_value, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(match k.as_str() {
                    "$and" => Selector::All(subs),
                    "$or" => Selector::Any(subs),
                    _ => Selector::NoneOf(subs),
                });
            }
            "$not"
                if val
                    .as_object()
                    .is_some_and(|o| !has_operators(o) || o.is_empty()) =>
            {
                parts.push(Selector::Not(Box::new(parse_selector(
                    val,
                    base,
                    ops_on_value,
                    depth + 1,
                )?)));
            }
            op if op.starts_with('$') => {
                if base.is_root() && !ops_on_value {
                    return Err(err(
                        op,
                        base,
                        "an operator needs a field: write {\"field\": {\"$op\": ...}}",
                    ));
                }
                parts.push(Selector::Field(
                    base.clone(),
                    parse_cond(op, val, base, depth + 1)?,
                ));
            }
            field => {
                let Some(rel) = FieldPath::parse(field) else {
                    return Err(err(
                        "",
                        base,
                        format!("`{field}` is not a field path (dots separate fields; escape a dot as \\.)"),
                    ));
                };
                let path = base.join(&rel);
                parts.push(field_selector(val, &path, depth + 1)?);
            }
        }
    }
    Ok(match parts.len() {
        1 => parts.pop().unwrap_or_else(Selector::everything),
        _ => Selector::All(parts),
    })
}

fn has_operators(o: &Map<String, Value>) -> bool {
    o.keys().any(|k| k.starts_with('$'))
}

/// What a field's value in a selector means: conditions, a nested selector, or equality.
fn field_selector(val: &Value, path: &FieldPath, depth: usize) -> Result<Selector, SelectorError> {
    match val {
        Value::Object(o) if !o.is_empty() && has_operators(o) => {
            if let Some(k) = o.keys().find(|k| !k.starts_with('$')) {
                return Err(err(
                    "",
                    path,
                    format!(
                        "mixes operators with the field `{k}`: put fields in a nested selector"
                    ),
                ));
            }
            let mut conds = o
                .iter()
                .map(|(op, arg)| parse_cond(op, arg, path, depth))
                .collect::<Result<Vec<_>, _>>()?;
            let cond = match conds.len() {
                1 => conds.pop().unwrap_or(Cond::And(Vec::new())),
                _ => Cond::And(conds),
            };
            Ok(Selector::Field(path.clone(), cond))
        }
        Value::Object(o) if !o.is_empty() => parse_selector(val, path, false, depth),
        other => Ok(Selector::Field(path.clone(), Cond::Eq(other.clone()))),
    }
}

fn array<'a>(op: &str, v: &'a Value, path: &FieldPath) -> Result<&'a Vec<Value>, SelectorError> {
    v.as_array()
        .ok_or_else(|| err(op, path, "expects an array"))
}

fn parse_cond(
    op: &str,
    arg: &Value,
    path: &FieldPath,
    depth: usize,
) -> Result<Cond, SelectorError> {
    if depth > MAX_DEPTH {
        return Err(err(op, path, format!("nested deeper than {MAX_DEPTH}")));
    }
    Ok(match op {
        "$eq" => Cond::Eq(arg.clone()),
        "$ne" => Cond::Ne(arg.clone()),
        "$gt" => Cond::Gt(arg.clone()),
        "$gte" => Cond::Gte(arg.clone()),
        "$lt" => Cond::Lt(arg.clone()),
        "$lte" => Cond::Lte(arg.clone()),
        "$in" => Cond::In(array(op, arg, path)?.clone()),
        "$nin" => Cond::Nin(array(op, arg, path)?.clone()),
        "$all" => Cond::All(array(op, arg, path)?.clone()),
        "$exists" => Cond::Exists(
            arg.as_bool()
                .ok_or_else(|| err(op, path, "expects true or false"))?,
        ),
        "$type" => Cond::Type(arg.as_str().and_then(JsonType::parse).ok_or_else(|| {
            err(
                op,
                path,
                "expects one of \"null\", \"boolean\", \"number\", \"string\", \"array\", \"object\"",
            )
        })?),
        "$size" => Cond::Size(
            arg.as_u64()
                .ok_or_else(|| err(op, path, "expects a non-negative integer"))?,
        ),
        "$mod" => {
            let pair = array(op, arg, path)?;
            let (Some(d), Some(r), 2) = (
                pair.first().and_then(Value::as_i64),
                pair.get(1).and_then(Value::as_i64),
                pair.len(),
            ) else {
                return Err(err(op, path, "expects [divisor, remainder], two integers"));
            };
            if d == 0 {
                return Err(err(op, path, "the divisor must not be 0"));
            }
            Cond::Mod(d, r)
        }
        "$regex" => {
            let pattern = arg
                .as_str()
                .ok_or_else(|| err(op, path, "expects a regular expression (a string)"))?;
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| err(op, path, format!("not a usable regular expression: {e}")))?;
            Cond::Regex(re)
        }
        "$elemMatch" => {
            if !arg.is_object() {
                return Err(err(op, path, "expects a selector (an object)"));
            }
            Cond::ElemMatch(Box::new(parse_selector(
                arg,
                &FieldPath::root(),
                true,
                depth + 1,
            )?))
        }
        "$not" => {
            let Value::Object(o) = arg else {
                return Err(err(op, path, "expects an object of operators"));
            };
            match field_selector(arg, path, depth + 1)? {
                Selector::Field(_, c) if has_operators(o) => Cond::Not(Box::new(c)),
                _ => return Err(err(op, path, "expects an object of operators")),
            }
        }
        other => return Err(err(other, path, "unknown operator")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(sel: Value, doc: Value) -> bool {
        Selector::parse(&sel).unwrap().matches(&doc)
    }

    #[test]
    fn operators_match_as_documented() {
        let doc = json!({
            "status": "open", "n": 5, "f": 2.5, "done": false, "tags": ["a", "b"],
            "project": {"id": 7, "name": "x"}, "note": "Hello world", "nothing": null
        });
        let yes = [
            json!({}),
            json!({"status": "open"}),
            json!({"project": {"id": 7}}),
            json!({"project.id": 7}),
            json!({"n": {"$eq": 5.0}}),
            json!({"n": {"$ne": 4}}),
            json!({"n": {"$gt": 4, "$lte": 5}}),
            json!({"f": {"$gte": 2.5, "$lt": 3}}),
            json!({"status": {"$in": ["closed", "open"]}}),
            json!({"status": {"$nin": ["closed"]}}),
            json!({"missing": {"$exists": false}}),
            json!({"nothing": {"$exists": true, "$type": "null"}}),
            json!({"tags": {"$size": 2, "$all": ["b", "a"]}}),
            json!({"tags": ["a", "b"]}),
            json!({"tags": {"$elemMatch": {"$eq": "b"}}}),
            json!({"tags.1": "b"}),
            json!({"n": {"$mod": [2, 1]}}),
            json!({"note": {"$regex": "^Hel+o"}}),
            json!({"done": {"$lt": true}}),
            json!({"$or": [{"n": 1}, {"status": "open"}]}),
            json!({"$nor": [{"n": 1}, {"status": "closed"}]}),
            json!({"$and": [{"n": 5}, {"f": 2.5}]}),
            json!({"n": {"$not": {"$gt": 6}}}),
            json!({"missing": {"$not": {"$eq": 1}}}),
            json!({"$not": {"status": "closed"}}),
        ];
        for s in yes {
            assert!(m(s.clone(), doc.clone()), "{s} should match");
        }
        let no = [
            json!({"status": "closed"}),
            json!({"n": {"$gt": "a"}}),
            json!({"status": {"$gt": 1}}),
            json!({"missing": {"$ne": 1}}),
            json!({"missing": {"$nin": [1]}}),
            json!({"tags": "a"}),
            json!({"tags": {"$all": []}}),
            json!({"project": {"id": 8}}),
            json!({"n": {"$mod": [2, 0]}}),
            json!({"f": {"$mod": [2, 0]}}),
            json!({"$or": [{"n": 1}, {"n": 2}]}),
        ];
        for s in no {
            assert!(!m(s.clone(), doc.clone()), "{s} should not match");
        }
    }

    #[test]
    fn bad_selectors_name_the_operator_and_the_path() {
        let cases = [
            (json!({"n": {"$gt": 1, "x": 2}}), "", "n"),
            (json!({"n": {"$foo": 1}}), "$foo", "n"),
            (json!({"n": {"$in": 1}}), "$in", "n"),
            (json!({"a.b": {"$mod": [0, 1]}}), "$mod", "a.b"),
            (json!({"a": {"$regex": "("}}), "$regex", "a"),
            (json!({"a": {"$type": "date"}}), "$type", "a"),
            (json!({"$gt": 1}), "$gt", "(the value itself)"),
            (json!({"$or": []}), "$or", "(the value itself)"),
            (json!({"a": {"$elemMatch": 3}}), "$elemMatch", "a"),
        ];
        for (sel, op, path) in cases {
            let e = Selector::parse(&sel).unwrap_err();
            assert_eq!(
                (e.operator.as_str(), e.path.as_str()),
                (op, path),
                "{sel}: {e}"
            );
        }
        assert!(Selector::parse(&json!([1])).is_err());
        assert!(Selector::parse(&json!({"a..b": 1})).is_err());
    }
}
