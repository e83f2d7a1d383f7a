//! Collection-level endpoints: the list of collections, paged document listings, and bulk
//! reads and writes.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::docs::{self, body_object, doc_key, read_blocking, write_blocking, Read, Requires};
use crate::doc::heads;
use crate::doc::write::Write;
use crate::find::scope_view::ScopeView;
use crate::http::auth::Principal;
use crate::http::conditional::Condition;
use crate::http::extract::{Json, PathParams, QueryParams};
use crate::http::problem::ApiError;
use crate::node::Node;
use crate::store::keys;

#[derive(Debug, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    /// Live (not deleted) documents; absent for a caller that sees only some of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docs: Option<i64>,
}

/// `GET /v1/collections`
pub async fn list_collections(
    State(node): State<Arc<Node>>,
    axum::Extension(who): axum::Extension<crate::http::auth::Principal>,
) -> Result<Response, ApiError> {
    let n = node.clone();
    let cols = node
        .blocking::<_, ApiError>(move || Ok(n.store.collections()?))
        .await?;
    // A caller that sees only some documents of a collection gets no count: it would tell how
    // many documents others have.
    let collections: Vec<CollectionInfo> = cols
        .into_iter()
        .filter(|(name, _)| who.may_use(name))
        .filter(|(name, _)| !crate::store::keys::SYSTEM_COLLECTIONS.contains(&name.as_str()))
        .map(|(name, docs)| CollectionInfo {
            docs: who.sees_all_of(&name).then_some(docs),
            name,
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "collections": collections })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Resume after this document id (the previous page's `next`).
    pub after: Option<String>,
    /// Only ids that start with this.
    pub prefix: Option<String>,
    /// Include each document's JSON body.
    #[serde(default)]
    pub include_docs: bool,
    /// Include deleted documents (tombstones).
    #[serde(default)]
    pub include_deleted: bool,
}

#[derive(Debug, Serialize)]
pub struct ListedDoc {
    pub id: String,
    pub version: String,
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Map<String, Value>>,
    /// With `include_docs`, why the body is missing (the status a read of it alone would get, and
    /// the problem's detail): a listing never hides a document it could not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/collections/{collection}/docs`
pub async fn list_docs(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    QueryParams(q): QueryParams<ListQuery>,
    axum::Extension(who): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    let narrowed = !who.sees_all_of(&collection);
    keys::validate_collection(&collection)?;
    if let Some(a) = &q.after {
        keys::validate_id(a)
            .map_err(|_| ApiError::BadRequest(format!("`after` is not a document id: `{a}`")))?;
    }
    let prefix = q.prefix.clone().unwrap_or_default();
    if !prefix.is_empty() {
        keys::validate_id(&prefix).map_err(|_| {
            ApiError::BadRequest(format!("`prefix` cannot begin a document id: `{prefix}`"))
        })?;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let n = node.clone();
    let (docs, next) = node
        .blocking::<_, ApiError>(move || {
            if narrowed {
                // From the caller's documents, found through its scopes' indexes.
                let view = ScopeView::new(&n.store, &collection, &who)?;
                if let Some((page, next)) =
                    view.list_page(&n.store, &prefix, q.after.as_deref(), limit, q.include_docs)?
                {
                    let docs = page
                        .into_iter()
                        .map(|l| {
                            let (version, body) = match l.json {
                                // The body's own version: it may be newer than the metadata's.
                                Some(c) if q.include_docs => (c.version(), Some(c.json)),
                                _ => (heads::format(&l.meta.heads()), None),
                            };
                            ListedDoc {
                                id: l.id,
                                version,
                                deleted: false,
                                body,
                                error_status: None,
                                error: None,
                            }
                        })
                        .collect();
                    return Ok((docs, next));
                }
            }
            let raw = n
                .store
                .list_prefixed(&collection, &prefix, q.after.as_deref(), limit)?;
            let next = if raw.len() == limit {
                raw.last().map(|(id, _)| id.clone())
            } else {
                None
            };
            let mut docs = Vec::with_capacity(raw.len());
            for (id, meta) in raw {
                if meta.deleted && (!q.include_deleted || narrowed) {
                    // A tombstone's last contents are not kept, so a narrowed caller cannot be
                    // shown that it was theirs: it sees deletions as documents leaving.
                    continue;
                }
                let mut current = None;
                if narrowed {
                    // Judged on the current JSON, which the body (if asked) then reuses.
                    let key = doc_key(&collection, &id)?;
                    match n.store.current_json(&key)? {
                        Some(c) => {
                            let json = Value::Object(c.json);
                            if !who.sees(&collection, &id, &json) {
                                continue;
                            }
                            let Value::Object(m) = json else { continue };
                            current = Some(crate::store::CurrentJson {
                                json: m,
                                heads: c.heads,
                            });
                        }
                        None => continue,
                    }
                }
                let mut version = heads::format(&meta.heads());
                let (body, error) = if q.include_docs && !meta.deleted {
                    let key = doc_key(&collection, &id)?;
                    let read = match current {
                        Some(c) => Ok(Some(c)),
                        None => n.store.current_json(&key),
                    };
                    match read {
                        Ok(Some(current)) => {
                            // The body's own version: it may be newer than the listing's.
                            version = current.version();
                            (Some(current.json), None)
                        }
                        // Deleted or removed between the listing and the read.
                        Ok(None) => (None, None),
                        Err(e) => (None, Some(ApiError::from(e))),
                    }
                } else {
                    (None, None)
                };
                docs.push(ListedDoc {
                    version,
                    deleted: meta.deleted,
                    id,
                    body,
                    error_status: error.as_ref().map(|e| e.status().as_u16()),
                    error: error.map(|e| e.to_string()),
                });
            }
            Ok((docs, next))
        })
        .await?;
    Ok(axum::Json(serde_json::json!({ "docs": docs, "next": next })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkOp {
    Put,
    Patch,
    Delete,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkWrite {
    /// The document id; omitted for a `put` means "create with a new id".
    pub id: Option<String>,
    pub op: BulkOp,
    /// The document (put) or merge patch (patch).
    pub body: Option<Value>,
    /// Like the `If-Match` header.
    pub if_match: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkWriteBody {
    pub writes: Vec<BulkWrite>,
}

#[derive(Debug, Serialize)]
pub struct BulkResult {
    pub id: Option<String>,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BulkResult {
    fn error(id: Option<String>, e: ApiError) -> Self {
        BulkResult {
            id,
            status: e.status().as_u16(),
            version: None,
            deleted: None,
            body: None,
            error: Some(e.to_string()),
        }
    }
}

/// Up to this many writes of one bulk request are in flight at once, so their fsyncs group.
const BULK_PARALLELISM: usize = 32;

fn check_batch(node: &Node, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::InvalidBody("the batch is empty".into()));
    }
    if n > node.config.max_batch {
        return Err(ApiError::InvalidBody(format!(
            "{n} items in one request; the limit is {}",
            node.config.max_batch
        )));
    }
    Ok(())
}

/// `POST /v1/collections/{collection}/bulk-write`: each write succeeds or fails on its own.
pub async fn bulk_write(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(body): Json<BulkWriteBody>,
) -> Result<Response, ApiError> {
    // Each write judged against the caller's scopes as a single write is.
    let who = who.0;
    keys::validate_collection(&collection)?;
    check_batch(&node, body.writes.len())?;
    let mut seen = HashSet::new();
    for w in &body.writes {
        if let Some(id) = &w.id {
            if !seen.insert(id.clone()) {
                return Err(ApiError::InvalidBody(format!(
                    "document `{id}` appears twice in one bulk request"
                )));
            }
        }
    }
    let results: Vec<BulkResult> = futures::stream::iter(body.writes)
        .map(|w| {
            let node = node.clone();
            let collection = collection.clone();
            let who = who.clone();
            async move {
                if w.id.is_none() && !matches!(w.op, BulkOp::Put) {
                    return BulkResult::error(
                        None,
                        ApiError::InvalidBody("patch and delete need an `id`".into()),
                    );
                }
                let id = w.id.clone().unwrap_or_else(docs::new_document_id);
                let outcome = prepare_bulk(&collection, &id, w);
                let (key, write, requires, cond) = match outcome {
                    Ok(p) => p,
                    Err(e) => return BulkResult::error(Some(id), e),
                };
                let n = node.clone();
                let k = key.clone();
                let r = node
                    .blocking::<_, ApiError>(move || {
                        write_blocking(&n, &k, &write, requires, cond.as_ref(), None, Some(&who))
                    })
                    .await;
                match r {
                    Ok(c) => {
                        let resp = docs::write_response(&key, &c);
                        BulkResult {
                            id: Some(id),
                            status: if c.created { 201 } else { 200 },
                            version: Some(resp.version),
                            deleted: Some(resp.deleted),
                            body: None,
                            error: None,
                        }
                    }
                    Err(e) => BulkResult::error(Some(id), e),
                }
            }
        })
        .buffered(BULK_PARALLELISM)
        .collect()
        .await;
    Ok(axum::Json(serde_json::json!({ "results": results })).into_response())
}

type Prepared = (crate::store::DocKey, Write, Requires, Option<Condition>);

fn prepare_bulk(collection: &str, id: &str, w: BulkWrite) -> Result<Prepared, ApiError> {
    let key = doc_key(collection, id)?;
    let cond = w
        .if_match
        .as_deref()
        .map(Condition::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("if_match: {e}")))?;
    let (write, requires) = match (w.op, w.body) {
        (BulkOp::Put, Some(b)) => (Write::Replace(body_object(b)?), Requires::Anything),
        (BulkOp::Patch, Some(b)) => (Write::MergePatch(body_object(b)?), Requires::Live),
        (BulkOp::Delete, None) => (Write::Delete, Requires::Live),
        (BulkOp::Delete, Some(_)) => {
            return Err(ApiError::InvalidBody("a delete takes no body".into()))
        }
        (_, None) => return Err(ApiError::InvalidBody("put and patch need a body".into())),
    };
    Ok((key, write, requires, cond))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkReadBody {
    pub ids: Vec<String>,
}

/// `POST /v1/collections/{collection}/bulk-read`
pub async fn bulk_read(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(body): Json<BulkReadBody>,
) -> Result<Response, ApiError> {
    keys::validate_collection(&collection)?;
    check_batch(&node, body.ids.len())?;
    let narrowed = !who.sees_all_of(&collection);
    let n = node.clone();
    let results = node
        .blocking::<_, ApiError>(move || {
            Ok(body
                .ids
                .into_iter()
                .map(|id| {
                    let r = doc_key(&collection, &id)
                        .and_then(|key| read_blocking(&n, &key, None, None, false));
                    match r {
                        Ok(Read::Body(b, _))
                            if narrowed
                                && !who.sees(&collection, &id, &Value::Object(b.clone())) =>
                        {
                            let e = who.hidden(&collection, &id);
                            BulkResult::error(Some(id), e)
                        }
                        Ok(Read::Body(b, v)) => BulkResult {
                            id: Some(id),
                            status: 200,
                            version: Some(heads::format(&v)),
                            deleted: Some(false),
                            body: Some(b),
                            error: None,
                        },
                        Ok(Read::NotModified(_)) => {
                            BulkResult::error(Some(id), ApiError::Internal("unexpected".into()))
                        }
                        Err(e) => BulkResult::error(Some(id), e),
                    }
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(serde_json::json!({ "results": results })).into_response())
}
