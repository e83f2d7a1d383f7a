//! The peer endpoints (`/v1/peer/...`), behind the cluster-secret check: hello and digest
//! levels for anti-entropy, changes for pushes and repairs, pull and sync for reconciliation.

use std::sync::Arc;

use automerge::ChangeHash;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wire::*;
use crate::api::extract::RawBody;
use crate::api::problem::ApiError;
use crate::server::Node;
use crate::store::{DocKey, Origin, StoreError};

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    postcard::from_bytes(body)
        .map_err(|e| ApiError::BadRequest(format!("undecodable peer message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response, ApiError> {
    let bytes = postcard::to_stdvec(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        bytes,
    )
        .into_response())
}

fn key(collection: &str, id: &str) -> Result<DocKey, ApiError> {
    Ok(DocKey::new(collection, id)?)
}

/// `POST /v1/peer/hello`: learn the caller and its members; answer with the digest root.
pub async fn hello(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let h: HelloV1 = decode(&body)?;
    node.membership
        .learn(h.members.into_iter().chain(std::iter::once(h.from)));
    let root = node.store.digest_root();
    encode(&RootV1 {
        node_id: node.membership.node_id().to_string(),
        root,
        members: node.membership.addresses(),
    })
}

/// `POST /v1/peer/digest`: salted hashes of the children of some digest tree nodes.
pub async fn digest(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: DigestRequestV1 = decode(&body)?;
    let level = usize::from(req.level);
    if !(1..=3).contains(&level) {
        return Err(ApiError::BadRequest(format!(
            "digest level {level} does not exist (1-3)"
        )));
    }
    let parents: Vec<usize> = if level == 1 {
        vec![0]
    } else {
        req.parents.iter().map(|p| usize::from(*p)).collect()
    };
    let limit = crate::store::digest::LEVEL_SIZES[level - 1];
    if parents.iter().any(|p| *p >= limit) {
        return Err(ApiError::BadRequest(format!(
            "a level-{} node index is below {limit}",
            level - 1
        )));
    }
    let hashes = parents
        .into_iter()
        .flat_map(|p| node.store.digest_children(level, p))
        .map(|v| node_hash(req.salt, v))
        .collect();
    encode(&DigestV1 { hashes })
}

/// `POST /v1/peer/digest/docs`: the documents (and leaves) of buckets.
pub async fn bucket_docs(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: BucketsRequestV1 = decode(&body)?;
    let n = node.clone();
    let collections = node
        .blocking(move || {
            let mut by_collection: std::collections::BTreeMap<String, Vec<(String, u64)>> =
                Default::default();
            for b in req.buckets {
                for (k, heads) in n.store.bucket_docs(b)? {
                    let leaf = crate::store::digest::leaf(&k.encode(), &heads);
                    by_collection
                        .entry(k.collection().to_string())
                        .or_default()
                        .push((k.id().to_string(), leaf));
                }
            }
            Ok(by_collection
                .into_iter()
                .map(|(collection, docs)| CollectionLeavesV1 { collection, docs })
                .collect())
        })
        .await?;
    encode(&BucketsV1 { collections })
}

/// Documents applied at once by one request, so their fsyncs group.
const APPLY_PARALLELISM: usize = 64;

/// Applies changes from a peer to the local store (durably, idempotently: Automerge ignores
/// changes it has, and queues changes whose dependencies have not arrived yet).
pub async fn apply_changes(node: &Arc<Node>, docs: Vec<DocChangesV1>) -> Result<u64, ApiError> {
    let mut parsed = Vec::with_capacity(docs.len());
    for d in docs {
        let k = key(&d.collection, &d.id)?;
        let changes = d
            .changes
            .iter()
            .map(|b| crate::codec::chunks::decode_change(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::BadRequest(format!("{k}: invalid change: {e}")))?;
        parsed.push((k, changes));
    }
    let results: Vec<Result<(), ApiError>> = futures::stream::iter(parsed)
        .map(|(k, changes)| {
            let n = node.clone();
            async move {
                n.clone()
                    .blocking(move || {
                        n.store
                            .write_from::<_, ApiError>(Origin::Peer, &k, |doc, _| {
                                doc.apply_changes(changes).map_err(|e| {
                                    ApiError::BadRequest(format!("{k}: changes rejected: {e}"))
                                })
                            })
                            .map(|_| ())
                    })
                    .await
            }
        })
        .buffer_unordered(APPLY_PARALLELISM)
        .collect()
        .await;
    let mut applied = 0;
    for r in results {
        r?;
        applied += 1;
    }
    Ok(applied)
}

/// `POST /v1/peer/changes`
pub async fn changes(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: ChangesV1 = decode(&body)?;
    apply_changes(&node, req.docs).await?;
    encode(&())
}

/// A document's heads here, and its changes after some heads (`None`: some of those are unknown).
pub type HeadsAndChanges = (Vec<[u8; 32]>, Option<Vec<Vec<u8>>>);

/// This node's heads of `key`, and its changes after `heads` if it knows every one of `heads`.
pub fn changes_after(
    node: &Node,
    key: &DocKey,
    heads: &[[u8; 32]],
) -> Result<HeadsAndChanges, StoreError> {
    let hs: Vec<ChangeHash> = heads.iter().map(|h| ChangeHash(*h)).collect();
    Ok(node
        .store
        .read(key, |doc, meta| {
            let changes = if hs.iter().all(|h| doc.get_change_meta_by_hash(h).is_some()) {
                Some(
                    doc.get_changes(&hs)
                        .into_iter()
                        .map(|c| c.raw_bytes().to_vec())
                        .collect(),
                )
            } else {
                None
            };
            (meta.heads.clone(), changes)
        })?
        .unwrap_or_else(|| {
            (
                Vec::new(),
                if hs.is_empty() {
                    Some(Vec::new())
                } else {
                    None
                },
            )
        }))
}

/// `POST /v1/peer/pull`
pub async fn pull(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: PullV1 = decode(&body)?;
    let n = node.clone();
    let resp = node
        .blocking(move || {
            let mut resp = PullResponseV1::default();
            for d in req.docs {
                let k = key(&d.collection, &d.id)?;
                let (heads, changes) = changes_after(&n, &k, &d.heads)?;
                resp.docs.push(PulledV1 {
                    collection: d.collection,
                    id: d.id,
                    // The puller only needs our heads when we cannot serve it.
                    heads: if changes.is_some() { Vec::new() } else { heads },
                    changes,
                });
            }
            Ok(resp)
        })
        .await?;
    encode(&resp)
}

/// `POST /v1/peer/sync`: one step of the Automerge sync protocol for each document, in a session
/// the caller drives; this side's sync states live in memory for the session.
pub async fn sync(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: SyncV1 = decode(&body)?;
    let session = req.session;
    let n = node.clone();
    let docs = node
        .blocking(move || {
            let mut out = Vec::new();
            for d in req.docs {
                let k = key(&d.collection, &d.id)?;
                let msg = crate::sync::decode_message(&d.message)
                    .map_err(|e| ApiError::BadRequest(format!("{k}: invalid sync message: {e}")))?;
                let state = n.sync_sessions.state(session, &k);
                let reply = crate::sync::step(&n.store, Origin::Peer, &k, &mut state.lock(), msg)?;
                if let Some(m) = reply {
                    out.push(DocMessageV1::new(d.collection, d.id, m));
                }
            }
            Ok(out)
        })
        .await?;
    encode(&SyncV1 { session, docs })
}
