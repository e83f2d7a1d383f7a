//! Running queries against the store: `find` (documents matching a selector, sorted, projected,
//! paged by bookmark), `explain` (the plan, and why), and the background builder of new indexes
//! (`builder`).
//!
//! Strategies, chosen by the planner ([`crate::query::plan`]):
//! - **index order**: the plan's key ranges are sorted streams, merged by the part of their keys
//!   after the pinned fields; each candidate document is loaded and checked against the whole
//!   selector; a page ends at `limit` documents. No sort in memory.
//! - **in memory**: when no index gives the requested order (or `$or` branches use several
//!   indexes), every matching document is gathered (at most [`MAX_SORT_DOCS`]), sorted, and
//!   paged.
//! - **scan**: when no index serves the selector, the collection's documents in id order; allowed
//!   only for collections of at most [`SMALL_COLLECTION`] documents or with `allow_scan`, and
//!   always reported in the stats and a warning.
//!
//! Bookmarks are opaque: the position after the last document returned, in the result's order
//! (one position per stream set; a partitioned executor will hold one per partition). A document
//! whose indexed fields did not change is never skipped nor repeated across pages.

pub mod builder;
pub mod feed_filter;
pub mod scope_view;

use std::cmp::Ordering;
use std::time::Instant;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::access::Grant;
use crate::query::collate;
use crate::query::plan::{self, Candidate, Direction, IndexInfo, IndexPlan, SortKey};
use crate::query::{FieldPath, Selector};
use crate::store::index::split_entry;
use crate::store::index_registry::{BuildState, IndexDef};
use crate::store::{DocKey, Store, StoreError};

/// Collections this small may be scanned without an index (and without `allow_scan`).
pub const SMALL_COLLECTION: i64 = 1000;
/// Most matching documents a sort in memory holds.
pub const MAX_SORT_DOCS: usize = 10_000;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 10_000;
/// Default `limit`.
pub const DEFAULT_LIMIT: usize = 25;
/// Most index keys or documents one page examines; a page that reaches it ends early with a
/// bookmark and a warning, so no request runs unbounded.
pub const MAX_EXAMINED: u64 = 200_000;
/// Entries fetched from one stream at a time.
const CHUNK: usize = 128;

/// A query as clients send it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindRequest {
    #[serde(default)]
    pub selector: Option<Value>,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub sort: Vec<Value>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub bookmark: Option<String>,
    #[serde(default)]
    pub use_index: Option<String>,
    #[serde(default)]
    pub allow_scan: bool,
    /// Live query (the HTTP layer streams it; see `api::find`).
    #[serde(default)]
    pub watch: bool,
}

#[derive(Debug, Error)]
pub enum FindError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Selector(#[from] crate::query::SelectorError),
    #[error(
        "no ready index serves this query and collection `{collection}` holds {count} documents \
         (more than {SMALL_COLLECTION}): create an index on {fields:?} \
         (PUT /v1/collections/{collection}/indexes/<name>), or pass \"allow_scan\": true"
    )]
    NeedsIndex {
        collection: String,
        count: i64,
        fields: Vec<String>,
    },
    #[error(
        "no ready index serves this query, and a token that sees only some documents of \
         `{collection}` cannot scan it: create an index on {fields:?} (the scope's fields serve \
         every query of such tokens)"
    )]
    ScopedNeedsIndex {
        collection: String,
        fields: Vec<String>,
    },
    #[error(
        "sorting in memory is limited to {MAX_SORT_DOCS} matching documents: narrow the selector, \
         or create an index on {fields:?} that gives this order"
    )]
    SortTooLarge { fields: Vec<String> },
    #[error("index `{0}` does not exist on this collection")]
    UnknownIndex(String),
    #[error("index `{0}` is still building on this node")]
    IndexBuilding(String),
    #[error("index `{0}` cannot serve this selector: its first field is unconstrained")]
    IndexUnusable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    pub selector: Selector,
    pub fields: Option<Vec<FieldPath>>,
    pub sort: Vec<SortKey>,
    pub limit: usize,
    pub bookmark: Option<Bookmark>,
    pub use_index: Option<String>,
    pub allow_scan: bool,
    /// The caller's grant when its scopes narrow the collection: every document answered must
    /// be in scope (see [`Query::restrict`]).
    pub scope: Option<Grant>,
    /// Most keys and documents one page examines ([`MAX_EXAMINED`]; smaller in tests).
    pub examine: u64,
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bookmark {
    /// The format (1).
    v: u8,
    /// Positions, one per partition (one today).
    after: Vec<Position>,
    /// The index whose entries `Key` positions are in: the next page is read in the same one
    /// (planned on another, the same bytes would name another place, and documents would be
    /// skipped or repeated). Absent from bookmarks of other plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<IndexRef>,
}

/// An index as a bookmark names it: the id tells a redefinition under the same name apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IndexRef {
    name: String,
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Position {
    /// Index order: the key of the last entry after its stream's pinned prefix (base64).
    Key(String),
    /// In-memory order: the last document's sort keys (encoded values, base64) and id.
    Sorted(Vec<String>, String),
    /// Scan order: the last document id.
    Id(String),
}

impl Bookmark {
    fn one(p: Position) -> Bookmark {
        Bookmark {
            v: 1,
            after: vec![p],
            index: None,
        }
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(s: &str) -> Result<Bookmark, FindError> {
        let bad = || FindError::BadRequest("bookmark: not a bookmark this query returned".into());
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad())?;
        let b: Bookmark = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if b.v != 1 || b.after.len() != 1 {
            return Err(bad());
        }
        Ok(b)
    }
}

fn parse_sort(sort: &[Value]) -> Result<Vec<SortKey>, FindError> {
    let bad = |m: String| FindError::BadRequest(format!("sort: {m}"));
    sort.iter()
        .map(|item| {
            let (path, dir) = match item {
                Value::String(s) => (s.as_str(), Direction::Asc),
                Value::Object(m) if m.len() == 1 => {
                    let (k, v) = m.iter().next().ok_or_else(|| bad("empty".into()))?;
                    let d = match v.as_str() {
                        Some("asc") => Direction::Asc,
                        Some("desc") => Direction::Desc,
                        _ => return Err(bad(format!("`{k}` must be \"asc\" or \"desc\""))),
                    };
                    (k.as_str(), d)
                }
                _ => {
                    return Err(bad(
                        "each key is a field name or {\"field\": \"asc\"|\"desc\"}".into(),
                    ))
                }
            };
            let path = FieldPath::parse(path)
                .ok_or_else(|| bad(format!("`{path}` is not a field path")))?;
            Ok(SortKey {
                path,
                direction: dir,
            })
        })
        .collect()
}

impl Query {
    pub fn parse(req: &FindRequest) -> Result<Query, FindError> {
        let selector = match &req.selector {
            Some(s) => Selector::parse(s)?,
            None => Selector::everything(),
        };
        let fields = match &req.fields {
            None => None,
            Some(fs) => Some(
                fs.iter()
                    .map(|f| {
                        FieldPath::parse(f).ok_or_else(|| {
                            FindError::BadRequest(format!("fields: `{f}` is not a field path"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(FindError::BadRequest(format!(
                "limit: between 1 and {MAX_LIMIT}"
            )));
        }
        Ok(Query {
            selector,
            fields,
            sort: parse_sort(&req.sort)?,
            limit,
            bookmark: req.bookmark.as_deref().map(Bookmark::decode).transpose()?,
            use_index: req.use_index.clone(),
            allow_scan: req.allow_scan,
            scope: None,
            examine: MAX_EXAMINED,
        })
    }

    /// Limits the query to what `who` sees of `collection`. When every scope narrowing it is a
    /// selector, their union joins the selector as a conjunct, so the planner can answer it
    /// from an index on the scope's fields (the work then follows the caller's documents, not
    /// the collection); every document is also judged against the scopes themselves (id
    /// prefixes included) before it is answered.
    pub fn restrict(&mut self, who: &Grant, collection: &str) {
        let scopes = who.narrowing(collection);
        if scopes.is_empty() {
            return;
        }
        let selectors: Option<Vec<Selector>> = scopes
            .iter()
            .map(|s| {
                if s.id_prefix.is_some() {
                    None
                } else {
                    s.selector.as_ref().map(|(_, sel)| sel.clone())
                }
            })
            .collect();
        if let Some(mut sels) = selectors {
            let union = if sels.len() == 1 {
                sels.remove(0)
            } else {
                Selector::Any(sels)
            };
            let mine = std::mem::replace(&mut self.selector, Selector::everything());
            self.selector = Selector::All(vec![mine, union]);
        }
        self.scope = Some(who.clone());
    }

    /// Whether the document answers the query: it matches, and the caller sees it.
    pub fn admits(&self, collection: &str, id: &str, json: &Value) -> bool {
        self.selector.matches(json)
            && self
                .scope
                .as_ref()
                .is_none_or(|g| g.sees(collection, id, json))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub index: Option<String>,
    pub keys_examined: u64,
    pub docs_examined: u64,
    pub returned: u64,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub id: String,
    pub version: String,
    pub doc: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindResult {
    pub docs: Vec<Found>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bookmark: Option<String>,
    pub stats: Stats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// How a query will run.
#[derive(Debug, Clone)]
pub enum Strategy {
    Index(IndexPlan),
    /// `$or`: each branch over its own index; results gathered and sorted in memory.
    Union(Vec<IndexPlan>),
    Scan,
}

#[derive(Debug, Clone, Serialize)]
pub struct RangeView {
    /// The values every key of the range starts with (the pinned fields).
    pub pinned: Vec<Value>,
    /// Bounds over the values part of the keys, hex: `lo` inclusive, `hi` exclusive.
    pub lo: String,
    pub hi: String,
}

/// `explain`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    pub strategy: &'static str,
    pub index: Option<String>,
    pub candidates: Vec<Candidate>,
    pub ranges: Vec<RangeView>,
    /// Documents are re-checked against the whole selector (always true: ranges are inclusive
    /// and keys cut long values; `false` only when the ranges alone decide).
    pub residual_filter: bool,
    pub in_memory_sort: bool,
    pub scan_allowed: bool,
    pub suggested_index: Vec<String>,
}

fn index_infos(store: &Store, collection: &str) -> Vec<(IndexInfo, std::sync::Arc<IndexDef>)> {
    store
        .indexes()
        .of(collection)
        .into_iter()
        .map(|d| {
            let info = IndexInfo {
                name: d.name.clone(),
                fields: d.fields.clone(),
                partial: d.partial.is_some(),
                ready: store.indexes().state(d.id) == Some(BuildState::Ready),
            };
            (info, d)
        })
        .collect()
}

/// Plans the query: a strategy, the planner's verdicts, and whether a scan is allowed.
fn strategy(
    store: &Store,
    collection: &str,
    q: &Query,
) -> Result<(Strategy, Vec<Candidate>, bool), FindError> {
    let infos: Vec<IndexInfo> = index_infos(store, collection)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    if let Some(u) = &q.use_index {
        match infos.iter().find(|i| i.name == *u) {
            None => return Err(FindError::UnknownIndex(u.clone())),
            Some(i) if !i.ready => return Err(FindError::IndexBuilding(u.clone())),
            _ => {}
        }
    }
    let use_index = match (
        &q.use_index,
        q.bookmark.as_ref().and_then(|b| b.index.as_ref()),
    ) {
        (Some(u), _) => Some(u.clone()),
        // The next page of an index-ordered query: read in the index the last one was.
        (None, Some(pin)) => match store.indexes().get(collection, &pin.name) {
            Some(d) if d.id == pin.id && infos.iter().any(|i| i.name == pin.name && i.ready) => {
                Some(pin.name.clone())
            }
            _ => {
                return Err(FindError::BadRequest(format!(
                    "bookmark: the index `{}` its pages were read in was dropped or redefined \
                     since; start again without the bookmark",
                    pin.name
                )))
            }
        },
        (None, None) => None,
    };
    let planned = plan::plan(&q.selector, &q.sort, &infos, use_index.as_deref());
    let small = store.collection_count(collection)? <= SMALL_COLLECTION;
    let scan_ok = q.allow_scan || small;
    if let Some(p) = planned.plan {
        return Ok((Strategy::Index(p), planned.candidates, scan_ok));
    }
    if let Some(u) = &use_index {
        return Err(FindError::IndexUnusable(u.clone()));
    }
    // `$or`: usable when every branch (with the other conjuncts) has an index.
    let conj = q.selector.conjuncts();
    if let Some(pos) = conj.iter().position(|s| matches!(s, Selector::Any(_))) {
        if let Selector::Any(branches) = conj[pos] {
            let rest: Vec<Selector> = conj
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != pos)
                .map(|(_, s)| (*s).clone())
                .collect();
            let plans: Option<Vec<IndexPlan>> = branches
                .iter()
                .map(|b| {
                    let mut parts = rest.clone();
                    parts.push(b.clone());
                    plan::plan(&Selector::All(parts), &[], &infos, None).plan
                })
                .collect();
            if let Some(plans) = plans {
                return Ok((Strategy::Union(plans), planned.candidates, scan_ok));
            }
        }
    }
    Ok((Strategy::Scan, planned.candidates, scan_ok))
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

/// Decodes the pinned values of a range's prefix (for `explain`).
fn decode_values(mut bytes: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match collate::decode(bytes) {
            Some((v, n)) => {
                out.push(v);
                bytes = &bytes[n..];
            }
            None => break,
        }
    }
    out
}

/// `POST .../explain`.
pub fn explain(store: &Store, collection: &str, q: &Query) -> Result<Explain, FindError> {
    let (strategy, candidates, scan_allowed) = strategy(store, collection, q)?;
    let view = |p: &IndexPlan| -> Vec<RangeView> {
        p.ranges
            .iter()
            .map(|r| RangeView {
                pinned: decode_values(&r.prefix),
                lo: hex(&r.lo),
                hi: hex(&r.hi),
            })
            .collect()
    };
    let suggested_index = plan::suggested_fields(&q.selector, &q.sort);
    Ok(match strategy {
        Strategy::Index(p) => Explain {
            strategy: if p.sorted {
                "index"
            } else {
                "index, sorted in memory"
            },
            index: Some(p.index.clone()),
            candidates,
            ranges: view(&p),
            residual_filter: true,
            in_memory_sort: !p.sorted,
            scan_allowed,
            suggested_index,
        },
        Strategy::Union(ps) => Explain {
            strategy: "union of indexes ($or), sorted in memory",
            index: Some(
                ps.iter()
                    .map(|p| p.index.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            candidates,
            ranges: ps.iter().flat_map(view).collect(),
            residual_filter: true,
            in_memory_sort: true,
            scan_allowed,
            suggested_index,
        },
        Strategy::Scan
            if q.scope
                .as_ref()
                .is_some_and(|w| all_prefixed(w, collection)) =>
        {
            Explain {
                strategy: "the caller's documents by id prefix, sorted in memory",
                index: None,
                candidates,
                ranges: Vec::new(),
                residual_filter: true,
                in_memory_sort: true,
                scan_allowed: false,
                suggested_index,
            }
        }
        Strategy::Scan => Explain {
            strategy: "scan",
            index: None,
            candidates,
            ranges: Vec::new(),
            residual_filter: true,
            in_memory_sort: !q.sort.is_empty(),
            scan_allowed,
            suggested_index,
        },
    })
}

/// Work counters of one run.
#[derive(Default)]
struct Work {
    keys: u64,
    docs: u64,
}

/// Loads live documents' JSON and versions in one batched read, counting the work; `None` for
/// an id that is not (or no longer) a live document.
fn load<S: AsRef<str>>(
    store: &Store,
    collection: &str,
    ids: &[S],
    work: &mut Work,
) -> Result<Vec<Option<(Value, String)>>, FindError> {
    work.docs += ids.len() as u64;
    let keys = ids
        .iter()
        .map(|id| DocKey::new(collection, id.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(store
        .current_json_many(&keys)?
        .into_iter()
        .map(|c| {
            c.map(|c| {
                let version = c.version();
                (Value::Object(c.json), version)
            })
        })
        .collect())
}

pub(crate) fn insert_path(m: &mut Map<String, Value>, segs: &[String], v: Value) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    if rest.is_empty() {
        m.insert(first.clone(), v);
        return;
    }
    let e = m
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    if let Value::Object(inner) = e {
        insert_path(inner, rest, v);
    }
}

/// The document cut to the given paths (all of it when `fields` is `None`).
pub fn project(doc: Map<String, Value>, fields: &Option<Vec<FieldPath>>) -> Map<String, Value> {
    let Some(fields) = fields else { return doc };
    let full = Value::Object(doc);
    let mut out = Map::new();
    for f in fields {
        if let Some(v) = f.get(&full) {
            insert_path(&mut out, f.segments(), v.clone());
        }
    }
    out
}

/// One sorted stream of index entries.
struct Stream {
    prefix_len: usize,
    lo: Vec<u8>,
    hi: Vec<u8>,
    buf: std::collections::VecDeque<Vec<u8>>,
    done: bool,
}

impl Stream {
    fn peek(
        &mut self,
        store: &Store,
        id: u64,
        reverse: bool,
    ) -> Result<Option<&Vec<u8>>, StoreError> {
        if self.buf.is_empty() && !self.done {
            let got = store.index_entries(id, &self.lo, &self.hi, reverse, CHUNK)?;
            if got.len() < CHUNK {
                self.done = true;
            }
            if let Some(last) = got.last() {
                // The next chunk starts strictly after (before) the last entry.
                if reverse {
                    self.hi = last.clone();
                } else {
                    self.lo = [last.as_slice(), &[0]].concat();
                }
            }
            self.buf.extend(got);
        }
        Ok(self.buf.front())
    }
}

/// `POST .../find`.
pub fn find(store: &Store, collection: &str, q: &Query) -> Result<FindResult, FindError> {
    let started = Instant::now();
    let (strategy, _, scan_ok) = strategy(store, collection, q)?;
    // A caller narrowed to some documents never scans: it would read everyone's documents, and
    // its cost would follow the collection rather than the caller's share of it. Unless every
    // scope has an id prefix: then its documents are the ids under those, read and judged.
    let prefixed = match (&q.scope, &strategy) {
        (Some(who), Strategy::Scan) => match prefixed_ids(store, collection, who)? {
            Some(ids) => Some(ids),
            None => {
                return Err(FindError::ScopedNeedsIndex {
                    collection: collection.to_string(),
                    fields: plan::suggested_fields(&q.selector, &q.sort),
                })
            }
        },
        _ => None,
    };
    let mut work = Work::default();
    let (docs, bookmark, index, mut warning) = match (strategy, prefixed) {
        (_, Some(ids)) => {
            let (docs, bm) = sort_in_memory(store, collection, q, ids, &mut work)?;
            (docs, bm, None, None)
        }
        (strategy, None) => match strategy {
            Strategy::Index(p) if p.sorted || q.sort.is_empty() => {
                let (docs, bm, warn) = run_index_order(store, collection, q, &p, &mut work)?;
                (docs, bm, Some(p.index), warn)
            }
            Strategy::Index(p) => {
                let ids = gather_ids(store, collection, q, std::slice::from_ref(&p), &mut work)?;
                let (docs, bm) = sort_in_memory(store, collection, q, ids, &mut work)?;
                (docs, bm, Some(p.index), None)
            }
            Strategy::Union(ps) => {
                let ids = gather_ids(store, collection, q, &ps, &mut work)?;
                let (docs, bm) = sort_in_memory(store, collection, q, ids, &mut work)?;
                let names: Vec<String> = ps.iter().map(|p| p.index.clone()).collect();
                (docs, bm, Some(names.join(",")), None)
            }
            Strategy::Scan => {
                if !scan_ok {
                    return Err(FindError::NeedsIndex {
                        collection: collection.to_string(),
                        count: store.collection_count(collection)?,
                        fields: plan::suggested_fields(&q.selector, &q.sort),
                    });
                }
                let (docs, bm, warn) = run_scan(store, collection, q, &mut work)?;
                let note = format!(
                "no index serves this query: {} documents of `{collection}` were scanned; an index \
                 on {:?} would serve it",
                work.docs,
                plan::suggested_fields(&q.selector, &q.sort)
            );
                (
                    docs,
                    bm,
                    None,
                    Some(warn.map_or(note.clone(), |w| format!("{note}; {w}"))),
                )
            }
        },
    };
    if warning.is_none() && work.keys + work.docs >= q.examine {
        warning = Some(format!(
            "this page stopped after examining {} keys or documents: continue with the bookmark",
            q.examine
        ));
    }
    // What was examined counts other callers' documents too: not told to a narrowed caller.
    let told = |n: u64| if q.scope.is_some() { 0 } else { n };
    let stats = Stats {
        index,
        keys_examined: told(work.keys),
        docs_examined: told(work.docs),
        returned: docs.len() as u64,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    Ok(FindResult {
        docs,
        bookmark: bookmark.map(|b| b.encode()),
        stats,
        warning,
    })
}

type Page = (Vec<Found>, Option<Bookmark>, Option<String>);

fn index_id(store: &Store, collection: &str, name: &str) -> Result<u64, FindError> {
    store
        .indexes()
        .get(collection, name)
        .map(|d| d.id)
        .ok_or_else(|| FindError::UnknownIndex(name.to_string()))
}

fn streams(p: &IndexPlan, after: Option<&[u8]>) -> Vec<Stream> {
    p.ranges
        .iter()
        .map(|r| {
            let (mut lo, mut hi) = (r.lo.clone(), r.hi.clone());
            if let Some(s) = after {
                let pos = [r.prefix.as_slice(), s].concat();
                if p.reverse {
                    hi = hi.min(pos);
                } else {
                    lo = lo.max([pos.as_slice(), &[0]].concat());
                }
            }
            Stream {
                prefix_len: r.prefix.len(),
                lo,
                hi,
                buf: Default::default(),
                done: false,
            }
        })
        .collect()
}

/// The stream whose next entry (after its prefix) comes first in the plan's direction, with
/// that entry's suffix; `None` when every stream is done.
fn next_entry(
    streams: &mut [Stream],
    store: &Store,
    id: u64,
    reverse: bool,
) -> Result<Option<(usize, Vec<u8>)>, StoreError> {
    let mut best: Option<(usize, &[u8])> = None;
    for s in streams.iter_mut() {
        s.peek(store, id, reverse)?;
    }
    for (i, s) in streams.iter().enumerate() {
        let Some(k) = s.buf.front() else { continue };
        let suffix = &k[s.prefix_len..];
        let better = match best {
            None => true,
            Some((_, b)) => {
                let o = suffix.cmp(b);
                if reverse {
                    o == Ordering::Greater
                } else {
                    o == Ordering::Less
                }
            }
        };
        if better {
            best = Some((i, suffix));
        }
    }
    Ok(best.map(|(i, s)| (i, s.to_vec())))
}

fn run_index_order(
    store: &Store,
    collection: &str,
    q: &Query,
    p: &IndexPlan,
    work: &mut Work,
) -> Result<Page, FindError> {
    let id = index_id(store, collection, &p.index)?;
    if let Some(pin) = q.bookmark.as_ref().and_then(|b| b.index.as_ref()) {
        if pin.id != id {
            return Err(FindError::BadRequest(format!(
                "bookmark: its pages were read in the index `{}`, not `{}`",
                pin.name, p.index
            )));
        }
    }
    let after = match q.bookmark.as_ref().map(|b| &b.after[0]) {
        None => None,
        Some(Position::Key(k)) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k)
                .map_err(|_| FindError::BadRequest("bookmark: not from this query".into()))?,
        ),
        Some(_) => {
            return Err(FindError::BadRequest(
                "bookmark: from a query with another plan".into(),
            ))
        }
    };
    let mut streams = streams(p, after.as_deref());
    let mut out = Vec::new();
    let mut last_key: Option<Vec<u8>> = None;
    while out.len() < q.limit && work.keys + work.docs < q.examine {
        // As many entries as could still fill the page (no more: an entry taken is an entry
        // the bookmark has passed), their documents then read in one batch.
        let want = (q.limit - out.len()).min(((q.examine - work.keys - work.docs) as usize).max(1));
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(want.min(CHUNK));
        while batch.len() < want {
            let Some((i, suffix)) = next_entry(&mut streams, store, id, p.reverse)? else {
                break;
            };
            let entry = streams[i].buf.pop_front().unwrap_or_default();
            work.keys += 1;
            last_key = Some(suffix);
            batch.push(entry);
        }
        if batch.is_empty() {
            break;
        }
        let ids: Vec<&str> = batch
            .iter()
            .filter_map(|e| split_entry(e).map(|(_, doc_id)| doc_id))
            .collect();
        for (doc_id, loaded) in ids.iter().zip(load(store, collection, &ids, work)?) {
            let Some((json, version)) = loaded else {
                continue;
            };
            if q.admits(collection, doc_id, &json) {
                let Value::Object(m) = json else { continue };
                out.push(Found {
                    id: doc_id.to_string(),
                    version,
                    doc: project(m, &q.fields),
                });
            }
        }
    }
    let mut more = false;
    for s in &mut streams {
        more |= s.peek(store, id, p.reverse)?.is_some();
    }
    let bookmark = match last_key {
        Some(k) if more => Some(Bookmark {
            index: Some(IndexRef {
                name: p.index.clone(),
                id,
            }),
            ..Bookmark::one(Position::Key(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k),
            ))
        }),
        _ => None,
    };
    Ok((out, bookmark, None))
}

/// Whether the caller is narrowed on `collection` and every scope there has an id prefix.
fn all_prefixed(who: &Grant, collection: &str) -> bool {
    let scopes = who.narrowing(collection);
    !scopes.is_empty() && scopes.iter().all(|s| s.id_prefix.is_some())
}

/// The ids under the caller's id prefixes on `collection`, when every one of its scopes there
/// has one (at most [`MAX_SORT_DOCS`]); `None` otherwise.
fn prefixed_ids(
    store: &Store,
    collection: &str,
    who: &Grant,
) -> Result<Option<Vec<String>>, FindError> {
    if !all_prefixed(who, collection) {
        return Ok(None);
    }
    let mut ids = std::collections::BTreeSet::new();
    for scope in who.narrowing(collection) {
        let Some(prefix) = &scope.id_prefix else {
            return Ok(None);
        };
        match store.ids_with_prefix(collection, prefix, MAX_SORT_DOCS)? {
            Some(found) => ids.extend(found),
            None => return Ok(None),
        }
        if ids.len() > MAX_SORT_DOCS {
            return Ok(None);
        }
    }
    Ok(Some(ids.into_iter().collect()))
}

/// Every document id the plans' ranges hold (deduplicated), for a sort in memory.
fn gather_ids(
    store: &Store,
    collection: &str,
    q: &Query,
    plans: &[IndexPlan],
    work: &mut Work,
) -> Result<Vec<String>, FindError> {
    let mut ids = std::collections::BTreeSet::new();
    for p in plans {
        let id = index_id(store, collection, &p.index)?;
        for mut s in streams(p, None) {
            while let Some(k) = s.peek(store, id, false)? {
                let k = k.clone();
                s.buf.pop_front();
                work.keys += 1;
                if let Some((_, doc_id)) = split_entry(&k) {
                    ids.insert(doc_id.to_string());
                }
                // Branches of an `$or` may overlap (even repeat): bounded by keys read too.
                if ids.len() > MAX_SORT_DOCS * 4 || work.keys > q.examine {
                    return Err(FindError::SortTooLarge {
                        fields: plan::suggested_fields(&q.selector, &q.sort),
                    });
                }
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// A document's sort keys: each sort field's value in index-key encoding (an absent field sorts
/// before every value, `null` included), so a sort in memory orders exactly as an index would.
fn sort_values(doc: &Value, sort: &[SortKey]) -> Vec<Vec<u8>> {
    sort.iter()
        .map(|k| match k.path.get(doc) {
            Some(v) => collate::encoded(v),
            None => vec![collate::MISSING],
        })
        .collect()
}

/// Orders two (sort keys, id) positions by the query's sort, then by id.
fn order(sort: &[SortKey], a: (&[Vec<u8>], &str), b: (&[Vec<u8>], &str)) -> Ordering {
    for (k, (x, y)) in sort.iter().zip(a.0.iter().zip(b.0)) {
        let o = x.cmp(y);
        let o = if k.direction == Direction::Desc {
            o.reverse()
        } else {
            o
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.1.cmp(b.1)
}

fn sort_in_memory(
    store: &Store,
    collection: &str,
    q: &Query,
    ids: Vec<String>,
    work: &mut Work,
) -> Result<(Vec<Found>, Option<Bookmark>), FindError> {
    let mut matched = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        for (id, loaded) in chunk.iter().zip(load(store, collection, chunk, work)?) {
            let Some((json, version)) = loaded else {
                continue;
            };
            if q.admits(collection, id, &json) {
                matched.push((sort_values(&json, &q.sort), id.clone(), version, json));
                if matched.len() > MAX_SORT_DOCS {
                    return Err(FindError::SortTooLarge {
                        fields: plan::suggested_fields(&q.selector, &q.sort),
                    });
                }
            }
        }
    }
    finish_sorted(q, matched)
}

type Matched = (Vec<Vec<u8>>, String, String, Value);

fn finish_sorted(
    q: &Query,
    mut matched: Vec<Matched>,
) -> Result<(Vec<Found>, Option<Bookmark>), FindError> {
    matched.sort_by(|a, b| order(&q.sort, (&a.0, &a.1), (&b.0, &b.1)));
    let start = match q.bookmark.as_ref().map(|b| &b.after[0]) {
        None => 0,
        Some(Position::Sorted(vals, id)) => {
            let vals: Vec<Vec<u8>> = vals
                .iter()
                .map(|v| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v))
                .collect::<Result<_, _>>()
                .map_err(|_| FindError::BadRequest("bookmark: not from this query".into()))?;
            matched
                .iter()
                .position(|m| order(&q.sort, (&m.0, &m.1), (&vals, id)) == Ordering::Greater)
                .unwrap_or(matched.len())
        }
        Some(_) => {
            return Err(FindError::BadRequest(
                "bookmark: from a query with another plan".into(),
            ))
        }
    };
    let page: Vec<Matched> = matched.into_iter().skip(start).collect();
    let more = page.len() > q.limit;
    let page: Vec<Matched> = page.into_iter().take(q.limit).collect();
    let bookmark = match page.last() {
        Some((vals, id, _, _)) if more => Some(Bookmark::one(Position::Sorted(
            vals.iter()
                .map(|v| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v))
                .collect(),
            id.clone(),
        ))),
        _ => None,
    };
    let docs = page
        .into_iter()
        .filter_map(|(_, id, version, json)| match json {
            Value::Object(m) => Some(Found {
                id,
                version,
                doc: project(m, &q.fields),
            }),
            _ => None,
        })
        .collect();
    Ok((docs, bookmark))
}

fn run_scan(
    store: &Store,
    collection: &str,
    q: &Query,
    work: &mut Work,
) -> Result<Page, FindError> {
    let sorted = !q.sort.is_empty();
    let mut after = match q.bookmark.as_ref().map(|b| &b.after[0]) {
        None => None,
        Some(Position::Id(id)) if !sorted => Some(id.clone()),
        Some(Position::Sorted(..)) if sorted => None,
        Some(_) => {
            return Err(FindError::BadRequest(
                "bookmark: from a query with another plan".into(),
            ))
        }
    };
    let mut out = Vec::new();
    let mut matched = Vec::new();
    let mut exhausted = false;
    'pages: while work.docs < q.examine {
        let page = store.list(collection, after.as_deref(), 256)?;
        if page.is_empty() {
            exhausted = true;
            break;
        }
        for (id, meta) in &page {
            if work.docs >= q.examine {
                break 'pages;
            }
            after = Some(id.clone());
            if meta.deleted {
                continue;
            }
            let Some((json, version)) = load(store, collection, &[id], work)?.pop().flatten()
            else {
                continue;
            };
            if !q.admits(collection, id, &json) {
                continue;
            }
            if sorted {
                matched.push((sort_values(&json, &q.sort), id.clone(), version, json));
                if matched.len() > MAX_SORT_DOCS {
                    return Err(FindError::SortTooLarge {
                        fields: plan::suggested_fields(&q.selector, &q.sort),
                    });
                }
            } else {
                let Value::Object(m) = json else { continue };
                out.push(Found {
                    id: id.clone(),
                    version,
                    doc: project(m, &q.fields),
                });
                if out.len() >= q.limit {
                    break 'pages;
                }
            }
        }
    }
    if sorted {
        if !exhausted {
            return Err(FindError::SortTooLarge {
                fields: plan::suggested_fields(&q.selector, &q.sort),
            });
        }
        let (docs, bm) = finish_sorted(q, matched)?;
        return Ok((docs, bm, None));
    }
    // From the last document examined, not the last returned: a page cut short by
    // `Query::examine` goes on after what it read (it may have returned nothing).
    let more = !exhausted
        && store
            .list(collection, after.as_deref(), 1)
            .map(|p| !p.is_empty())
            .unwrap_or(true);
    let bookmark = match after {
        Some(id) if more => Some(Bookmark::one(Position::Id(id))),
        _ => None,
    };
    Ok((out, bookmark, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn projection_keeps_the_named_paths() {
        let doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]})
            .as_object()
            .cloned()
            .unwrap();
        let fields = Some(vec![
            FieldPath::parse("a").unwrap(),
            FieldPath::parse("b.c").unwrap(),
            FieldPath::parse("zz").unwrap(),
        ]);
        assert_eq!(
            Value::Object(project(doc, &fields)),
            json!({"a": 1, "b": {"c": 2}})
        );
    }

    fn store(dir: &std::path::Path) -> Store {
        let opts = crate::store::StoreOptions {
            sync_writes: false,
            ..Default::default()
        };
        Store::open(dir, opts, crate::metrics::Metrics::new()).unwrap()
    }

    fn put(s: &Store, id: &str, v: Value) {
        let Value::Object(m) = v else { unreachable!() };
        s.write::<_, StoreError>(&crate::store::DocKey::new("t", id).unwrap(), |doc, _| {
            crate::doc::write::apply(doc, &crate::doc::write::Write::Replace(m), 1)
                .map_err(StoreError::Doc)
        })
        .unwrap();
    }

    fn query(body: Value) -> Query {
        Query::parse(&serde_json::from_value(body).unwrap()).unwrap()
    }

    /// Every page of `q` in turn; the ids each returned.
    fn pages(s: &Store, mut q: Query) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        loop {
            let r = find(s, "t", &q).unwrap();
            out.push(r.docs.iter().map(|d| d.id.clone()).collect());
            match r.bookmark {
                Some(b) => q.bookmark = Some(Bookmark::decode(&b).unwrap()),
                None => return out,
            }
            assert!(out.len() < 100, "pagination ends");
        }
    }

    /// A scan page stopped by its examination bound goes on after what it examined, even when
    /// it returned nothing: the match past the bound is found on a later page.
    #[test]
    fn a_scan_cut_short_continues_after_what_it_examined() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for i in 0..30 {
            put(&s, &format!("d{i:02}"), json!({"n": i}));
        }
        let mut q = query(json!({"selector": {"n": {"$gte": 25}}, "limit": 2, "allow_scan": true}));
        q.examine = 10;
        let got = pages(&s, q);
        assert_eq!(
            got[0],
            Vec::<String>::new(),
            "the first 10 examined match nothing"
        );
        let all: Vec<String> = got.into_iter().flatten().collect();
        assert_eq!(all, ["d25", "d26", "d27", "d28", "d29"]);
    }

    /// A bookmark of an index-ordered page is read in the index that made it: when a better
    /// index appears between pages, the next page still follows the first index (its key bytes
    /// mean nothing in another), and a bookmark of a dropped index is refused with a 400, not
    /// read as a position in another.
    #[test]
    fn an_index_bookmark_stays_with_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for i in 0..20 {
            put(&s, &format!("d{i:02}"), json!({"a": i % 4, "b": 19 - i}));
        }
        let ready = |name: &str, fields: &[&str]| {
            let def = crate::store::index_registry::Definition {
                fields: fields.iter().map(|f| (*f).into()).collect(),
                partial_filter: None,
            };
            s.define_index("t", name, &def).unwrap();
            let ix = s.indexes().get("t", name).unwrap();
            while s.index_build_step(&ix, 100).unwrap() != BuildState::Ready {}
        };
        ready("by_b", &["b"]);
        let q = query(json!({"selector": {"a": 1, "b": {"$gte": 0}}, "limit": 2}));
        let first = find(&s, "t", &q).unwrap();
        assert_eq!(first.stats.index.as_deref(), Some("by_b"));
        // Chosen for a fresh query (equality before a range); its keys after the pinned `a`
        // are ids, where `by_b`'s are values and ids.
        ready("by_a", &["a"]);
        assert_eq!(
            find(&s, "t", &q).unwrap().stats.index.as_deref(),
            Some("by_a")
        );
        let mut next = q.clone();
        next.bookmark = Some(Bookmark::decode(first.bookmark.as_ref().unwrap()).unwrap());
        let rest = pages(&s, next.clone());
        let mut all: Vec<String> = first.docs.iter().map(|d| d.id.clone()).collect();
        all.extend(rest.into_iter().flatten());
        assert_eq!(
            all,
            ["d17", "d13", "d09", "d05", "d01"],
            "each match once, in order"
        );
        assert!(s.drop_index("t", "by_b").unwrap());
        match find(&s, "t", &next) {
            Err(FindError::BadRequest(m)) => assert!(m.contains("by_b"), "{m}"),
            other => panic!("a bookmark of a dropped index: {other:?}"),
        }
    }

    #[test]
    fn bookmarks_round_trip_and_refuse_garbage() {
        let b = Bookmark::one(Position::Sorted(vec!["AQ".into()], "x".into()));
        assert_eq!(Bookmark::decode(&b.encode()).unwrap(), b);
        assert!(Bookmark::decode("not-base64!").is_err());
        assert!(Bookmark::decode("e30").is_err());
    }
}
