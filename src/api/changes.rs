//! The node-wide changes feed: `GET /v1/changes`, resumable by cursor, as a plain page, a long
//! poll, or Server-Sent Events. Each document appears once, at its latest change.
//!
//! Long polls and SSE streams hold one of `max_streams` slots while they last. With a collection
//! filter, one page scans a bounded number of feed entries; a page that stops at that bound
//! without a match still advances the cursor, and the long poll and the stream go on scanning at
//! once rather than wait for the next write (they would stall behind a long run of other
//! collections' entries).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::codec::cursor::{self, Cursor};
use crate::doc::heads;
use crate::find::feed_filter::FeedFilter;
use crate::find::scope_view::ScopeView;
use crate::http::extract::QueryParams;
use crate::http::problem::ApiError;
use crate::metrics::Metrics;
use crate::node::streams::StreamSlot;
use crate::node::Node;
use crate::store::{keys, FeedEntry, Store, StoreError};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedMode {
    #[default]
    Normal,
    Longpoll,
    Sse,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Cursor to resume after (`0`: from the start, `now`: only new changes).
    pub since: Option<String>,
    /// Most entries per page (default 100, at most 10000).
    pub limit: Option<usize>,
    /// Only documents of this collection.
    pub collection: Option<String>,
    #[serde(default)]
    pub feed: FeedMode,
    /// Long-poll wait in milliseconds (default 30000; capped below the request timeout).
    pub timeout: Option<u64>,
    /// Only documents matching this selector (JSON) now; needs `collection`.
    pub selector: Option<String>,
    /// With `selector`: judge documents by loading them when no index covers the selector.
    #[serde(default)]
    pub allow_scan: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRow {
    pub cursor: String,
    pub collection: String,
    pub id: String,
    pub version: String,
    pub deleted: bool,
}

fn row(seq: u64, e: FeedEntry) -> ChangeRow {
    let hs: Vec<automerge::ChangeHash> =
        e.heads.iter().map(|h| automerge::ChangeHash(*h)).collect();
    ChangeRow {
        cursor: seq.to_string(),
        collection: e.collection,
        id: e.id,
        version: heads::format(&hs),
        deleted: e.deleted,
    }
}

fn parse_since(node: &Node, since: Option<&str>) -> Result<u64, ApiError> {
    match since
        .map(cursor::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?
    {
        None => Ok(0),
        Some(Cursor::Now) => Ok(*node.store.feed_watermark().borrow()),
        Some(Cursor::After(seq)) => Ok(seq),
    }
}

/// What a page keeps of the feed: a selector's matches, a narrowed caller's documents.
struct Filters {
    selected: Option<FeedFilter>,
    scope: Option<ScopeView>,
}

impl Filters {
    fn keep(&self, store: &Store, metrics: &Metrics, e: &FeedEntry) -> Result<bool, StoreError> {
        if let Some(s) = &self.scope {
            if !s.keep(store, metrics, e)? {
                return Ok(false);
            }
        }
        match &self.selected {
            Some(f) => f.keep(store, metrics, e),
            None => Ok(true),
        }
    }
}

async fn page(
    node: &Arc<Node>,
    since: u64,
    limit: usize,
    collection: Option<String>,
    filter: Option<Arc<Filters>>,
) -> Result<(Vec<ChangeRow>, u64), ApiError> {
    let n = node.clone();
    node.blocking::<_, ApiError>(move || {
        let (store, metrics) = (&n.store, &n.metrics);
        // A narrowed caller far behind the head: its documents, rather than everyone's changes.
        if let Some(Filters {
            scope: Some(scope),
            selected: None,
        }) = filter.as_deref()
        {
            if let Some((entries, last)) = scope.page_from_scopes(store, since, limit)? {
                return Ok((entries.into_iter().map(|(s, e)| row(s, e)).collect(), last));
            }
        }
        // The node's own collections (index definitions) are not clients' changes.
        let keep = |e: &FeedEntry| match filter.as_deref() {
            _ if keys::SYSTEM_COLLECTIONS.contains(&e.collection.as_str()) => Ok(false),
            Some(f) => f.keep(store, metrics, e),
            None => Ok(true),
        };
        let (entries, last) = store.feed_page_where(since, limit, collection.as_deref(), &keep)?;
        Ok((entries.into_iter().map(|(s, e)| row(s, e)).collect(), last))
    })
    .await
}

/// `GET /v1/changes`
pub async fn changes(
    State(node): State<Arc<Node>>,
    QueryParams(q): QueryParams<ChangesQuery>,
    axum::Extension(who): axum::Extension<crate::http::auth::Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(c) = &q.collection {
        keys::validate_collection(c)?;
        if keys::SYSTEM_COLLECTIONS.contains(&c.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "collection `{c}` is the node's own"
            )));
        }
    }
    match &q.collection {
        None if who.collections.is_some() || who.scopes.is_some() => {
            return Err(ApiError::Forbidden(format!(
                "token `{}` is limited to some collections: pass `collection=`",
                who.name
            )))
        }
        Some(c) if !who.may_use(c) => return Err(who.not_allowed(c)),
        _ => {}
    }
    // A reconnecting EventSource resumes from the last event it saw.
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let since = match (q.feed, last_event) {
        (FeedMode::Sse, Some(id)) => parse_since(&node, Some(id))?,
        _ => parse_since(&node, q.since.as_deref())?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let selected = match (&q.selector, &q.collection) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::BadRequest(
                "selector: needs collection= (a selector applies to one collection)".into(),
            ))
        }
        (Some(text), Some(c)) => {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("selector: not JSON: {e}")))?;
            let selector = crate::query::Selector::parse(&v)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let (n, c, allow) = (node.clone(), c.clone(), q.allow_scan);
            Some(
                node.blocking::<_, ApiError>(move || {
                    Ok(FeedFilter::new(&n.store, &c, selector, allow)?)
                })
                .await?,
            )
        }
    };
    // A caller narrowed to some documents sees the changes of those only.
    let scope = match &q.collection {
        Some(c) if !who.sees_all_of(c) => {
            let (n, c, w) = (node.clone(), c.clone(), (*who.0).clone());
            Some(
                node.blocking::<_, ApiError>(move || Ok(ScopeView::new(&n.store, &c, &w)?))
                    .await?,
            )
        }
        _ => None,
    };
    let filter =
        (selected.is_some() || scope.is_some()).then(|| Arc::new(Filters { selected, scope }));
    match q.feed {
        FeedMode::Normal => {
            let (results, last) = page(&node, since, limit, q.collection, filter).await?;
            Ok(axum::Json(
                serde_json::json!({ "results": results, "last_cursor": last.to_string() }),
            )
            .into_response())
        }
        FeedMode::Longpoll => {
            let _slot = node.streams.acquire()?;
            let max_wait = Duration::from_secs(node.config.request_timeout_secs).mul_f64(0.9);
            let wait = Duration::from_millis(q.timeout.unwrap_or(30_000)).min(max_wait);
            let deadline = tokio::time::Instant::now() + wait;
            let mut rx = node.store.feed_watermark();
            let mut since = since;
            loop {
                rx.borrow_and_update();
                let (results, last) =
                    page(&node, since, limit, q.collection.clone(), filter.clone()).await?;
                since = last;
                if !results.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(axum::Json(
                        serde_json::json!({ "results": results, "last_cursor": last.to_string() }),
                    )
                    .into_response());
                }
                if scan_unfinished(&rx, last) {
                    continue;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return Err(ApiError::ShuttingDown) },
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = node.shutdown.cancelled() => return Err(ApiError::ShuttingDown),
                }
            }
        }
        FeedMode::Sse => {
            let slot = node.streams.acquire()?;
            Ok(sse(node, slot, since, limit, q.collection, filter, &who).into_response())
        }
    }
}

/// Whether a page ended before the visible end of the feed (its scan bound, with a collection
/// filter), so the next page should follow at once instead of waiting for a write.
fn scan_unfinished(rx: &tokio::sync::watch::Receiver<u64>, last: u64) -> bool {
    last < *rx.borrow()
}

/// A stream skipping this many entries of other collections sends an id-only event, so a
/// reconnecting `EventSource` (which resumes from the last id it saw) does not rescan them.
const PROGRESS_EVERY: u64 = 10_000;

struct SseState {
    node: Arc<Node>,
    _slot: StreamSlot,
    since: u64,
    /// The cursor last sent as an event id.
    sent: u64,
    limit: usize,
    collection: Option<String>,
    filter: Option<Arc<Filters>>,
    rx: tokio::sync::watch::Receiver<u64>,
    buffered: VecDeque<ChangeRow>,
}

/// Streams every change after `since` as an SSE event (`id` = cursor, so `Last-Event-ID`
/// resumption works), until the client goes away or the node shuts down.
fn sse(
    node: Arc<Node>,
    slot: StreamSlot,
    since: u64,
    limit: usize,
    collection: Option<String>,
    filter: Option<Arc<Filters>>,
    who: &crate::access::Grant,
) -> impl IntoResponse {
    let rx = node.store.feed_watermark();
    let state = SseState {
        node,
        _slot: slot,
        since,
        sent: since,
        limit,
        collection,
        filter,
        rx,
        buffered: VecDeque::new(),
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(r) = st.buffered.pop_front() {
                let data = serde_json::to_string(&r).unwrap_or_default();
                st.sent = r.cursor.parse().unwrap_or(st.sent);
                let ev = Event::default()
                    .id(r.cursor.clone())
                    .event("change")
                    .data(data);
                return Some((Ok::<Event, Infallible>(ev), st));
            }
            st.rx.borrow_and_update();
            let filter = st.filter.clone();
            match page(&st.node, st.since, st.limit, st.collection.clone(), filter).await {
                Ok((rows, last)) => {
                    st.since = last;
                    if !rows.is_empty() {
                        st.buffered.extend(rows);
                        continue;
                    }
                    if last >= st.sent.saturating_add(PROGRESS_EVERY) {
                        // No `data`: EventSource records the id without dispatching an event.
                        st.sent = last;
                        let ev = Event::default().id(last.to_string());
                        return Some((Ok(ev), st));
                    }
                    if scan_unfinished(&st.rx, last) {
                        continue;
                    }
                }
                Err(_) => return None,
            }
            tokio::select! {
                r = st.rx.changed() => if r.is_err() { return None },
                _ = st.node.shutdown.cancelled() => return None,
            }
        }
    });
    Sse::new(crate::http::auth::until_expired(stream, who))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
