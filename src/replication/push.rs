//! Eager push: every local commit goes to every peer that is not known to be down, at once.
//!
//! A dispatcher takes commits from the store's broadcast and puts them on bounded queues per
//! peer, in lanes by document (so one document's changes stay in order while four requests per
//! peer are in flight); a sender per lane drains it in batches. Nothing here can block a writer:
//! a full queue drops the push (counted), a failed send drops the batch (and marks the peer down
//! only when the fault is the peer's: no answer, or its own 5xx; 503/507 are back-pressure), and
//! in both cases anti-entropy repairs the difference later. A peer that cannot take one document
//! (its copy unreadable) takes the others, and its answer names the rest. A queued commit holds
//! at most [`crate::store::INLINE_CHANGE_BYTES`] of changes (larger ones are read from the store
//! when sent, and requests are split by bytes), so a peer's queue is bounded in bytes as well as
//! in commits.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::wire::{chunk_changes, ChangesV1, DocChangesV1, PUSH_REQUEST_BYTES};
use crate::server::Node;
use crate::store::{CommitEvent, Origin};

/// Most changes in one push request, and most bytes (of changes carried in events; a commit larger
/// than [`crate::store::INLINE_CHANGE_BYTES`] is read from the store when its batch is sent).
const BATCH_CHANGES: usize = 512;
const BATCH_BYTES: usize = 2 << 20;
/// Lanes per peer: requests in flight to one peer at once (each lane is sequential).
const LANES: usize = 4;

pub async fn run(node: Arc<Node>) {
    let mut commits = node.store.subscribe_commits();
    let mut lanes: HashMap<String, Vec<mpsc::Sender<Arc<CommitEvent>>>> = HashMap::new();
    loop {
        let event = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            e = commits.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                node.metrics.push_dropped.inc_by(n);
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if event.origin != Origin::Local {
            continue;
        }
        // One document always travels in the same lane, so its changes arrive in order.
        let lane = (crate::store::digest::bucket(&event.key.encode()) as usize) % LANES;
        for peer in node.membership.pushable() {
            let queues = lanes.entry(peer.clone()).or_insert_with(|| {
                (0..LANES)
                    .map(|_| {
                        let (tx, rx) = mpsc::channel(node.config.push_queue.div_ceil(LANES));
                        tokio::spawn(sender(node.clone(), peer.clone(), rx));
                        tx
                    })
                    .collect()
            });
            if queues[lane].try_send(event.clone()).is_err() {
                node.metrics.push_dropped.inc();
            }
        }
    }
}

/// Drains one lane of one peer's queue, a batch at a time.
async fn sender(node: Arc<Node>, peer: String, mut rx: mpsc::Receiver<Arc<CommitEvent>>) {
    loop {
        let first = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let mut batch = vec![first];
        let mut count = batch[0].changes.as_ref().map_or(1, Vec::len);
        let mut bytes = inline_bytes(&batch[0]);
        while count < BATCH_CHANGES && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(e) => {
                    count += e.changes.as_ref().map_or(1, Vec::len);
                    bytes += inline_bytes(&e);
                    batch.push(e);
                }
                Err(_) => break,
            }
        }
        let mut docs = Vec::with_capacity(batch.len());
        for e in &batch {
            let changes = match &e.changes {
                Some(c) => c.clone(),
                None => match stored_changes(&node, e).await {
                    Some(c) => c,
                    // Unreadable now: anti-entropy will repair it.
                    None => continue,
                },
            };
            docs.push(DocChangesV1 {
                collection: e.key.collection().to_string(),
                id: e.key.id().to_string(),
                changes,
            });
        }
        // Changes read from the store can be far larger than the event said: split by bytes, in
        // order, so a burst of large commits never gets the small ones refused with it.
        for docs in chunk_changes(docs, BATCH_CHANGES, PUSH_REQUEST_BYTES) {
            let changes: usize = docs.iter().map(|d| d.changes.len()).sum();
            match node
                .peer_client
                .push_changes(&peer, &ChangesV1 { docs })
                .await
            {
                Ok(x) => {
                    node.membership.record_success(&peer, None);
                    let labels = crate::metrics::PeerLabels { peer: peer.clone() };
                    node.metrics
                        .push_changes
                        .get_or_create(&labels)
                        .inc_by(changes as u64);
                    node.metrics
                        .push_bytes
                        .get_or_create(&labels)
                        .inc_by(x.sent);
                    if !x.value.rejected.is_empty() {
                        // The peer took the rest; anti-entropy retries these.
                        node.metrics
                            .push_docs_rejected
                            .inc_by(x.value.rejected.len() as u64);
                        tracing::warn!(
                            peer,
                            rejected = x.value.rejected.len(),
                            first = ?x.value.rejected.first(),
                            "peer could not take pushed changes of some documents"
                        );
                    }
                }
                Err(e) => {
                    node.metrics.push_dropped.inc_by(changes as u64);
                    node.membership.record_error(&peer, &e);
                }
            }
        }
    }
}

fn inline_bytes(e: &CommitEvent) -> usize {
    e.changes
        .as_ref()
        .map_or(0, |c| c.iter().map(Vec::len).sum())
}

/// The changes of a commit too large to travel in its event: everything after the heads the
/// document had before it (later commits' changes too, which the peer takes idempotently).
async fn stored_changes(node: &Arc<Node>, e: &CommitEvent) -> Option<Vec<Vec<u8>>> {
    let (n, key, before) = (node.clone(), e.key.clone(), e.before.clone());
    tokio::task::spawn_blocking(move || super::endpoints::changes_after(&n, &key, &before))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|(_, changes)| changes)
}
