//! Live queries: `POST .../find` with `"watch": true` (or `GET .../find?selector=...` for
//! `EventSource`) streams Server-Sent Events: the matching documents now (`enter` each, then
//! `current`), then `enter` / `update` / `leave` as documents start, keep or stop matching,
//! whatever wrote them (REST, client sync, the WebSocket, a peer's push, an anti-entropy repair):
//! the stream follows the node's changes feed, so every durable change is seen, once, in order.
//!
//! Each event's `id` is a changes-feed cursor; the initial `enter` events have none, so a client
//! cut off before `current` starts over. A client that reconnects with `Last-Event-ID`
//! resumes after it: every document changed since then arrives again, as `enter` or `update` when
//! it matches now and as `leave` when it does not (the node does not know what the client held,
//! so a `leave` may name a document the client never had; apply events as upserts and removals).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::codec::cursor::{self, Cursor};
use crate::find::{FindRequest, Query};
use crate::http::problem::ApiError;
use crate::node::streams::StreamSlot;
use crate::node::Node;
use crate::store::DocKey;

/// Most documents a live query's initial result may hold.
pub const MAX_INITIAL: usize = 10_000;
/// Feed entries read per step.
const PAGE: usize = 256;

/// Checks a live query: a selector (and fields) only.
pub fn check(req: &FindRequest) -> Result<(), ApiError> {
    if !req.sort.is_empty() || req.limit.is_some() || req.bookmark.is_some() {
        return Err(ApiError::BadRequest(
            "watch: a live query streams every matching document; sort, limit and bookmark do not apply"
                .into(),
        ));
    }
    Ok(())
}

struct State {
    node: Arc<Node>,
    _slot: StreamSlot,
    collection: String,
    query: Query,
    since: u64,
    /// Documents matching as far as this stream knows.
    members: HashSet<String>,
    /// After a resume the client's set is unknown: a non-matching change is always a `leave`.
    resumed: bool,
    rx: tokio::sync::watch::Receiver<u64>,
    out: VecDeque<Event>,
}

fn event(kind: &str, id: u64, data: &Value) -> Event {
    Event::default()
        .id(id.to_string())
        .event(kind)
        .data(data.to_string())
}

/// The matching documents now, as `enter` events and a closing `current`, which alone carries
/// the cursor the stream goes on from.
fn initial(
    node: &Node,
    collection: &str,
    q: &Query,
    at: u64,
) -> Result<Vec<(String, Event)>, ApiError> {
    let mut q = q.clone();
    q.limit = 1000;
    let mut out = Vec::new();
    loop {
        let page = crate::find::find(&node.store, collection, &q)?;
        for d in page.docs {
            let data = json!({"id": d.id, "version": d.version, "doc": d.doc});
            // No id: a client cut off in the middle of the initial result must start over,
            // not resume after it (an `EventSource` resends the last id it was given).
            let enter = Event::default().event("enter").data(data.to_string());
            out.push((d.id, enter));
        }
        if out.len() > MAX_INITIAL {
            return Err(ApiError::BadRequest(format!(
                "watch: more than {MAX_INITIAL} documents match now: narrow the selector"
            )));
        }
        match page.bookmark {
            Some(b) => q.bookmark = Some(crate::find::Bookmark::decode(&b)?),
            None => break,
        }
    }
    let count = out.len();
    out.push((
        String::new(),
        event("current", at, &json!({ "count": count })),
    ));
    Ok(out)
}

/// What one changed document means to the stream: an event, or nothing.
fn judge(
    node: &Node,
    collection: &str,
    query: &Query,
    id: &str,
) -> Result<Option<(Value, Value)>, ApiError> {
    let key = DocKey::new(collection, id)?;
    let Some(current) = node.store.current_json(&key)? else {
        return Ok(None);
    };
    let version = current.version();
    let doc = Value::Object(current.json);
    // The selector, and the caller's scopes when they narrow the collection.
    if !query.admits(collection, id, &doc) {
        return Ok(None);
    }
    let Value::Object(m) = doc else {
        return Ok(None);
    };
    Ok(Some((
        json!(version),
        Value::Object(crate::find::project(m, &query.fields)),
    )))
}

/// Turns the feed entries after `st.since` into events.
async fn step(st: &mut State) -> Result<bool, ApiError> {
    let (node, collection, since) = (st.node.clone(), st.collection.clone(), st.since);
    let query = st.query.clone();
    let judged = st
        .node
        .blocking::<_, ApiError>(move || {
            let (entries, last) = node.store.feed_page(since, PAGE, Some(&collection))?;
            let mut out = Vec::with_capacity(entries.len());
            for (seq, e) in entries {
                let verdict = judge(&node, &collection, &query, &e.id)?;
                out.push((seq, e.id, verdict));
            }
            Ok((out, last))
        })
        .await?;
    let (rows, last) = judged;
    let any = !rows.is_empty();
    for (seq, id, verdict) in rows {
        match verdict {
            Some((version, doc)) => {
                let kind = if st.members.insert(id.clone()) {
                    "enter"
                } else {
                    "update"
                };
                st.out.push_back(event(
                    kind,
                    seq,
                    &json!({"id": id, "version": version, "doc": doc}),
                ));
            }
            None => {
                if st.members.remove(&id) || st.resumed {
                    st.out.push_back(event("leave", seq, &json!({ "id": id })));
                }
            }
        }
    }
    let moved = last > st.since;
    st.since = last;
    Ok(any || moved)
}

/// Starts a live query for `req` on `collection`; `last_event` resumes a stream.
///
/// For a caller whose scopes narrow the collection, only documents in scope enter, and one that
/// leaves the scope leaves the result. Such a stream does not resume from `Last-Event-ID`: a
/// resumed stream announces every non-matching change as a `leave` (it cannot know what the
/// client held), which would name documents outside the scope; it starts over instead (`enter`
/// events for the current result, then `current`), and the client replaces its set.
pub async fn watch(
    node: Arc<Node>,
    collection: String,
    req: FindRequest,
    last_event: Option<String>,
    who: &crate::access::Grant,
) -> Result<Response, ApiError> {
    check(&req)?;
    let mut query = Query::parse(&req)?;
    query.restrict(who, &collection);
    let last_event = last_event.filter(|_| query.scope.is_none());
    let slot = node.streams.acquire()?;
    let rx = node.store.feed_watermark();
    let resume = match last_event.as_deref().map(cursor::parse).transpose() {
        Ok(Some(Cursor::After(seq))) => Some(seq),
        Ok(Some(Cursor::Now)) | Ok(None) => None,
        Err(e) => return Err(ApiError::BadRequest(format!("Last-Event-ID: {e}"))),
    };
    let mut st = State {
        node: node.clone(),
        _slot: slot,
        collection: collection.clone(),
        query,
        since: 0,
        members: HashSet::new(),
        resumed: resume.is_some(),
        rx,
        out: VecDeque::new(),
    };
    match resume {
        Some(seq) => st.since = seq,
        None => {
            // Changes from here on follow the initial result (some may repeat it as `update`).
            let at = *st.rx.borrow();
            st.since = at;
            let (n, c, q) = (node.clone(), collection.clone(), st.query.clone());
            let events = node
                .blocking::<_, ApiError>(move || initial(&n, &c, &q, at))
                .await?;
            for (id, ev) in events {
                if !id.is_empty() {
                    st.members.insert(id);
                }
                st.out.push_back(ev);
            }
        }
    }
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.out.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), st));
            }
            st.rx.borrow_and_update();
            match step(&mut st).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "live query ended");
                    return None;
                }
            }
            tokio::select! {
                r = st.rx.changed() => if r.is_err() { return None },
                _ = st.node.shutdown.cancelled() => return None,
            }
        }
    });
    Ok(Sse::new(crate::http::auth::until_expired(stream, who))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
