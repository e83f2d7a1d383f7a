//! Single-document endpoints: read (now or at a version), create, replace, merge-patch, CRDT
//! ops, delete, history.

use std::sync::Arc;

use automerge::ChangeHash;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::Grant;
use crate::doc::write::Write;
use crate::doc::{heads, history, json, ops::Op, tombstone, DocError};
use crate::http::auth::Principal;
use crate::http::conditional::Condition;
use crate::http::extract::{Json, PathParams, QueryParams};
use crate::http::problem::ApiError;
use crate::node::Node;
use crate::store::{now_ms, Committed, DocKey, DocMeta};

/// What a write answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteResponse {
    pub collection: String,
    pub id: String,
    /// The document's version after the write (also the `ETag`).
    pub version: String,
    /// Whether the write changed anything.
    pub changed: bool,
    /// Whether the document is now deleted.
    pub deleted: bool,
}

/// What the write requires of the document's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requires {
    Anything,
    Live,
}

pub fn doc_key(collection: &str, id: &str) -> Result<DocKey, ApiError> {
    Ok(DocKey::new(collection, id)?)
}

fn not_found(key: &DocKey, meta: Option<&DocMeta>) -> ApiError {
    match meta {
        Some(m) if m.deleted => ApiError::NotFound(format!("document {key} was deleted")),
        _ => ApiError::NotFound(format!("document {key} does not exist")),
    }
}

/// The refusal of a write that would take a document out of the writer's scope, or into it.
fn out_of_scope(who: &Grant, key: &DocKey) -> ApiError {
    ApiError::Forbidden(format!(
        "document {key} is not within the scope of token `{}`: a write may neither give a \
         document away nor take one over",
        who.name
    ))
}

/// Applies one write with its preconditions, blocking (call from a blocking task). With a
/// caller narrowed to some documents of the collection (`scope`), the document must be in its
/// scope before (a live document outside it does not exist for the caller) and after the
/// write, judged on the merged result under the document's lock: a refused write changes
/// nothing.
pub fn write_blocking(
    node: &Node,
    key: &DocKey,
    write: &Write,
    requires: Requires,
    if_match: Option<&Condition>,
    if_none_match: Option<&Condition>,
    scope: Option<&Grant>,
) -> Result<Committed, ApiError> {
    let scope = scope.filter(|g| !g.sees_all_of(key.collection()));
    let (_, committed) = node.store.write(key, |doc, meta| {
        let live = meta.is_some_and(|m| !m.deleted);
        if let Some(who) = scope {
            if live && !who.sees_doc(key.collection(), key.id(), doc) {
                return Err(if requires == Requires::Live {
                    not_found(key, None)
                } else {
                    out_of_scope(who, key)
                });
            }
        }
        if requires == Requires::Live && !live {
            return Err(not_found(key, meta));
        }
        if let Some(cond) = if_match {
            let current = meta.filter(|m| !m.deleted).map(|m| m.heads());
            if !cond.matches(current.as_deref()) {
                return Err(ApiError::PreconditionFailed {
                    current: meta.map(|m| heads::format(&m.heads())).unwrap_or_default(),
                });
            }
        }
        if let Some(cond) = if_none_match {
            let current = meta.filter(|m| !m.deleted).map(|m| m.heads());
            if cond.matches(current.as_deref()) {
                return Err(ApiError::PreconditionFailed {
                    current: meta.map(|m| heads::format(&m.heads())).unwrap_or_default(),
                });
            }
        }
        crate::doc::write::apply(doc, write, now_ms() as i64).map_err(ApiError::from)?;
        if let Some(who) = scope {
            if !who.may_leave(key.collection(), key.id(), doc) {
                // The store sees the document changed and drops this copy: nothing is kept.
                return Err(out_of_scope(who, key));
            }
        }
        Ok(())
    })?;
    Ok(committed)
}

pub fn write_response(key: &DocKey, c: &Committed) -> WriteResponse {
    WriteResponse {
        collection: key.collection().to_string(),
        id: key.id().to_string(),
        version: heads::format(&c.meta.heads()),
        changed: c.changed,
        deleted: c.meta.deleted,
    }
}

async fn write(
    node: Arc<Node>,
    key: DocKey,
    write: Write,
    requires: Requires,
    headers: &HeaderMap,
    who: Principal,
) -> Result<Response, ApiError> {
    let if_match = Condition::from_headers(headers, header::IF_MATCH)?;
    let if_none_match = Condition::from_headers(headers, header::IF_NONE_MATCH)?;
    let n = node.clone();
    let k = key.clone();
    let committed = node
        .blocking::<_, ApiError>(move || {
            write_blocking(
                &n,
                &k,
                &write,
                requires,
                if_match.as_ref(),
                if_none_match.as_ref(),
                Some(&who.0),
            )
        })
        .await?;
    let body = write_response(&key, &committed);
    let status = if committed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, axum::Json(&body)).into_response();
    set_etag(&mut resp, &committed.meta.heads());
    if committed.created {
        let loc = format!("/v1/collections/{}/docs/{}", key.collection(), key.id());
        if let Ok(v) = HeaderValue::from_str(&loc) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(resp)
}

fn set_etag(resp: &mut Response, hs: &[ChangeHash]) {
    if let Ok(v) = HeaderValue::from_str(&heads::etag(hs)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}

pub fn body_object(v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(DocError::NotAnObject(crate::doc::error::json_type_name(&other)).into()),
    }
}

/// `PUT /v1/collections/{collection}/docs/{id}`
pub async fn put(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let key = doc_key(&collection, &id)?;
    let body = body_object(body)?;
    write(
        node,
        key,
        Write::Replace(body),
        Requires::Anything,
        &headers,
        who,
    )
    .await
}

/// A new automerge-repo style document id: base58check of a random UUID, so a document created
/// here is addressable as `automerge:<id>` by automerge-repo clients.
pub fn new_document_id() -> String {
    bs58::encode(uuid::Uuid::new_v4().as_bytes())
        .with_check()
        .into_string()
}

/// `POST /v1/collections/{collection}/docs`
pub async fn create(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let key = doc_key(&collection, &new_document_id())?;
    let body = body_object(body)?;
    write(
        node,
        key,
        Write::Replace(body),
        Requires::Anything,
        &headers,
        who,
    )
    .await
}

/// `PATCH .../docs/{id}` with a JSON merge patch.
pub async fn patch(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let key = doc_key(&collection, &id)?;
    let patch = match body {
        Value::Object(m) => m,
        other => {
            return Err(ApiError::InvalidBody(format!(
                "a merge patch for a document must be a JSON object, got {}",
                crate::doc::error::json_type_name(&other)
            )))
        }
    };
    write(
        node,
        key,
        Write::MergePatch(patch),
        Requires::Live,
        &headers,
        who,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsBody {
    pub ops: Vec<Op>,
}

/// `POST .../docs/{id}/ops`
pub async fn ops(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    Json(body): Json<OpsBody>,
) -> Result<Response, ApiError> {
    let key = doc_key(&collection, &id)?;
    if body.ops.is_empty() {
        return Err(ApiError::InvalidBody(
            "`ops` must hold at least one operation".into(),
        ));
    }
    if body.ops.len() > node.config.max_batch {
        return Err(ApiError::InvalidBody(format!(
            "{} operations in one request; the limit is {}",
            body.ops.len(),
            node.config.max_batch
        )));
    }
    write(
        node,
        key,
        Write::Ops(body.ops),
        Requires::Live,
        &headers,
        who,
    )
    .await
}

/// `DELETE .../docs/{id}`
pub async fn delete(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = doc_key(&collection, &id)?;
    write(node, key, Write::Delete, Requires::Live, &headers, who).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// A past version (heads) to read the document at.
    pub at: Option<String>,
}

pub enum Read {
    Body(Map<String, Value>, Vec<ChangeHash>),
    NotModified(Vec<ChangeHash>),
}

/// Reads a document's JSON body, now or at `at` (blocking; call from a blocking task).
/// `copy_missed`: the caller already looked for the materialised copy and found none.
pub fn read_blocking(
    node: &Node,
    key: &DocKey,
    at: Option<&[ChangeHash]>,
    if_none_match: Option<&Condition>,
    copy_missed: bool,
) -> Result<Read, ApiError> {
    if at.is_none() {
        // The materialised copy, built and kept now if a write dropped it; a missing or deleted
        // document goes on below, for its precise answer.
        let current = if copy_missed {
            node.store.current_json_after_miss(key)?
        } else {
            node.store.current_json(key)?
        };
        if let Some(current) = current {
            let version = heads::from_stored(&current.heads);
            if if_none_match.is_some_and(|c| c.matches(Some(&version))) {
                return Ok(Read::NotModified(version));
            }
            return Ok(Read::Body(current.json, version));
        }
    }
    let r = node
        .store
        .read(key, |doc, meta| -> Result<Read, ApiError> {
            let version = match at {
                Some(at) => {
                    if let Some(unknown) =
                        at.iter().find(|h| doc.get_change_meta_by_hash(h).is_none())
                    {
                        return Err(DocError::UnknownHeads(hex::encode(unknown.0)).into());
                    }
                    if tombstone::is_deleted(doc, Some(at)) {
                        return Err(ApiError::NotFound(format!(
                            "document {key} was deleted at that version"
                        )));
                    }
                    at.to_vec()
                }
                None => {
                    if meta.deleted {
                        return Err(not_found(key, Some(meta)));
                    }
                    meta.heads()
                }
            };
            if if_none_match.is_some_and(|c| c.matches(Some(&version))) {
                return Ok(Read::NotModified(version));
            }
            Ok(Read::Body(json::to_json(doc, at), version))
        })?;
    r.unwrap_or_else(|| Err(not_found(key, None)))
}

/// `GET .../docs/{id}`
pub async fn get(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<GetQuery>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = doc_key(&collection, &id)?;
    let narrowed = !who.sees_all_of(&collection);
    let common = q.at.is_none() && !super::doc_bytes::wants_bytes(&headers);
    if narrowed && common {
        // The current JSON is both what the scope is judged on and the answer: one read.
        if let Some(m) = node.store.materialized_in_memory(&key) {
            let json = m.parse()?;
            if !who.sees(&collection, &id, &Value::Object(json)) {
                return Err(not_found(&key, None));
            }
            let if_none_match = Condition::from_headers(&headers, header::IF_NONE_MATCH)?;
            let (bytes, version) = answer_materialized(m, if_none_match.as_ref());
            return Ok(json_response(bytes, &version));
        }
    }
    if narrowed {
        check_visible(&node, &who, &key).await?;
    }
    if super::doc_bytes::wants_bytes(&headers) && q.at.is_none() {
        return super::doc_bytes::get_bytes(node, key).await;
    }
    let at = q.at.as_deref().map(heads::parse).transpose()?;
    let if_none_match = Condition::from_headers(&headers, header::IF_NONE_MATCH)?;
    if at.is_none() {
        // The common read: the document's materialised JSON, when memory holds it, answers here
        // without a trip to the blocking pool.
        if let Some(m) = node.store.materialized_in_memory(&key) {
            let (bytes, version) = answer_materialized(m, if_none_match.as_ref());
            return Ok(json_response(bytes, &version));
        }
    }
    let n = node.clone();
    let read = node
        .blocking::<_, ApiError>(move || {
            if at.is_none() {
                // Without loading the document, unless it has no materialised JSON.
                if let Some(m) = n.store.materialized(&key)? {
                    return Ok(answer_materialized(m, if_none_match.as_ref()));
                }
            }
            let read = read_blocking(
                &n,
                &key,
                at.as_deref(),
                if_none_match.as_ref(),
                at.is_none(),
            )?;
            // Serialise here too: it is CPU work that should not sit on the async workers.
            Ok(match read {
                Read::Body(body, v) => {
                    let bytes =
                        serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
                    (Some(bytes.into()), v)
                }
                Read::NotModified(v) => (None, v),
            })
        })
        .await?;
    let (bytes, version) = read;
    Ok(json_response(bytes, &version))
}

/// A 404 unless the caller sees the document as it is now (judged on its current JSON). A
/// document outside the caller's scope does not exist for them, at any version.
pub async fn check_visible(node: &Arc<Node>, who: &Grant, key: &DocKey) -> Result<(), ApiError> {
    let (n, k) = (node.clone(), key.clone());
    let current = node
        .blocking::<_, ApiError>(move || Ok(n.store.current_json(&k)?))
        .await?;
    let seen =
        current.is_some_and(|c| who.sees(key.collection(), key.id(), &Value::Object(c.json)));
    if seen {
        Ok(())
    } else {
        Err(not_found(key, None))
    }
}

/// A materialised document's body and version, or no body when `If-None-Match` names it.
fn answer_materialized(
    m: crate::store::materialized::Materialized,
    if_none_match: Option<&Condition>,
) -> (Option<bytes::Bytes>, Vec<ChangeHash>) {
    let version = heads::from_stored(&m.heads);
    if if_none_match.is_some_and(|c| c.matches(Some(&version))) {
        return (None, version);
    }
    (Some(m.json), version)
}

/// `200` with a JSON body, or `304` without one; the version as ETag either way.
fn json_response(bytes: Option<bytes::Bytes>, version: &[ChangeHash]) -> Response {
    let mut resp = match bytes {
        Some(b) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            b,
        )
            .into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    };
    set_etag(&mut resp, version);
    resp
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Page size (default 50, at most 1000).
    pub limit: Option<usize>,
    /// Resume after this change hash (the previous page's `next`).
    pub before: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HistoryResponse {
    pub changes: Vec<history::HistoryEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}

/// `GET .../docs/{id}/history`
pub async fn history(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<HistoryQuery>,
    axum::Extension(who): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    let key = doc_key(&collection, &id)?;
    if !who.sees_all_of(&collection) {
        check_visible(&node, &who, &key).await?;
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let before = match &q.before {
        Some(b) => {
            let hs = heads::parse(b)?;
            match hs.as_slice() {
                [one] => Some(*one),
                _ => {
                    return Err(ApiError::BadRequest(
                        "`before` takes exactly one change hash".into(),
                    ))
                }
            }
        }
        None => None,
    };
    let n = node.clone();
    let page = node
        .blocking::<_, ApiError>(move || {
            n.store
                .read(&key, |doc, _| {
                    if let Some(b) = &before {
                        if doc.get_change_meta_by_hash(b).is_none() {
                            return Err(ApiError::BadRequest(format!(
                                "`before`: change {} is not in this document",
                                hex::encode(b.0)
                            )));
                        }
                    }
                    Ok(history::page(doc, before.as_ref(), limit))
                })?
                .unwrap_or_else(|| Err(not_found(&key, None)))
        })
        .await?;
    let (changes, more) = page;
    let next = if more {
        changes.last().map(|c| c.hash.clone())
    } else {
        None
    };
    Ok(axum::Json(HistoryResponse { changes, next }).into_response())
}
