//! Anti-entropy: periodic (jittered) rounds with one peer at a time that find and repair every
//! difference between two replicas.
//!
//! A round: hello (gossip + the peer's digest root; equal roots end the round) → the 256 level-1
//! buckets → the level-2 buckets under differing level-1 ones → the documents (with heads) of
//! differing level-2 buckets → reconciliation, many documents per request:
//! - the peer is behind on a document (we know all its heads): we push exactly the changes it
//!   lacks;
//! - we are behind, or it has a document we lack: we pull the changes after our heads;
//! - both have changes the other lacks: an Automerge sync-protocol session (heads/have/need with
//!   Bloom filters) for those documents, batched per round trip.
//!
//! Documents one side has never seen and tombstones are ordinary documents here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::SyncDoc;
use parking_lot::Mutex;

use super::client::{Exchange, PeerError};
use super::endpoints::{apply_changes, changes_after};
use super::membership::RepairReport;
use super::wire::*;
use crate::metrics::PeerLabels;
use crate::server::Node;
use crate::store::{now_ms, DocKey, Origin};

/// Responder-side sync states, per (session, document), forgotten after a while.
pub struct SyncSessions {
    states: moka::sync::Cache<(u64, DocKey), Arc<Mutex<automerge::sync::State>>>,
}

impl Default for SyncSessions {
    fn default() -> Self {
        SyncSessions {
            states: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
        }
    }
}

impl SyncSessions {
    pub fn state(&self, session: u64, key: &DocKey) -> Arc<Mutex<automerge::sync::State>> {
        self.states.get_with((session, key.clone()), || {
            Arc::new(Mutex::new(automerge::sync::State::new()))
        })
    }
}

/// Runs rounds until shutdown: every interval (±50% jitter), one round with each due peer.
pub async fn run(node: Arc<Node>) {
    let base = node.config.anti_entropy_interval_ms;
    loop {
        let jitter = base / 2 + rand_below(base.max(1));
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(jitter)) => {}
        }
        for peer in node.membership.due(Instant::now()) {
            if node.shutdown.is_cancelled() {
                return;
            }
            let outcome = tokio::select! {
                _ = node.shutdown.cancelled() => return,
                r = round(&node, &peer) => r,
            };
            match outcome {
                Ok(report) => node.membership.record_sync(&peer, report),
                Err(e) => {
                    tracing::debug!(peer, error = %e, "anti-entropy round failed");
                    node.membership.record_failure(&peer, &e.to_string());
                }
            }
        }
    }
}

fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) % n.max(1)
}

/// Traffic and work of one round.
#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    docs: u64,
}

impl Tally {
    fn add<T>(&mut self, x: Exchange<T>) -> T {
        self.sent += x.sent;
        self.received += x.received;
        x.value
    }
}

/// Requests carry at most this many documents, so no request approaches the body limit.
const DOCS_PER_REQUEST: usize = 500;

/// One full anti-entropy round with `peer`.
pub async fn round(node: &Arc<Node>, peer: &str) -> Result<RepairReport, PeerError> {
    let started = Instant::now();
    let mut t = Tally::default();
    let labels = PeerLabels {
        peer: peer.to_string(),
    };
    let hello = HelloV1 {
        from: node.membership.me().to_string(),
        node_id: node.membership.node_id().to_string(),
        members: node.membership.addresses(),
    };
    let root: RootV1 = t.add(
        node.peer_client
            .call(peer, "/v1/peer/hello", &hello)
            .await?,
    );
    if root.node_id == node.membership.node_id() {
        // Another name for this very node (e.g. a seed list that includes it).
        node.membership.forget_self_alias(peer);
        return Ok(RepairReport::default());
    }
    node.membership.record_success(peer, Some(&root.node_id));
    node.membership.learn(root.members);

    let n = node.clone();
    let mine = blocking(node, move || n.store.digest_root()).await?;
    if mine != root.root {
        reconcile(node, peer, &mut t).await?;
    }
    let report = RepairReport {
        at_ms: now_ms(),
        docs: t.docs,
        bytes_sent: t.sent,
        bytes_received: t.received,
        millis: started.elapsed().as_millis() as u64,
    };
    node.metrics.ae_rounds.get_or_create(&labels).inc();
    node.metrics
        .ae_docs_repaired
        .get_or_create(&labels)
        .inc_by(t.docs);
    node.metrics
        .ae_bytes_sent
        .get_or_create(&labels)
        .inc_by(t.sent);
    node.metrics
        .ae_bytes_received
        .get_or_create(&labels)
        .inc_by(t.received);
    if t.docs > 0 {
        tracing::info!(
            peer,
            docs = t.docs,
            sent = t.sent,
            received = t.received,
            "anti-entropy repaired documents"
        );
    }
    Ok(report)
}

async fn blocking<T: Send + 'static>(
    node: &Arc<Node>,
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, PeerError> {
    node.blocking(move || f().map_err(crate::api::problem::ApiError::from))
        .await
        .map_err(|e| PeerError::Unreachable(format!("local store: {e}")))
}

/// Indexes where my tree nodes and the peer's (as sent) differ.
fn differing(mine: &[u64], theirs: &[BucketHashV1]) -> Vec<usize> {
    (0..mine.len().max(theirs.len()))
        .filter(|i| {
            let m = mine.get(*i).copied().map(bucket_hash).unwrap_or([0; 4]);
            m != theirs.get(*i).copied().unwrap_or([0; 4])
        })
        .collect()
}

async fn reconcile(node: &Arc<Node>, peer: &str, t: &mut Tally) -> Result<(), PeerError> {
    // Level 1
    let theirs: Level1V1 = t.add(
        node.peer_client
            .call(peer, "/v1/peer/digest/level1", &())
            .await?,
    );
    let n = node.clone();
    let mine = blocking(node, move || n.store.digest_level1()).await?;
    let b0s: Vec<u8> = differing(&mine, &theirs.buckets)
        .into_iter()
        .map(|i| i as u8)
        .collect();
    if b0s.is_empty() {
        return Ok(());
    }
    // Level 2
    let theirs: Level2V1 = t.add(
        node.peer_client
            .call(
                peer,
                "/v1/peer/digest/level2",
                &Level2RequestV1 { b0: b0s.clone() },
            )
            .await?,
    );
    let n = node.clone();
    let mine = blocking(node, move || {
        b0s.into_iter()
            .map(|b0| Ok((b0, n.store.digest_level2(b0)?)))
            .collect::<Result<BTreeMap<u8, Vec<u64>>, _>>()
    })
    .await?;
    let mut buckets = Vec::new();
    for (b0, levels) in theirs.levels {
        let empty = Vec::new();
        let m = mine.get(&b0).unwrap_or(&empty);
        buckets.extend(
            differing(m, &levels)
                .into_iter()
                .map(|b1| u16::from_be_bytes([b0, b1 as u8])),
        );
    }
    // Documents (by leaf) of differing buckets, both sides.
    let mut their_docs: HashMap<(String, String), u64> = HashMap::new();
    for chunk in buckets.chunks(2048) {
        let req = BucketsRequestV1 {
            buckets: chunk.to_vec(),
        };
        let resp: BucketsV1 = t.add(
            node.peer_client
                .call(peer, "/v1/peer/digest/docs", &req)
                .await?,
        );
        for d in resp.docs {
            their_docs.insert((d.collection, d.id), d.leaf);
        }
    }
    let n = node.clone();
    let mut differ: Vec<DocHeadsV1> = blocking(node, move || {
        let mut out = Vec::new();
        for b in buckets {
            for (k, heads) in n.store.bucket_docs(b)? {
                let leaf = crate::store::digest::leaf(&k.encode(), &heads);
                let id = (k.collection().to_string(), k.id().to_string());
                if their_docs.remove(&id) != Some(leaf) {
                    out.push(DocHeadsV1 {
                        collection: id.0,
                        id: id.1,
                        heads,
                    });
                }
            }
        }
        // Documents only the peer has.
        out.extend(their_docs.into_keys().map(|(collection, id)| DocHeadsV1 {
            collection,
            id,
            heads: Vec::new(),
        }));
        Ok(out)
    })
    .await?;
    differ.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
    t.docs += differ.len() as u64;

    // Pull: the peer sends what we lack when it knows all our heads, and tells us its heads.
    let mut answers = Vec::new();
    for chunk in differ.chunks(DOCS_PER_REQUEST) {
        let req = PullV1 {
            docs: chunk.to_vec(),
        };
        let resp: PullResponseV1 = t.add(node.peer_client.call(peer, "/v1/peer/pull", &req).await?);
        let mut pulled = Vec::new();
        for d in resp.docs {
            match d.changes {
                Some(changes) if !changes.is_empty() => pulled.push(DocChangesV1 {
                    collection: d.collection,
                    id: d.id,
                    changes,
                }),
                // It has everything we have: nothing for it from us.
                Some(_) => {}
                None => answers.push(d),
            }
        }
        apply_changes(node, pulled)
            .await
            .map_err(|e| PeerError::Decode(format!("applying pulled changes: {e}")))?;
    }

    // Push where the peer is behind (we know all its heads); sync where both sides moved.
    let n = node.clone();
    let (to_push, concurrent) = blocking(node, move || {
        let mut push = Vec::new();
        let mut concurrent = Vec::new();
        for d in answers {
            let Ok(key) = DocKey::new(&d.collection, &d.id) else {
                continue;
            };
            match changes_after(&n, &key, &d.heads)?.1 {
                Some(changes) if !changes.is_empty() => push.push(DocChangesV1 {
                    collection: d.collection,
                    id: d.id,
                    changes,
                }),
                Some(_) => {}
                None => concurrent.push((d.collection, d.id)),
            }
        }
        Ok((push, concurrent))
    })
    .await?;
    for chunk in chunk_changes(to_push) {
        t.add(
            node.peer_client
                .call::<_, ()>(peer, "/v1/peer/changes", &ChangesV1 { docs: chunk })
                .await?,
        );
    }
    for chunk in concurrent.chunks(DOCS_PER_REQUEST) {
        sync_session(node, peer, chunk, t).await?;
    }
    Ok(())
}

/// Splits pushes so no request is too large.
fn chunk_changes(docs: Vec<DocChangesV1>) -> Vec<Vec<DocChangesV1>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for d in docs {
        let b: usize = d.changes.iter().map(Vec::len).sum();
        if !cur.is_empty() && (cur.len() >= DOCS_PER_REQUEST || bytes + b > 4 << 20) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += b;
        cur.push(d);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Runs the Automerge sync protocol for `docs` with `peer` until neither side has anything to say.
async fn sync_session(
    node: &Arc<Node>,
    peer: &str,
    docs: &[(String, String)],
    t: &mut Tally,
) -> Result<(), PeerError> {
    let session = rand_below(u64::MAX) ^ now_ms();
    let keys: Vec<DocKey> = docs
        .iter()
        .filter_map(|(c, i)| DocKey::new(c, i).ok())
        .collect();
    let states: HashMap<DocKey, Arc<Mutex<automerge::sync::State>>> = keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                Arc::new(Mutex::new(automerge::sync::State::new())),
            )
        })
        .collect();
    // First messages.
    let n = node.clone();
    let st = states.clone();
    let mut outgoing = blocking(node, move || {
        let mut out = Vec::new();
        for k in keys {
            let state = st[&k].clone();
            let msg = n
                .store
                .read(&k, |doc, _| doc.generate_sync_message(&mut state.lock()))?;
            let msg = match msg {
                Some(m) => m,
                // We do not have it at all: start from an empty document's point of view.
                None => automerge::Automerge::new().generate_sync_message(&mut state.lock()),
            };
            if let Some(m) = msg {
                out.push(DocMessageV1 {
                    collection: k.collection().to_string(),
                    id: k.id().to_string(),
                    message: m.encode(),
                });
            }
        }
        Ok(out)
    })
    .await?;
    for _ in 0..16 {
        if outgoing.is_empty() {
            break;
        }
        let resp: SyncV1 = t.add(
            node.peer_client
                .call(
                    peer,
                    "/v1/peer/sync",
                    &SyncV1 {
                        session,
                        docs: std::mem::take(&mut outgoing),
                    },
                )
                .await?,
        );
        let n = node.clone();
        let st = states.clone();
        outgoing = blocking(node, move || {
            let mut out = Vec::new();
            for d in resp.docs {
                let Ok(k) = DocKey::new(&d.collection, &d.id) else {
                    continue;
                };
                let Some(state) = st.get(&k).cloned() else {
                    continue;
                };
                let Ok(msg) = automerge::sync::Message::decode(&d.message) else {
                    continue;
                };
                let (reply, _) = n.store.write_from::<_, crate::store::StoreError>(
                    Origin::Peer,
                    &k,
                    |doc, _| {
                        let mut s = state.lock();
                        if let Err(e) = doc.receive_sync_message(&mut s, msg) {
                            tracing::warn!(doc = %k, error = %e, "peer sync message rejected");
                            return Ok(None);
                        }
                        Ok(doc.generate_sync_message(&mut s))
                    },
                )?;
                if let Some(m) = reply {
                    out.push(DocMessageV1 {
                        collection: d.collection,
                        id: d.id,
                        message: m.encode(),
                    });
                }
            }
            Ok(out)
        })
        .await?;
    }
    Ok(())
}
