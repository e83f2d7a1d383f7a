//! The peer endpoints (`/v1/peer/...`), behind the cluster-secret check: hello and digest
//! levels for anti-entropy, changes for pushes and repairs, pull and sync for reconciliation.

use std::sync::Arc;

use automerge::{ChangeHash, ReadDoc};
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

/// What became of one document's changes.
enum Applied {
    Durable,
    /// Some changes wait for dependencies this node lacks (held in memory only).
    Parked(String),
}

fn issue(key: (&str, &str), reason: String) -> DocIssueV1 {
    DocIssueV1 {
        collection: key.0.to_string(),
        id: key.1.to_string(),
        reason,
    }
}

/// Applies changes from a peer to the local store (durably, idempotently: Automerge ignores
/// changes it has, and queues changes whose dependencies have not arrived yet), document by
/// document: one document that cannot be taken (an invalid change, or a local copy that cannot be
/// read) is reported in the result and never stops the others. The one failure for the whole
/// batch is a full disk, which every document would meet: the peer should retry later.
pub async fn apply_changes(
    node: &Arc<Node>,
    docs: Vec<DocChangesV1>,
) -> Result<ChangesResultV1, StoreError> {
    let mut result = ChangesResultV1::default();
    let mut parsed = Vec::with_capacity(docs.len());
    for d in docs {
        let k = match DocKey::new(&d.collection, &d.id) {
            Ok(k) => k,
            Err(e) => {
                result
                    .rejected
                    .push(issue((&d.collection, &d.id), e.to_string()));
                continue;
            }
        };
        match d
            .changes
            .iter()
            .map(|b| crate::codec::chunks::decode_change(b))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(changes) => parsed.push((k, changes)),
            Err(e) => result.rejected.push(issue(
                (&d.collection, &d.id),
                format!("invalid change: {e}"),
            )),
        }
    }
    let outcomes: Vec<(DocKey, Result<Applied, StoreError>)> = futures::stream::iter(parsed)
        .map(|(k, changes)| {
            let n = node.clone();
            async move {
                let key = k.clone();
                let r = tokio::task::spawn_blocking(move || apply_one(&n, &k, changes))
                    .await
                    .unwrap_or_else(|e| {
                        Err(StoreError::Corrupt(format!("worker task failed: {e}")))
                    });
                (key, r)
            }
        })
        .buffer_unordered(APPLY_PARALLELISM)
        .collect()
        .await;
    let mut no_space = None;
    for (k, r) in outcomes {
        match r {
            Ok(Applied::Durable) => result.applied += 1,
            Ok(Applied::Parked(why)) => {
                result.applied += 1;
                result.parked.push(issue((k.collection(), k.id()), why));
            }
            Err(e) if e.is_no_space() => no_space = Some(e),
            Err(e) => {
                node.metrics.replication_docs_skipped.inc();
                tracing::warn!(doc = %k, error = %e, "could not take a peer's changes for a document");
                result
                    .rejected
                    .push(issue((k.collection(), k.id()), e.to_string()));
            }
        }
    }
    match no_space {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

fn apply_one(
    node: &Node,
    key: &DocKey,
    changes: Vec<automerge::Change>,
) -> Result<Applied, StoreError> {
    let (parked, _) = node
        .store
        .write_from::<_, StoreError>(Origin::Peer, key, |doc, _| {
            let missing_before = doc.get_missing_deps(&[]);
            doc.apply_changes(changes).map_err(|e| {
                crate::doc::DocError::SyncRejected(format!("changes rejected: {e}"))
            })?;
            let missing: Vec<_> = doc
                .get_missing_deps(&[])
                .into_iter()
                .filter(|h| !missing_before.contains(h))
                .collect();
            Ok(missing.first().map(|h| {
                format!(
                    "waiting for {} change(s) this node lacks (e.g. {})",
                    missing.len(),
                    hex::encode(h.0)
                )
            }))
        })?;
    Ok(match parked {
        Some(why) => Applied::Parked(why),
        None => Applied::Durable,
    })
}

/// `POST /v1/peer/changes`: 200 with [`ChangesResultV1`] (per-document outcomes), or 507 when
/// this node's disk is full.
pub async fn changes(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: ChangesV1 = decode(&body)?;
    let result = apply_changes(&node, req.docs).await?;
    encode(&result)
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

/// Changes a pull response carries before it stops adding documents: a burst of large commits
/// never makes one answer huge, and the puller asks again for the documents left out.
pub const PULL_RESPONSE_BYTES: usize = 8 << 20;

/// `POST /v1/peer/pull`: for each document, the changes after the puller's heads (or our heads
/// when we cannot serve it). A document this node cannot read is left out (and logged), never
/// failing the others; so are documents past [`PULL_RESPONSE_BYTES`].
pub async fn pull(
    State(node): State<Arc<Node>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: PullV1 = decode(&body)?;
    let n = node.clone();
    let resp = node
        .blocking(move || {
            let mut resp = PullResponseV1::default();
            let mut bytes = 0usize;
            for d in req.docs {
                if bytes >= PULL_RESPONSE_BYTES {
                    break;
                }
                let Ok(k) = DocKey::new(&d.collection, &d.id) else {
                    continue;
                };
                let (heads, changes) = match changes_after(&n, &k, &d.heads) {
                    Ok(x) => x,
                    Err(e) if e.is_no_space() => return Err(e.into()),
                    Err(e) => {
                        n.metrics.replication_docs_skipped.inc();
                        tracing::warn!(doc = %k, error = %e, "cannot serve a document to a peer");
                        continue;
                    }
                };
                bytes += changes
                    .as_ref()
                    .map_or(0, |c| c.iter().map(Vec::len).sum::<usize>());
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
                // One document that cannot be synced (a bad message, an unreadable copy here)
                // is left out of the answer; the others go on. A full disk stops the batch.
                let Ok(k) = DocKey::new(&d.collection, &d.id) else {
                    continue;
                };
                let reply = crate::sync::decode_message(&d.message)
                    .map_err(|e| StoreError::Doc(crate::doc::DocError::SyncRejected(e.to_string())))
                    .and_then(|msg| {
                        let state = n.sync_sessions.state(session, &k);
                        let mut state = state.lock();
                        crate::sync::step(&n.store, Origin::Peer, &k, &mut state, msg)
                    });
                match reply {
                    Ok(Some(m)) => out.push(DocMessageV1::new(d.collection, d.id, m)),
                    Ok(None) => {}
                    Err(e) if e.is_no_space() => return Err(e.into()),
                    Err(e) => {
                        n.metrics.replication_docs_skipped.inc();
                        tracing::warn!(doc = %k, error = %e, "cannot sync a document with a peer");
                    }
                }
            }
            Ok(out)
        })
        .await?;
    encode(&SyncV1 { session, docs })
}
