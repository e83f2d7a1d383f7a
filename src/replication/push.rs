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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::ReplicationError;
use super::replica::Replica;
use super::transport::PeerTransport;
use super::wire::{chunk_changes, ChangesV1, DocChangesV1, PUSH_REQUEST_BYTES};
use crate::store::{CommitEvent, Origin};

/// Most changes in one push request, and most bytes (of changes carried in events; a commit larger
/// than [`crate::store::INLINE_CHANGE_BYTES`] is read from the store when its batch is sent).
const BATCH_CHANGES: usize = 512;
const BATCH_BYTES: usize = 2 << 20;
/// Lanes per peer: requests in flight to one peer at once (each lane is sequential).
const LANES: usize = 4;

/// Dispatches local commits to peers' lanes until `shutdown`. `queue` commits may wait per peer.
///
/// Subscribes to the store's commits when called, not when first polled, so no commit made after
/// this call is missed however late the task starts.
pub fn run<T: PeerTransport + Clone>(
    replica: Arc<Replica>,
    transport: T,
    queue: usize,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    let commits = replica.store.subscribe_commits();
    dispatch(replica, transport, queue, shutdown, commits)
}

async fn dispatch<T: PeerTransport + Clone>(
    replica: Arc<Replica>,
    transport: T,
    queue: usize,
    shutdown: CancellationToken,
    mut commits: tokio::sync::broadcast::Receiver<Arc<CommitEvent>>,
) {
    type Lanes = (Vec<mpsc::Sender<Arc<CommitEvent>>>, Arc<AtomicU64>);
    let mut lanes: HashMap<String, Lanes> = HashMap::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = commits.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                replica.metrics.push_dropped.inc_by(n);
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if event.origin != Origin::Local {
            continue;
        }
        // One document always travels in the same lane, so its changes arrive in order.
        let lane = (crate::store::digest::bucket(&event.key.encode()) as usize) % LANES;
        for peer in replica.membership.pushable() {
            let (queues, queued) = lanes.entry(peer.clone()).or_insert_with(|| {
                let queued = replica.membership.push_queue(&peer);
                let senders = (0..LANES)
                    .map(|_| {
                        let (tx, rx) = mpsc::channel(queue.div_ceil(LANES).max(1));
                        let lane = Lane {
                            replica: replica.clone(),
                            transport: transport.clone(),
                            peer: peer.clone(),
                            queued: queued.clone(),
                        };
                        tokio::spawn(lane.run(rx, shutdown.clone()));
                        tx
                    })
                    .collect();
                (senders, queued)
            });
            // Counted before it is sent, so the lane's decrement never comes first.
            queued.fetch_add(1, Ordering::Relaxed);
            if queues[lane].try_send(event.clone()).is_err() {
                queued.fetch_sub(1, Ordering::Relaxed);
                replica.metrics.push_dropped.inc();
            }
        }
    }
}

/// One lane of one peer's queue: commits of the documents that hash to it, sent in order.
struct Lane<T> {
    replica: Arc<Replica>,
    transport: T,
    peer: String,
    /// Commits queued or being sent on this peer's lanes (shown in `/v1/cluster`).
    queued: Arc<AtomicU64>,
}

impl<T: PeerTransport> Lane<T> {
    /// Drains the lane a batch at a time until `shutdown`.
    async fn run(self, mut rx: mpsc::Receiver<Arc<CommitEvent>>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = rx.recv() => match e { Some(e) => e, None => return },
            };
            let batch = next_batch(first, &mut rx);
            let n = batch.len() as u64;
            self.send(batch).await;
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }

    async fn send(&self, batch: Vec<Arc<CommitEvent>>) {
        let (replica, peer) = (&self.replica, &self.peer);
        let mut docs: Vec<DocChangesV1> = Vec::with_capacity(batch.len());
        for e in &batch {
            let changes = match &e.changes {
                Some(c) => c.clone(),
                None => match stored_changes(replica, e).await {
                    Some(c) => c,
                    // Unreadable now: anti-entropy will repair it.
                    None => continue,
                },
            };
            // A document's commits in one batch travel as one entry, in commit order.
            match docs.last_mut() {
                Some(last) if last.collection == e.key.collection() && last.id == e.key.id() => {
                    last.changes.extend(changes)
                }
                _ => docs.push(DocChangesV1 {
                    collection: e.key.collection().to_string(),
                    id: e.key.id().to_string(),
                    changes,
                }),
            }
        }
        // Changes read from the store can be far larger than the event said: split by bytes, in
        // order, so a burst of large commits never gets the small ones refused with it.
        for docs in chunk_changes(docs, BATCH_CHANGES, PUSH_REQUEST_BYTES) {
            let changes: usize = docs.iter().map(|d| d.changes.len()).sum();
            match self.transport.push_changes(peer, &ChangesV1 { docs }).await {
                Ok(x) => {
                    replica.membership.record_success(peer, None);
                    let labels = crate::metrics::PeerLabels { peer: peer.clone() };
                    replica
                        .metrics
                        .push_changes
                        .get_or_create(&labels)
                        .inc_by(changes as u64);
                    replica
                        .metrics
                        .push_bytes
                        .get_or_create(&labels)
                        .inc_by(x.sent);
                    if !x.value.rejected.is_empty() {
                        // The peer took the rest; anti-entropy retries these.
                        replica
                            .metrics
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
                    replica.metrics.push_dropped.inc_by(changes as u64);
                    let e = ReplicationError::from(e);
                    replica.membership.record_error(peer, e.blame(), &e);
                }
            }
        }
    }
}

/// The first event and whatever else is queued, up to a batch's bounds.
fn next_batch(
    first: Arc<CommitEvent>,
    rx: &mut mpsc::Receiver<Arc<CommitEvent>>,
) -> Vec<Arc<CommitEvent>> {
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
    batch
}

fn inline_bytes(e: &CommitEvent) -> usize {
    e.changes
        .as_ref()
        .map_or(0, |c| c.iter().map(Vec::len).sum())
}

/// The changes of a commit too large to travel in its event: everything after the heads the
/// document had before it (later commits' changes too, which the peer takes idempotently).
async fn stored_changes(replica: &Arc<Replica>, e: &CommitEvent) -> Option<Vec<Vec<u8>>> {
    let (store, key, before) = (replica.store.clone(), e.key.clone(), e.before.clone());
    tokio::task::spawn_blocking(move || super::local::changes_after(&store, &key, &before))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|(_, changes)| changes)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use parking_lot::Mutex;
    use serde_json::json;

    use super::*;
    use crate::replication::in_process::InProcess;
    use crate::replication::testing::{json, patch, replica};
    use crate::replication::transport::{Exchange, PeerError};
    use crate::replication::wire::*;

    /// A document id and one change's bytes.
    type Pushed = (String, Vec<u8>);

    /// Records every pushed change (document, change bytes) once the peer took it, in order, and
    /// holds every request while `gate` is closed.
    #[derive(Clone)]
    struct Recorder {
        inner: InProcess,
        pushed: Arc<Mutex<Vec<Pushed>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl PeerTransport for Recorder {
        async fn hello(&self, p: &str, r: &HelloV1) -> Result<Exchange<RootV1>, PeerError> {
            self.inner.hello(p, r).await
        }
        async fn digest(
            &self,
            p: &str,
            r: &DigestRequestV1,
        ) -> Result<Exchange<DigestV1>, PeerError> {
            self.inner.digest(p, r).await
        }
        async fn bucket_docs(
            &self,
            p: &str,
            r: &BucketsRequestV1,
        ) -> Result<Exchange<BucketsV1>, PeerError> {
            self.inner.bucket_docs(p, r).await
        }
        async fn pull(&self, p: &str, r: &PullV1) -> Result<Exchange<PullResponseV1>, PeerError> {
            self.inner.pull(p, r).await
        }
        async fn push_changes(
            &self,
            p: &str,
            r: &ChangesV1,
        ) -> Result<Exchange<ChangesResultV1>, PeerError> {
            let _open = self.gate.acquire().await;
            let answer = self.inner.push_changes(p, r).await?;
            let mut pushed = self.pushed.lock();
            for d in &r.docs {
                for c in &d.changes {
                    pushed.push((d.id.clone(), c.clone()));
                }
            }
            Ok(answer)
        }
        async fn sync(&self, p: &str, r: &SyncV1) -> Result<Exchange<SyncV1>, PeerError> {
            self.inner.sync(p, r).await
        }
    }

    fn recorder(net: &InProcess, open: bool) -> Recorder {
        Recorder {
            inner: net.clone(),
            pushed: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(if open {
                tokio::sync::Semaphore::MAX_PERMITS
            } else {
                0
            })),
        }
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every local commit reaches the peer, and each document's changes go out in the order they
    /// were committed (so the peer never waits for a missing dependency), however the documents
    /// interleave across lanes and batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_documents_changes_arrive_in_commit_order() {
        let net = InProcess::default();
        let (_da, a) = replica(&net, "a", &["b"]);
        let (_db, b) = replica(&net, "b", &["a"]);
        a.membership.record_success("b", None);
        let t = recorder(&net, true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(a.clone(), t.clone(), 100_000, shutdown.clone()));
        let mut committed: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for round in 0..50 {
            for d in 0..8 {
                let id = format!("d{d}");
                let before = a
                    .store
                    .meta(&crate::replication::testing::key(&id))
                    .unwrap();
                patch(&a, &id, json!({ "round": round }));
                let key = crate::replication::testing::key(&id);
                let before: Vec<[u8; 32]> = before.map(|m| m.heads).unwrap_or_default();
                let (_, new) =
                    crate::replication::local::changes_after(&a.store, &key, &before).unwrap();
                committed.entry(id).or_default().extend(new.unwrap());
            }
        }
        eventually("every change pushed", || t.pushed.lock().len() == 400).await;
        let pushed = t.pushed.lock().clone();
        for (id, changes) in &committed {
            let order: Vec<&Vec<u8>> = pushed
                .iter()
                .filter(|(d, _)| d == id)
                .map(|(_, c)| c)
                .collect();
            assert_eq!(order, changes.iter().collect::<Vec<_>>(), "{id}");
            assert_eq!(json(&b, id), json(&a, id));
        }
        assert_eq!(a.metrics.push_dropped.get(), 0);
        shutdown.cancel();
        task.await.unwrap();
    }

    /// A peer that does not answer holds at most a bounded number of commits per lane: the
    /// first batch in flight and a full queue. Every other commit is dropped (and counted) at
    /// once, for anti-entropy to repair, and the writer never waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_peer_holds_a_bounded_queue_and_the_rest_is_dropped() {
        let net = InProcess::default();
        let (_da, a) = replica(&net, "a", &["b"]);
        let (_db, _b) = replica(&net, "b", &["a"]);
        a.membership.record_success("b", None);
        let t = recorder(&net, false);
        let queue = 8;
        let per_lane = queue / LANES;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(a.clone(), t.clone(), queue, shutdown.clone()));
        let commits = 200u64;
        let started = Instant::now();
        for i in 0..commits {
            // One document: one lane.
            patch(&a, "hot", json!({ "i": i }));
        }
        let writes_took = started.elapsed();
        // Held by the stuck lane: its first batch (at most 1 + a full queue) and a full queue.
        let held = (1 + 2 * per_lane) as u64;
        eventually("the overflow dropped", || {
            a.metrics.push_dropped.get() >= commits - held
        })
        .await;
        assert!(
            t.pushed.lock().is_empty(),
            "nothing got through the closed gate"
        );
        // What the cluster view reports as waiting: exactly what is held (dropped ones are not).
        let waiting = || a.membership.snapshot()[0].push_queue;
        eventually("every commit queued or dropped", || {
            waiting() + a.metrics.push_dropped.get() == commits
        })
        .await;
        assert!((1..=held).contains(&waiting()), "{}", waiting());
        t.gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
        eventually("every commit sent or counted as dropped", || {
            t.pushed.lock().len() as u64 + a.metrics.push_dropped.get() == commits
        })
        .await;
        eventually("the queue drained", || waiting() == 0).await;
        let sent = t.pushed.lock().len() as u64;
        assert!(
            sent <= held,
            "{sent} commits were held for a stuck peer (bound {held})"
        );
        assert!(writes_took < Duration::from_secs(10), "{writes_took:?}");
        shutdown.cancel();
        task.await.unwrap();
    }

    fn event(bytes: usize) -> Arc<CommitEvent> {
        Arc::new(CommitEvent {
            key: crate::replication::testing::key("x"),
            changes: Some(vec![vec![0; bytes]]),
            before: Vec::new(),
            heads: Vec::new(),
            origin: Origin::Local,
        })
    }

    /// A batch stops at its change count or its byte bound, and leaves the rest queued in order.
    #[tokio::test]
    async fn batches_are_bounded_in_changes_and_bytes() {
        let (tx, mut rx) = mpsc::channel(2048);
        for _ in 0..1000 {
            tx.try_send(event(10)).unwrap();
        }
        let batch = next_batch(event(10), &mut rx);
        assert_eq!(batch.len(), BATCH_CHANGES);
        assert_eq!(rx.len(), 1000 - (BATCH_CHANGES - 1));
        while rx.try_recv().is_ok() {}
        for _ in 0..10 {
            tx.try_send(event(BATCH_BYTES / 4)).unwrap();
        }
        let batch = next_batch(event(BATCH_BYTES / 4), &mut rx);
        assert_eq!(batch.len(), 4, "stops once the bytes reach the bound");
        assert_eq!(rx.len(), 7);
    }
}
