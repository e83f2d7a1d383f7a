//! Query planning: which index serves a selector and sort, over which key ranges, and whether a
//! sort in memory is needed. Pure: it sees index definitions, not their entries.
//!
//! An index on fields `[f1, .., fn]` holds one key per document that has every field (and passes
//! the index's partial filter): the fields' encoded values ([`super::collate`]) then the document
//! id. A plan scans one or more key ranges of it ("streams"), each sorted, and merges them. The
//! leading fields the selector pins to single values (equality, or each value of an `$in`) make
//! each stream's prefix; the next field may take a range. The plan always re-checks the whole
//! selector on each document it loads, so ranges may be generous (bounds are inclusive and
//! values are cut to the key bounds) but never miss a document.

use serde_json::Value;

use super::collate::{self, encoded};
use super::path::FieldPath;
use super::selector::{Cond, Selector};

/// Most streams one plan scans (`$in` lists multiply): beyond it the rest of the fields are not
/// used to narrow the ranges.
pub const MAX_STREAMS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Asc,
    Desc,
}

/// One sort key.
#[derive(Debug, Clone)]
pub struct SortKey {
    pub path: FieldPath,
    pub direction: Direction,
}

/// An index as the planner sees it.
#[derive(Debug, Clone)]
pub struct IndexInfo {
    pub name: String,
    pub fields: Vec<FieldPath>,
    pub partial: bool,
    pub ready: bool,
}

/// A key range over the values part of index keys: `lo` inclusive, `hi` exclusive; `prefix` is
/// the part every key in the range shares (the pinned fields), after which the keys are in the
/// plan's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub prefix: Vec<u8>,
    pub lo: Vec<u8>,
    pub hi: Vec<u8>,
}

/// How one index would serve the query.
#[derive(Debug, Clone)]
pub struct IndexPlan {
    pub index: String,
    pub ranges: Vec<Range>,
    /// Leading fields pinned to single values in every range.
    pub pinned: usize,
    /// The index's order serves the requested sort (no sort in memory).
    pub sorted: bool,
    /// Scan the ranges backwards (a descending sort).
    pub reverse: bool,
}

/// Why an index was or was not chosen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub index: String,
    pub usable: bool,
    pub chosen: bool,
    pub reason: String,
}

/// Every index's verdict and, when one serves, its plan.
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: Option<IndexPlan>,
    pub candidates: Vec<Candidate>,
}

/// The smallest byte string greater than every string starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// What the conjunction of conditions on one field allows, in key terms.
enum Allowed {
    /// These values only (sorted, distinct encodings).
    Points(Vec<Vec<u8>>),
    /// Keys in `[lo, hi)`.
    Between(Vec<u8>, Vec<u8>),
    /// Nothing narrower (the field may even be absent).
    Anything,
}

/// The key interval of values of `v`'s type (booleans share one).
fn bracket_of(v: &Value) -> (Vec<u8>, Vec<u8>) {
    match collate::rank(v) {
        collate::FALSE | collate::TRUE => (vec![collate::FALSE], vec![collate::TRUE + 1]),
        r => (vec![r], vec![r + 1]),
    }
}

/// Whether a condition can only hold for a present value.
fn needs_presence(c: &Cond) -> bool {
    match c {
        Cond::Exists(b) => *b,
        Cond::Not(_) => false,
        Cond::And(cs) => cs.iter().any(needs_presence),
        _ => true,
    }
}

fn allowed_by(c: &Cond) -> Allowed {
    match c {
        Cond::Eq(x) => Allowed::Points(vec![encoded(x)]),
        Cond::In(xs) if !xs.is_empty() => {
            let mut points: Vec<Vec<u8>> = xs.iter().map(encoded).collect();
            points.sort();
            points.dedup();
            Allowed::Points(points)
        }
        Cond::Gt(x) | Cond::Gte(x) => Allowed::Between(encoded(x), bracket_of(x).1),
        Cond::Lt(x) | Cond::Lte(x) => Allowed::Between(bracket_of(x).0, prefix_end(&encoded(x))),
        Cond::Exists(false) => Allowed::Points(vec![vec![collate::MISSING]]),
        Cond::And(cs) => cs.iter().map(allowed_by).fold(Allowed::Anything, intersect),
        // Any present value: every key but the absent one.
        c if needs_presence(c) => Allowed::Between(vec![collate::NULL], vec![0xff]),
        _ => Allowed::Anything,
    }
}

fn intersect(a: Allowed, b: Allowed) -> Allowed {
    use Allowed::*;
    match (a, b) {
        (Anything, x) | (x, Anything) => x,
        // Both sorted (see `Allowed::Points`): a search per point, not a pass.
        (Points(p), Points(q)) => Points(
            p.into_iter()
                .filter(|x| q.binary_search(x).is_ok())
                .collect(),
        ),
        (Points(p), Between(lo, hi)) | (Between(lo, hi), Points(p)) => Points(
            p.into_iter()
                .filter(|x| *x >= lo && x.as_slice() < hi.as_slice())
                .collect(),
        ),
        (Between(a, b), Between(c, d)) => Between(a.max(c), b.min(d)),
    }
}

/// What the top-level conjunction allows for `path`.
fn allowed(selector: &Selector, path: &FieldPath) -> Allowed {
    selector
        .conjuncts()
        .into_iter()
        .filter_map(|s| match s {
            Selector::Field(p, c) if p == path => Some(allowed_by(c)),
            _ => None,
        })
        .fold(Allowed::Anything, intersect)
}

/// The ranges `index` scans for `selector`, and how many leading fields they pin; `None` when the
/// index cannot serve it (its first field is unconstrained).
fn ranges(fields: &[FieldPath], selector: &Selector) -> Option<(Vec<Range>, usize)> {
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut pinned = 0;
    for (i, f) in fields.iter().enumerate() {
        match allowed(selector, f) {
            Allowed::Points(points) if prefixes.len() * points.len().max(1) <= MAX_STREAMS => {
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| {
                        points.iter().map(move |x| {
                            let mut k = p.clone();
                            k.extend_from_slice(x);
                            k
                        })
                    })
                    .collect();
                pinned += 1;
            }
            Allowed::Between(lo, hi) => {
                let ranges = prefixes
                    .iter()
                    .filter(|_| lo < hi)
                    .map(|p| Range {
                        prefix: p.clone(),
                        lo: [p.as_slice(), &lo].concat(),
                        hi: [p.as_slice(), &hi].concat(),
                    })
                    .collect();
                return Some((ranges, pinned));
            }
            Allowed::Anything if i == 0 => return None,
            _ => break,
        }
    }
    let ranges = prefixes
        .into_iter()
        .map(|p| Range {
            lo: p.clone(),
            hi: if p.is_empty() {
                vec![0xff]
            } else {
                prefix_end(&p)
            },
            prefix: p,
        })
        .collect();
    Some((ranges, pinned))
}

/// Whether the index's order (after its `pinned` fields) gives the requested sort, and in which
/// direction. Sort keys on fields pinned to one value are already satisfied.
fn sort_order(
    fields: &[FieldPath],
    pinned: usize,
    single_points: &[bool],
    sort: &[SortKey],
) -> Option<bool> {
    let rest: Vec<&SortKey> = sort
        .iter()
        .filter(|k| {
            !fields
                .iter()
                .zip(single_points)
                .any(|(f, single)| *single && *f == k.path)
        })
        .collect();
    if rest.is_empty() {
        return Some(false);
    }
    let dir = rest[0].direction;
    let follows = rest.iter().all(|k| k.direction == dir)
        && rest
            .iter()
            .zip(fields.iter().skip(pinned))
            .all(|(k, f)| k.path == *f)
        && rest.len() <= fields.len() - pinned;
    follows.then_some(dir == Direction::Desc)
}

/// Plans `selector` and `sort` over `indexes`; `use_index` forces one (any partial index must be
/// named, since only the caller knows its filter covers the query).
pub fn plan(
    selector: &Selector,
    sort: &[SortKey],
    indexes: &[IndexInfo],
    use_index: Option<&str>,
) -> Planned {
    let mut candidates = Vec::new();
    let mut best: Option<(i64, IndexPlan)> = None;
    for ix in indexes {
        let verdict = |usable: bool, reason: String| Candidate {
            index: ix.name.clone(),
            usable,
            chosen: false,
            reason,
        };
        if use_index.is_some_and(|u| u != ix.name) {
            candidates.push(verdict(
                false,
                "another index was named in use_index".into(),
            ));
            continue;
        }
        if !ix.ready {
            candidates.push(verdict(false, "still building".into()));
            continue;
        }
        if ix.partial && use_index != Some(ix.name.as_str()) {
            candidates.push(verdict(
                false,
                "a partial index serves only queries that name it in use_index".into(),
            ));
            continue;
        }
        let Some((ranges, pinned)) = ranges(&ix.fields, selector).or_else(|| {
            // Every document is in a full index: its order alone can serve a sort.
            let order_only =
                !ix.partial && sort_order(&ix.fields, 0, &[], sort).is_some() && !sort.is_empty();
            order_only.then(|| {
                let all = Range {
                    prefix: Vec::new(),
                    lo: Vec::new(),
                    hi: vec![0xff],
                };
                (vec![all], 0)
            })
        }) else {
            candidates.push(verdict(
                false,
                format!(
                    "the selector does not constrain its first field `{}`",
                    ix.fields[0]
                ),
            ));
            continue;
        };
        let single: Vec<bool> = ix
            .fields
            .iter()
            .map(|f| matches!(allowed(selector, f), Allowed::Points(p) if p.len() == 1))
            .collect();
        let order = sort_order(&ix.fields, pinned, &single, sort);
        let sorted = order.is_some();
        let range_field = usize::from(ranges.iter().any(|r| r.lo != r.prefix));
        let score = (pinned as i64) * 100 + (range_field as i64) * 50 + i64::from(sorted) * 30
            - ix.fields.len() as i64;
        candidates.push(verdict(
            true,
            format!(
                "serves {} field(s) by key ({} pinned){}",
                pinned + range_field,
                pinned,
                if sorted {
                    ", in the requested order"
                } else if sort.is_empty() {
                    ""
                } else {
                    ", but the sort needs memory"
                }
            ),
        ));
        let p = IndexPlan {
            index: ix.name.clone(),
            ranges,
            pinned,
            sorted,
            reverse: order.unwrap_or(false),
        };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, p));
        }
    }
    let plan = best.map(|(_, p)| p);
    if let Some(p) = &plan {
        for c in &mut candidates {
            c.chosen = c.index == p.index;
        }
    }
    Planned { plan, candidates }
}

/// The fields an index for this query would have: equality fields, then one range field, then
/// the sort fields (for a `400` that says which index to create).
pub fn suggested_fields(selector: &Selector, sort: &[SortKey]) -> Vec<String> {
    let mut eq = Vec::new();
    let mut range = Vec::new();
    for s in selector.conjuncts() {
        if let Selector::Field(p, c) = s {
            match allowed_by(c) {
                Allowed::Points(_) if !eq.contains(p) => eq.push(p.clone()),
                Allowed::Between(..) if !range.contains(p) => range.push(p.clone()),
                _ => {}
            }
        }
    }
    let mut fields: Vec<FieldPath> = eq;
    fields.extend(range.into_iter().take(1));
    for k in sort {
        if !fields.contains(&k.path) {
            fields.push(k.path.clone());
        }
    }
    fields.into_iter().map(|f| f.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ix(name: &str, fields: &[&str]) -> IndexInfo {
        IndexInfo {
            name: name.into(),
            fields: fields
                .iter()
                .map(|f| FieldPath::parse(f).unwrap())
                .collect(),
            partial: false,
            ready: true,
        }
    }

    fn sort(k: &str, d: Direction) -> SortKey {
        SortKey {
            path: FieldPath::parse(k).unwrap(),
            direction: d,
        }
    }

    #[test]
    fn equality_then_range_then_sort_picks_the_compound_index() {
        let sel = Selector::parse(&json!({"status": "open", "due": {"$gte": "2026"}})).unwrap();
        let indexes = [
            ix("by_status", &["status"]),
            ix("status_due", &["status", "due"]),
        ];
        let p = plan(&sel, &[sort("due", Direction::Desc)], &indexes, None);
        let chosen = p.plan.unwrap();
        assert_eq!(chosen.index, "status_due");
        assert!(chosen.sorted && chosen.reverse);
        assert_eq!(chosen.pinned, 1);
        assert_eq!(chosen.ranges.len(), 1);
        assert!(p.candidates.iter().all(|c| c.usable));
    }

    #[test]
    fn in_makes_point_streams_and_unconstrained_indexes_are_refused() {
        let sel = Selector::parse(&json!({"p": {"$in": [3, 1, 3]}, "x": {"$ne": 1}})).unwrap();
        let p = plan(&sel, &[], &[ix("p", &["p"]), ix("y", &["y"])], None);
        let chosen = p.plan.unwrap();
        assert_eq!(chosen.ranges.len(), 2, "distinct values, sorted");
        assert!(chosen.ranges[0].lo < chosen.ranges[1].lo);
        let y = p.candidates.iter().find(|c| c.index == "y").unwrap();
        assert!(!y.usable && y.reason.contains("first field"));
        // `$ne` implies presence: an index on `x` can serve (a full scan of it).
        let p = plan(&sel, &[], &[ix("x", &["x"])], None);
        assert!(p.plan.is_some());
    }

    #[test]
    fn partial_and_building_indexes_need_naming_or_readiness() {
        let sel = Selector::parse(&json!({"a": 1})).unwrap();
        let mut partial = ix("part", &["a"]);
        partial.partial = true;
        let mut building = ix("new", &["a"]);
        building.ready = false;
        let indexes = [partial, building];
        assert!(plan(&sel, &[], &indexes, None).plan.is_none());
        assert_eq!(
            plan(&sel, &[], &indexes, Some("part")).plan.unwrap().index,
            "part"
        );
        assert!(plan(&sel, &[], &indexes, Some("new")).plan.is_none());
    }

    #[test]
    fn suggestion_lists_equality_range_and_sort_fields() {
        let sel = Selector::parse(&json!({"a": 1, "b": {"$gt": 2}, "c": {"$regex": "x"}})).unwrap();
        assert_eq!(
            suggested_fields(&sel, &[sort("d", Direction::Asc)]),
            ["a", "b", "d"]
        );
    }
}
