//! This node's side of replication: applying a peer's changes to the store, document by
//! document, and reading the changes a peer lacks.

use std::sync::Arc;

use automerge::{ChangeHash, ReadDoc};
use futures::StreamExt;

use super::replica::Replica;
use super::wire::*;
use crate::blocking::WorkerFailed;
use crate::store::{DocKey, Origin, Store, StoreError};

/// A document's changes could not be applied: its store failed, or the worker applying them.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Worker(#[from] WorkerFailed),
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
    replica: &Arc<Replica>,
    docs: Vec<DocChangesV1>,
) -> Result<ChangesResultV1, StoreError> {
    let mut result = ChangesResultV1::default();
    let mut parsed: Vec<(DocKey, Vec<automerge::Change>)> = Vec::with_capacity(docs.len());
    let mut positions: std::collections::HashMap<DocKey, usize> = std::collections::HashMap::new();
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
            // One request may carry a document more than once (a sender's batch of several
            // commits): its entries are applied as one, in order, because applied in parallel a
            // later change could arrive before the one it depends on.
            Ok(changes) => match positions.get(&k) {
                Some(&i) => {
                    let entry: &mut (DocKey, Vec<automerge::Change>) = &mut parsed[i];
                    entry.1.extend(changes);
                }
                None => {
                    positions.insert(k.clone(), parsed.len());
                    parsed.push((k, changes));
                }
            },
            Err(e) => result.rejected.push(issue(
                (&d.collection, &d.id),
                format!("invalid change: {e}"),
            )),
        }
    }
    let outcomes: Vec<(DocKey, Result<Applied, ApplyError>)> = futures::stream::iter(parsed)
        .map(|(k, changes)| {
            let r = replica.clone();
            async move {
                let key = k.clone();
                let outcome = crate::blocking::run(move || apply_one(&r.store, &k, changes)).await;
                (key, outcome)
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
            Err(ApplyError::Store(e)) if e.is_no_space() => no_space = Some(e),
            Err(e) => {
                replica.metrics.replication_docs_skipped.inc();
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
    store: &Store,
    key: &DocKey,
    changes: Vec<automerge::Change>,
) -> Result<Applied, ApplyError> {
    let (parked, _) = store.write_from::<_, StoreError>(Origin::Peer, key, |doc, _| {
        let missing_before = doc.get_missing_deps(&[]);
        doc.apply_changes(changes)
            .map_err(|e| crate::doc::DocError::SyncRejected(format!("changes rejected: {e}")))?;
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

/// A document's heads here, and its changes after some heads (`None`: some of those are unknown).
pub type HeadsAndChanges = (Vec<[u8; 32]>, Option<Vec<Vec<u8>>>);

/// This node's heads of `key`, and its changes after `heads` if it knows every one of `heads`.
pub fn changes_after(
    store: &Store,
    key: &DocKey,
    heads: &[[u8; 32]],
) -> Result<HeadsAndChanges, StoreError> {
    let hs: Vec<ChangeHash> = heads.iter().map(|h| ChangeHash(*h)).collect();
    Ok(store
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::replication::in_process::InProcess;
    use crate::replication::testing::{json, key, patch, replica};

    /// A request that names one document many times, one change each (a sender's batch of
    /// commits), is applied in the order sent: applied in parallel, a change could come before
    /// the one it depends on and wait forever in a copy nobody keeps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_documents_entries_in_a_request_are_applied_in_order() {
        let net = InProcess::default();
        let (_da, a) = replica(&net, "a", &[]);
        let (_db, b) = replica(&net, "b", &[]);
        let mut entries = Vec::new();
        for round in 0..200 {
            let before = a.store.meta(&key("d")).unwrap().map(|m| m.heads);
            patch(&a, "d", json!({ "round": round }));
            let (_, new) = changes_after(&a.store, &key("d"), &before.unwrap_or_default()).unwrap();
            entries.push(DocChangesV1 {
                collection: "docs".into(),
                id: "d".into(),
                changes: new.unwrap(),
            });
        }
        let result = apply_changes(&b, entries).await.unwrap();
        assert!(result.parked.is_empty(), "{:?}", result.parked);
        assert!(result.rejected.is_empty(), "{:?}", result.rejected);
        assert_eq!(json(&b, "d"), json(&a, "d"));
        assert_eq!(json(&b, "d").unwrap()["round"], json!(199));
    }
}
