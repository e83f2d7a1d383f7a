//! Automerge sync over HTTP, raw changes, document bytes and per-document Server-Sent Events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use automerge::ReadDoc;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::doc_bytes::{binary, with_etag};
use crate::codec::chunks::{parse_chunks, Chunk};
use crate::doc::{heads, json, DocError};
use crate::http::auth::Principal;
use crate::http::extract::RawBody;
use crate::http::extract::{PathParams, QueryParams};
use crate::http::problem::ApiError;
use crate::node::Node;
use crate::store::{DocKey, Origin};

pub const CLIENT_ID_HEADER: &str = "concord-client-id";

fn client_id(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers.get(CLIENT_ID_HEADER).ok_or_else(|| {
        ApiError::BadRequest(
            "the Concord-Client-Id header is required: a stable id for this client".into(),
        )
    })?;
    let id = raw.to_str().unwrap_or("");
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(ApiError::BadRequest(
            "Concord-Client-Id must be 1-128 ASCII letters, digits, `_`, `-`, `.` or `:`".into(),
        ))
    }
}

/// `POST .../docs/{id}/sync`: one Automerge sync message in, the node's next one out (204 when it
/// has nothing more to say). A document the node has never seen is created by the first sync that
/// brings changes.
pub async fn sync(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let key = DocKey::new(&collection, &id)?;
    let client = client_id(&headers)?;
    let msg = crate::sync::decode_message(&body).map_err(|e| {
        ApiError::BadRequest(format!("the body is not an Automerge sync message: {e}"))
    })?;
    // A read-only client may sync down, but not push changes.
    if !msg.changes.is_empty() {
        who.check_write(&collection)?;
    }
    let narrowed = !who.sees_all_of(&collection);
    let n = node.clone();
    let reply = node
        .blocking::<_, ApiError>(move || {
            let mut state = match n.store.sync_state(&who.name, &client, &key)? {
                Some(b) => automerge::sync::State::decode(&b)
                    .unwrap_or_else(|_| automerge::sync::State::new()),
                None => automerge::sync::State::new(),
            };
            let reply = if narrowed {
                crate::sync::step_scoped(&n.store, &key, &mut state, msg, &who)
                    .map_err(scoped_error)?
            } else {
                crate::sync::step(&n.store, Origin::Local, &key, &mut state, msg)?
            }
            .map(|m| m.encode());
            let quota = n.config.max_sync_states_per_principal;
            crate::sync::ClientStates::new(&n.store, &n.metrics, quota)
                .keep(&who.name, &client, &key, &state)?;
            Ok(reply)
        })
        .await?;
    Ok(match reply {
        Some(bytes) => binary(bytes),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Return only changes after this version (omitted: all changes).
    pub since: Option<String>,
}

/// `GET .../docs/{id}/changes?since=<version>`: the changes after a version, concatenated in their
/// binary encoding (what `Automerge.loadIncremental` / `applyChanges` take).
pub async fn get_changes(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<ChangesQuery>,
    axum::Extension(who): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    let key = DocKey::new(&collection, &id)?;
    let since = q
        .since
        .as_deref()
        .map(heads::parse)
        .transpose()?
        .unwrap_or_default();
    let n = node.clone();
    let (bytes, current) = node
        .blocking::<_, ApiError>(move || {
            n.store
                .read(&key, |doc, meta| {
                    if !who.sees_doc(key.collection(), key.id(), doc) {
                        return Err(not_found(&key));
                    }
                    if let Some(unknown) = since
                        .iter()
                        .find(|h| doc.get_change_meta_by_hash(h).is_none())
                    {
                        return Err(ApiError::from(DocError::UnknownHeads(hex::encode(
                            unknown.0,
                        ))));
                    }
                    let mut out = Vec::new();
                    for c in doc.get_changes(&since) {
                        out.extend_from_slice(c.raw_bytes());
                    }
                    Ok((out, meta.heads()))
                })?
                .unwrap_or_else(|| Err(not_found(&key)))
        })
        .await?;
    Ok(with_etag(binary(bytes), &current))
}

/// A scoped sync step's refusal as the client sees it: a hidden document does not exist (404),
/// changes that would take it out of scope are forbidden (403).
fn scoped_error(e: crate::sync::ScopedStepError) -> ApiError {
    use crate::sync::ScopedStepError as E;
    match e {
        E::Hidden(_) => ApiError::NotFound(e.to_string()),
        E::OutOfScope(..) => ApiError::Forbidden(e.to_string()),
        E::MissingDeps(..) => ApiError::InvalidOperation(e.to_string()),
        E::Store(s) => s.into(),
    }
}

fn not_found(key: &DocKey) -> ApiError {
    ApiError::NotFound(format!("document {key} does not exist"))
}

/// `POST .../docs/{id}/changes`: applies changes a client made (binary, concatenated).
pub async fn post_changes(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    axum::Extension(who): axum::Extension<Principal>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let key = DocKey::new(&collection, &id)?;
    if body.is_empty() {
        return Err(ApiError::InvalidBody("the body holds no changes".into()));
    }
    let n = node.clone();
    let k = key.clone();
    let committed = node
        .blocking::<_, ApiError>(move || {
            let chunks = parse_chunks(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let (c, id) = (k.collection(), k.id());
            let (_, c) = n.store.write::<_, ApiError>(&k, |doc, meta| {
                if meta.is_some() && !who.sees_doc(c, id, doc) {
                    return Err(not_found(&k));
                }
                let before = doc.get_heads();
                // Only what this request leaves missing counts: changes queued earlier (by peers
                // or other clients) are not this client's fault.
                let missing_before = doc.get_missing_deps(&[]);
                for chunk in chunks {
                    match chunk {
                        Chunk::Changes(changes) => doc.apply_changes(changes),
                        Chunk::Document(mut other) => doc.merge(&mut other).map(|_| ()),
                    }
                    .map_err(|e| ApiError::BadRequest(format!("changes rejected: {e}")))?;
                }
                let missing: Vec<_> = doc
                    .get_missing_deps(&[])
                    .into_iter()
                    .filter(|h| !missing_before.contains(h))
                    .collect();
                if !missing.is_empty() {
                    return Err(ApiError::InvalidOperation(format!(
                        "the changes depend on {} change(s) this node does not have (e.g. {}): send those too, or use /sync",
                        missing.len(),
                        hex::encode(missing[0].0)
                    )));
                }
                if doc.get_heads() != before && !who.may_leave(c, id, doc) {
                    // Under the document's lock, on the merged result: nothing is kept.
                    return Err(ApiError::Forbidden(format!(
                        "the changes would leave document {k} outside the scope of token `{}`",
                        who.name
                    )));
                }
                Ok(())
            })?;
            Ok(c)
        })
        .await?;
    let body = crate::api::docs::write_response(&key, &committed);
    let status = if committed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(
        (status, axum::Json(body)).into_response(),
        &committed.meta.heads(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Include the document's JSON in each event.
    #[serde(default)]
    pub include_body: bool,
}

/// `GET .../docs/{id}/events`: Server-Sent Events with the document's version (and, on request,
/// its JSON) now and whenever it changes, whatever the source of the change.
pub async fn events(
    State(node): State<Arc<Node>>,
    PathParams((collection, id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<EventsQuery>,
    axum::Extension(who): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    let key = DocKey::new(&collection, &id)?;
    if !who.sees_all_of(&collection) {
        super::docs::check_visible(&node, &who, &key).await?;
    }
    let who = (*who.0).clone();
    let grant = who.clone();
    // Held by the stream for its life: dropped with it when the client goes away.
    let slot = node.streams.acquire()?;
    let rx = node.store.subscribe_commits();
    let state = (node, key, rx, true, q.include_body, slot, who);
    let stream = futures::stream::unfold(
        state,
        |(node, key, mut rx, first, body, slot, who)| async move {
            if !first {
                loop {
                    tokio::select! {
                        _ = node.shutdown.cancelled() => return None,
                        e = rx.recv() => match e {
                            Ok(e) if e.key == key => break,
                            Ok(_) => continue,
                            // Missed some: report the current state, which is what matters.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(_) => return None,
                        },
                    }
                }
            }
            let n = node.clone();
            let k = key.clone();
            let w = who.clone();
            let snapshot = node
                .blocking::<_, ApiError>(move || {
                    Ok(n.store.read(&k, |doc, meta| {
                        // A document that left the caller's scope ends its stream: nothing
                        // more of it is theirs to see.
                        if !meta.deleted && !w.sees_doc(k.collection(), k.id(), doc) {
                            return None;
                        }
                        let mut v = serde_json::json!({
                            "version": heads::format(&meta.heads()),
                            "deleted": meta.deleted,
                        });
                        if body && !meta.deleted {
                            v["body"] = serde_json::Value::Object(json::to_json(doc, None));
                        }
                        Some(v)
                    })?)
                })
                .await
                .ok()?;
            let data = match snapshot {
                Some(Some(v)) => v,
                Some(None) => return None,
                None => serde_json::json!({"version": "", "deleted": false, "exists": false}),
            };
            let ev = Event::default().event("change").data(data.to_string());
            Some((
                Ok::<Event, Infallible>(ev),
                (node, key, rx, false, body, slot, who),
            ))
        },
    );
    Ok(Sse::new(crate::http::auth::until_expired(stream, &grant))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
