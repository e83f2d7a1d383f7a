//! A narrowed caller's view of one collection: which of its documents the caller's scopes
//! admit, found from the scopes' indexes and id prefixes rather than by reading the collection,
//! so that serving a user costs in proportion to that user's documents. The changes feed and
//! document listings read through it.
//!
//! A document is admitted by its index entry when the entry holds every field the scope reads,
//! none of them only in part ([`super::feed_filter::entry_fields`]); otherwise by its current
//! JSON. Deleted documents are never admitted: their last contents are not kept to judge them by.

use std::collections::BTreeMap;

use serde_json::Value;

use super::feed_filter::{entry_fields, selector_paths, FeedFilter};
use super::{strategy, streams, FindError, Query, Strategy};
use crate::access::Grant;
use crate::metrics::Metrics;
use crate::query::selector::Selector;
use crate::store::index::split_entry;
use crate::store::{CurrentJson, DocKey, DocMeta, FeedEntry, Store, StoreError};

/// The caller's scopes on one collection. Changes-feed entries are judged one by one
/// ([`ScopeView::keep`], each selector as a [`FeedFilter`] judges it); a feed page far behind
/// the head ([`ScopeView::page_from_scopes`]) and a listing page ([`ScopeView::list_page`]) are
/// answered from the caller's documents.
pub struct ScopeView {
    collection: String,
    parts: Vec<ScopePart>,
    /// The caller, which judges a document on its JSON.
    who: Grant,
}

struct ScopePart {
    prefix: Option<String>,
    selector: Option<(Selector, FeedFilter)>,
}

/// A page of the feed: entries with their sequence numbers, and the cursor after it.
pub type FeedPage = (Vec<(u64, FeedEntry)>, u64);

/// Most documents the scopes may hold for a page to be answered from them; beyond, the caller
/// reads the feed or the collection's listing, filtered.
pub const MAX_SCOPE_DOCS: usize = 10_000;

/// How far behind the head of the feed a narrowed caller's cursor must be for its page to be
/// answered from its documents (closer, reading the few changes since is cheaper).
pub const FAR_BEHIND: u64 = 1_000;

/// The ids the scopes may admit, each with whether it is known to be admitted without its JSON.
type Members = BTreeMap<String, bool>;

/// A listing page: its documents, and the id to resume after when it is full.
pub type ListPage = (Vec<Listed>, Option<String>);

/// A document of a listing page: its metadata, and its current JSON when asked for or read to
/// judge it.
pub struct Listed {
    pub id: String,
    pub meta: DocMeta,
    pub json: Option<CurrentJson>,
}

impl ScopeView {
    pub fn new(store: &Store, collection: &str, who: &Grant) -> Result<ScopeView, FindError> {
        let parts = who
            .narrowing(collection)
            .into_iter()
            .map(|s| {
                let selector = match &s.selector {
                    Some((_, sel)) => Some((
                        sel.clone(),
                        FeedFilter::new(store, collection, sel.clone(), true)?,
                    )),
                    None => None,
                };
                Ok(ScopePart {
                    prefix: s.id_prefix.clone(),
                    selector,
                })
            })
            .collect::<Result<Vec<_>, FindError>>()?;
        Ok(ScopeView {
            collection: collection.to_string(),
            parts,
            who: who.clone(),
        })
    }

    /// Whether the caller sees the changed document now.
    pub fn keep(
        &self,
        store: &Store,
        metrics: &Metrics,
        e: &FeedEntry,
    ) -> Result<bool, StoreError> {
        if e.deleted || e.collection != self.collection {
            return Ok(false);
        }
        for part in &self.parts {
            if part.prefix.as_deref().is_some_and(|p| !e.id.starts_with(p)) {
                continue;
            }
            match &part.selector {
                None => return Ok(true),
                Some((_, f)) if f.keep(store, metrics, e)? => return Ok(true),
                Some(_) => {}
            }
        }
        Ok(false)
    }

    /// The documents the scopes may admit: `None` when a scope cannot be answered from an index
    /// or an id prefix, or they hold more than [`MAX_SCOPE_DOCS`].
    fn members(&self, store: &Store) -> Result<Option<Members>, FindError> {
        let mut found = Members::new();
        for part in &self.parts {
            match (&part.selector, &part.prefix) {
                (Some((sel, _)), prefix) => {
                    let Some(hits) = candidates(store, &self.collection, sel, MAX_SCOPE_DOCS)?
                    else {
                        return Ok(None);
                    };
                    for hit in hits {
                        if prefix.as_deref().is_some_and(|p| !hit.id.starts_with(p)) {
                            continue;
                        }
                        let sure = match &hit.fields {
                            Some(fields) if sel.matches(fields) => true,
                            Some(_) => continue,
                            None => false,
                        };
                        *found.entry(hit.id).or_default() |= sure;
                    }
                }
                (None, Some(prefix)) => {
                    match store.ids_with_prefix(&self.collection, prefix, MAX_SCOPE_DOCS)? {
                        Some(ids) => found.extend(ids.into_iter().map(|id| (id, true))),
                        None => return Ok(None),
                    }
                }
                // A whole collection is no narrowing: nothing to answer from.
                (None, None) => return Ok(None),
            }
            if found.len() > MAX_SCOPE_DOCS {
                return Ok(None);
            }
        }
        Ok(Some(found))
    }

    /// The metadata of `ids` (live documents only), with the JSON of those that are not `sure`
    /// or when `with_json`, judged against the scopes; in the order of `ids`. `upto` is a
    /// watermark read before the members were: a document committed since may have changed
    /// what its index entry said, so it is judged on its JSON like an unsure one.
    fn admitted(
        &self,
        store: &Store,
        ids: Vec<(String, bool)>,
        upto: u64,
        with_json: bool,
    ) -> Result<Vec<Listed>, FindError> {
        let keys = ids
            .iter()
            .map(|(id, _)| DocKey::new(&self.collection, id))
            .collect::<Result<Vec<_>, _>>()?;
        let metas = store.meta_many(&keys)?;
        let mut live = Vec::new();
        for (((id, sure), key), meta) in ids.into_iter().zip(keys).zip(metas) {
            let Some(meta) = meta else { continue };
            if meta.deleted {
                continue;
            }
            let sure = sure && meta.feed_seq.is_some_and(|s| s <= upto);
            live.push((id, key, meta, sure));
        }
        let read: Vec<DocKey> = live
            .iter()
            .filter(|(_, _, _, sure)| with_json || !sure)
            .map(|(_, key, _, _)| key.clone())
            .collect();
        let mut jsons = store.current_json_many(&read)?.into_iter();
        let mut out = Vec::with_capacity(live.len());
        for (id, _, meta, sure) in live {
            let json = if with_json || !sure {
                match jsons.next().flatten() {
                    Some(j) => Some(j),
                    // Deleted since its metadata was read.
                    None => continue,
                }
            } else {
                None
            };
            // JSON read is judged, whatever the index said: it is what the caller is shown, and
            // it may be newer than the entry (a write that took the document out of scope).
            if let Some(j) = &json {
                let doc = Value::Object(j.json.clone());
                if !self.who.sees(&self.collection, &id, &doc) {
                    continue;
                }
            } else if !sure {
                continue;
            }
            out.push(Listed { id, meta, json });
        }
        Ok(out)
    }

    /// A listing page as the caller sees it: its live documents whose ids start with
    /// `id_prefix`, in id order after `after`, at most `limit`, with their JSON when `with_json`,
    /// and the id to resume after when the page is full. `None` when the scopes cannot be
    /// answered from indexes or id prefixes (the caller then filters the collection's listing).
    pub fn list_page(
        &self,
        store: &Store,
        id_prefix: &str,
        after: Option<&str>,
        limit: usize,
        with_json: bool,
    ) -> Result<Option<ListPage>, FindError> {
        let upto = *store.feed_watermark().borrow();
        let Some(members) = self.members(store)? else {
            return Ok(None);
        };
        let mut rest = members
            .into_iter()
            .filter(|(id, _)| id.starts_with(id_prefix) && after.is_none_or(|a| id.as_str() > a))
            .peekable();
        let mut page = Vec::new();
        while page.len() < limit && rest.peek().is_some() {
            // Most members are live and in scope: read about as many as the page still needs.
            let chunk: Vec<(String, bool)> = rest.by_ref().take(limit - page.len()).collect();
            page.extend(self.admitted(store, chunk, upto, with_json)?);
        }
        let next = if page.len() == limit {
            page.last().map(|l| l.id.clone())
        } else {
            None
        };
        Ok(Some((page, next)))
    }

    /// The feed after `since` as the caller sees it, from its documents rather than from the
    /// feed, when `since` is more than [`FAR_BEHIND`] behind the head: each document's one
    /// current entry up to the watermark, in feed order (at most `limit`; the cursor is the last
    /// one's when the page is full, else the watermark). `None` when the feed should be read
    /// instead: the cursor is close, or the scopes cannot be answered from their documents.
    pub fn page_from_scopes(
        &self,
        store: &Store,
        since: u64,
        limit: usize,
    ) -> Result<Option<FeedPage>, FindError> {
        let upto = *store.feed_watermark().borrow();
        if upto.saturating_sub(since) <= FAR_BEHIND {
            return Ok(None);
        }
        self.page_between(store, since, upto, limit)
    }

    /// [`ScopeView::page_from_scopes`] after `since` up to `upto`, whatever the distance between
    /// them. `upto` must be a watermark read before the call: no commit at or below it is still
    /// in flight, so the indexes and metadata read after it hold every such commit, and one that
    /// slips between those reads is above it, left to the next page, which judges it afresh.
    pub fn page_between(
        &self,
        store: &Store,
        since: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Option<FeedPage>, FindError> {
        let Some(members) = self.members(store)? else {
            return Ok(None);
        };
        let mut entries: Vec<(u64, FeedEntry)> = self
            .admitted(store, members.into_iter().collect(), upto, false)?
            .into_iter()
            .filter_map(|l| match l.meta.feed_seq {
                Some(seq) if seq > since && seq <= upto => Some((
                    seq,
                    FeedEntry {
                        collection: self.collection.clone(),
                        id: l.id,
                        heads: l.meta.heads,
                        deleted: false,
                    },
                )),
                _ => None,
            })
            .collect();
        entries.sort_by_key(|(seq, _)| *seq);
        if entries.len() >= limit {
            entries.truncate(limit);
            let last = entries.last().map_or(upto, |(s, _)| *s);
            return Ok(Some((entries, last)));
        }
        Ok(Some((entries, upto)))
    }
}

/// A document an index says may match a selector: its id, and the values of the fields the
/// selector reads, from the index entry, when they tell exactly whether it matches (the index
/// holds every path the selector reads, and none of the values in part).
pub struct IndexHit {
    pub id: String,
    pub fields: Option<Value>,
}

/// The documents of `collection` that an index says may match `selector` (every match is among
/// them; [`IndexHit::fields`] judges those it can, the caller the rest), without scanning:
/// `None` when no ready index serves the selector or more than `cap` would come back.
pub fn candidates(
    store: &Store,
    collection: &str,
    selector: &Selector,
    cap: usize,
) -> Result<Option<Vec<IndexHit>>, FindError> {
    let q = Query {
        selector: selector.clone(),
        fields: None,
        sort: Vec::new(),
        limit: 1,
        bookmark: None,
        use_index: None,
        allow_scan: false,
        scope: None,
        examine: super::MAX_EXAMINED,
    };
    let plans = match strategy(store, collection, &q)?.0 {
        Strategy::Index(p) => vec![p],
        Strategy::Union(ps) => ps,
        Strategy::Scan => return Ok(None),
    };
    let paths = selector_paths(selector);
    let mut found = std::collections::BTreeMap::new();
    for p in &plans {
        let def = store
            .indexes()
            .get(collection, &p.index)
            .ok_or_else(|| FindError::UnknownIndex(p.index.clone()))?;
        let covers = paths
            .iter()
            .all(|path| def.fields.iter().any(|f| f.segments() == path.as_slice()));
        for mut s in streams(p, None) {
            while let Some(k) = s.peek(store, def.id, false)? {
                if let Some((values, doc_id)) = split_entry(k) {
                    let fields = if covers {
                        entry_fields(&def, values)
                    } else {
                        None
                    };
                    found
                        .entry(doc_id.to_string())
                        .and_modify(|f: &mut Option<Value>| {
                            if f.is_none() {
                                *f = fields.clone()
                            }
                        })
                        .or_insert(fields);
                }
                s.buf.pop_front();
                if found.len() > cap {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(
        found
            .into_iter()
            .map(|(id, fields)| IndexHit { id, fields })
            .collect(),
    ))
}
