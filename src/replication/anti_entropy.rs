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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::SyncDoc;
use futures::StreamExt;
use parking_lot::Mutex;

use tokio_util::sync::CancellationToken;

use super::error::ReplicationError;
use super::local::{apply_changes, changes_after};
use super::membership::{RepairReport, SkippedDoc};
use super::replica::Replica;
use super::transport::{Exchange, PeerTransport};
use super::wire::*;
use crate::metrics::PeerLabels;
use crate::store::{now_ms, DocKey, Origin, StoreError};

/// Runs rounds until shutdown: every interval (±50% jitter), one round with each due peer.
pub async fn run<T: PeerTransport>(
    replica: Arc<Replica>,
    transport: T,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let base = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    loop {
        let jitter = base / 2 + rand_below(base.max(1));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(jitter)) => {}
        }
        for peer in replica.membership.due(Instant::now()) {
            if shutdown.is_cancelled() {
                return;
            }
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = round(&replica, &transport, &peer) => r,
            };
            match outcome {
                Ok(report) => replica.membership.record_sync(&peer, report),
                Err(e) => {
                    tracing::debug!(peer, error = %e, "anti-entropy round failed");
                    replica.membership.record_error(&peer, e.blame(), &e);
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
    /// Documents left out because one side could not read or take them.
    skipped: Vec<SkippedDoc>,
}

impl Tally {
    fn add<T>(&mut self, x: Exchange<T>) -> T {
        self.sent += x.sent;
        self.received += x.received;
        x.value
    }
}

fn skipped(side: &'static str, collection: &str, id: &str, error: String) -> SkippedDoc {
    SkippedDoc {
        collection: collection.to_string(),
        id: id.to_string(),
        side,
        error,
    }
}

/// Requests carry at most this many documents, so no request approaches the body limit.
const DOCS_PER_REQUEST: usize = 500;

/// One full anti-entropy round with `peer`.
pub async fn round<T: PeerTransport>(
    r: &Arc<Replica>,
    net: &T,
    peer: &str,
) -> Result<RepairReport, ReplicationError> {
    let started = Instant::now();
    let mut t = Tally::default();
    let labels = PeerLabels {
        peer: peer.to_string(),
    };
    let hello = HelloV1 {
        from: r.membership.me().to_string(),
        node_id: r.membership.node_id().to_string(),
        members: r.membership.addresses(),
    };
    let root: RootV1 = t.add(net.hello(peer, &hello).await?);
    if root.node_id == r.membership.node_id() {
        // Another name for this very node (e.g. a seed list that includes it).
        r.membership.forget_self_alias(peer);
        return Ok(RepairReport::default());
    }
    r.membership.record_success(peer, Some(&root.node_id));
    r.membership.record_root(peer, root.root);
    r.membership.learn(root.members);

    if r.store.digest_root() != root.root {
        reconcile(r, net, peer, &mut t).await?;
    }
    let mut report = RepairReport {
        at_ms: now_ms(),
        docs: t.docs,
        bytes_sent: t.sent,
        bytes_received: t.received,
        millis: started.elapsed().as_millis() as u64,
        ..RepairReport::default()
    };
    for s in t.skipped {
        report.skip(s);
    }
    if report.skipped_docs > 0 {
        tracing::warn!(
            peer,
            skipped = report.skipped_docs,
            first = ?report.skipped.first(),
            "anti-entropy left out documents it could not reconcile"
        );
    }
    r.metrics.ae_rounds.get_or_create(&labels).inc();
    r.metrics
        .ae_docs_repaired
        .get_or_create(&labels)
        .inc_by(t.docs);
    r.metrics
        .ae_bytes_sent
        .get_or_create(&labels)
        .inc_by(t.sent);
    r.metrics
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

/// Runs store work off the async workers. Its failures are this node's, never the peer's.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ReplicationError> {
    crate::blocking::run(move || f().map_err(ReplicationError::from)).await
}

/// Walks the digest tree down to the buckets whose nodes differ from the peer's.
async fn differing_buckets<T: PeerTransport>(
    r: &Replica,
    net: &T,
    peer: &str,
    t: &mut Tally,
) -> Result<Vec<u16>, ReplicationError> {
    let salt = rand_below(u64::MAX);
    let mut parents: Vec<u16> = vec![0];
    for level in 1..=3usize {
        let req = DigestRequestV1 {
            salt,
            level: level as u8,
            parents: parents.clone(),
        };
        let theirs: DigestV1 = t.add(net.digest(peer, &req).await?);
        let fan = crate::store::digest::FANOUT[level];
        let mut next = Vec::new();
        for (pi, parent) in parents.iter().enumerate() {
            let mine = r.store.digest_children(level, usize::from(*parent));
            for (ci, value) in mine.into_iter().enumerate() {
                let theirs = theirs.hashes.get(pi * fan + ci).copied();
                if theirs != Some(node_hash(salt, value)) {
                    next.push((usize::from(*parent) * fan + ci) as u16);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        parents = next;
        if level == 3 {
            return Ok(parents);
        }
    }
    Ok(Vec::new())
}

/// What to do about one document that differs.
enum Plan {
    Push(DocChangesV1),
    Pull(DocHeadsV1),
}

/// How far back a peer's version is looked for in our own history before asking it.
const ANCESTOR_STEPS: usize = 8;

/// Decides push or pull for a document we have at `mine` and the peer at leaf `their_leaf`.
///
/// When the peer is behind us on a linear history (the common case after a partition, where
/// each side edited different documents), its leaf is the leaf of one of our earlier versions:
/// finding it lets us push exactly the missing changes without asking for its heads.
fn plan(
    store: &crate::store::Store,
    key: &DocKey,
    mine: Vec<[u8; 32]>,
    their_leaf: Option<u64>,
) -> Result<Option<Plan>, crate::store::StoreError> {
    let heads_of = |d: &DocKey, changes: Vec<Vec<u8>>| DocChangesV1 {
        collection: d.collection().to_string(),
        id: d.id().to_string(),
        changes,
    };
    let pull = |heads| {
        Plan::Pull(DocHeadsV1 {
            collection: key.collection().to_string(),
            id: key.id().to_string(),
            heads,
        })
    };
    if mine.is_empty() {
        return Ok(Some(pull(Vec::new())));
    }
    let Some(their_leaf) = their_leaf else {
        let all = changes_after(store, key, &[])?.1.unwrap_or_default();
        return Ok(Some(Plan::Push(heads_of(key, all))));
    };
    let enc = key.encode();
    let found = store.read(key, |doc, _| {
        let mut cur: Vec<automerge::ChangeHash> =
            mine.iter().map(|h| automerge::ChangeHash(*h)).collect();
        for _ in 0..ANCESTOR_STEPS {
            let [head] = cur.as_slice() else { return None };
            let mut deps = doc.get_change_meta_by_hash(head)?.deps;
            deps.sort_unstable();
            let raw: Vec<[u8; 32]> = deps.iter().map(|h| h.0).collect();
            if crate::store::digest::leaf(&enc, &raw) == their_leaf {
                return Some(
                    doc.get_changes(&deps)
                        .iter()
                        .map(|c| c.raw_bytes().to_vec())
                        .collect::<Vec<_>>(),
                );
            }
            cur = deps;
        }
        None
    })?;
    Ok(Some(match found.flatten() {
        Some(changes) => Plan::Push(heads_of(key, changes)),
        None => pull(mine),
    }))
}

async fn reconcile<T: PeerTransport>(
    r: &Arc<Replica>,
    net: &T,
    peer: &str,
    t: &mut Tally,
) -> Result<(), ReplicationError> {
    let buckets = differing_buckets(r, net, peer, t).await?;
    if buckets.is_empty() {
        return Ok(());
    }
    // The peer's documents (by leaf) in those buckets.
    let mut their_docs: HashMap<(String, String), u64> = HashMap::new();
    for chunk in buckets.chunks(4096) {
        let req = BucketsRequestV1 {
            buckets: chunk.to_vec(),
        };
        let resp: BucketsV1 = t.add(net.bucket_docs(peer, &req).await?);
        for c in resp.collections {
            for (id, leaf) in c.docs {
                their_docs.insert((c.collection.clone(), id), leaf);
            }
        }
    }
    let n = r.clone();
    let (to_push, to_pull, unreadable) = blocking(move || {
        let mut push = Vec::new();
        let mut pull = Vec::new();
        let mut unreadable = Vec::new();
        let mut decide = |key: DocKey, mine: Vec<[u8; 32]>, theirs: Option<u64>| {
            match plan(&n.store, &key, mine, theirs) {
                Ok(Some(Plan::Push(d))) if !d.changes.is_empty() => push.push(d),
                Ok(Some(Plan::Pull(d))) => pull.push(d),
                Ok(_) => {}
                // One unreadable document must not stop the repair of all the others.
                Err(e) => {
                    n.metrics.replication_docs_skipped.inc();
                    tracing::warn!(doc = %key, error = %e, "anti-entropy skipped a document");
                    unreadable.push(skipped("local", key.collection(), key.id(), e.to_string()));
                }
            }
        };
        for b in buckets {
            for (k, heads) in n.store.bucket_docs(b)? {
                let leaf = crate::store::digest::leaf(&k.encode(), &heads);
                let theirs = their_docs.remove(&(k.collection().to_string(), k.id().to_string()));
                if theirs != Some(leaf) {
                    decide(k, heads, theirs);
                }
            }
        }
        // Documents only the peer has.
        for (c, i) in their_docs.into_keys() {
            if let Ok(k) = DocKey::new(&c, &i) {
                decide(k, Vec::new(), None);
            }
        }
        Ok((push, pull, unreadable))
    })
    .await?;
    t.skipped.extend(unreadable);
    t.docs += (to_push.len() + to_pull.len()) as u64;

    // Push and pull at once, several requests each in flight: one side's fsyncs overlap the
    // other's reads.
    let (pushed, pulled) = tokio::join!(
        push_all(net, peer, to_push),
        pull_all(r, net, peer, to_pull)
    );
    let pushed = t.add(pushed?);
    t.skipped.extend(pushed);
    let (answers, pull_skipped) = t.add(pulled?);
    t.skipped.extend(pull_skipped);

    // It could not serve us: push where it is behind, sync where both sides moved.
    let n = r.clone();
    let (to_push, concurrent, unreadable) = blocking(move || {
        let mut push = Vec::new();
        let mut concurrent = Vec::new();
        let mut unreadable = Vec::new();
        for d in answers {
            let Ok(key) = DocKey::new(&d.collection, &d.id) else {
                continue;
            };
            match changes_after(&n.store, &key, &d.heads) {
                Ok((_, Some(changes))) if !changes.is_empty() => push.push(DocChangesV1 {
                    collection: d.collection,
                    id: d.id,
                    changes,
                }),
                Ok((_, Some(_))) => {}
                Ok((_, None)) => concurrent.push((d.collection, d.id)),
                Err(e) => {
                    n.metrics.replication_docs_skipped.inc();
                    tracing::warn!(doc = %key, error = %e, "anti-entropy skipped a document");
                    unreadable.push(skipped("local", &d.collection, &d.id, e.to_string()));
                }
            }
        }
        Ok((push, concurrent, unreadable))
    })
    .await?;
    t.skipped.extend(unreadable);
    let pushed = push_all(net, peer, to_push).await?;
    let rejected = t.add(pushed);
    t.skipped.extend(rejected);
    for chunk in concurrent.chunks(DOCS_PER_REQUEST) {
        sync_session(r, net, peer, chunk, t).await?;
    }
    Ok(())
}

/// Requests of one round in flight at once.
const REQUESTS_IN_FLIGHT: usize = 4;

/// Pulls what we lack of `docs` from the peer; returns the documents it could not serve (we have
/// changes it lacks: its heads are in the answer) and the documents skipped.
///
/// The peer leaves documents out of an answer past its byte budget (and documents it cannot
/// read): those are asked for again, for as long as answers make progress.
async fn pull_all<T: PeerTransport>(
    r: &Arc<Replica>,
    net: &T,
    peer: &str,
    docs: Vec<DocHeadsV1>,
) -> Result<Exchange<(Vec<PulledV1>, Vec<SkippedDoc>)>, ReplicationError> {
    let mut total = Exchange {
        value: (Vec::new(), Vec::new()),
        sent: 0,
        received: 0,
    };
    let mut wanted = docs;
    while !wanted.is_empty() {
        let requests: Vec<PullV1> = wanted
            .chunks(DOCS_PER_REQUEST)
            .map(|c| PullV1 { docs: c.to_vec() })
            .collect();
        let answers: Vec<Result<(PullV1, Exchange<PullResponseV1>), ReplicationError>> =
            futures::stream::iter(requests)
                .map(|req| async move {
                    let x = net.pull(peer, &req).await?;
                    Ok((req, x))
                })
                .buffer_unordered(REQUESTS_IN_FLIGHT)
                .collect()
                .await;
        let mut again = Vec::new();
        let mut progress = false;
        for answer in answers {
            let (req, x) = answer?;
            total.sent += x.sent;
            total.received += x.received;
            let mut answered = HashSet::new();
            let mut pulled = Vec::new();
            for d in x.value.docs {
                answered.insert((d.collection.clone(), d.id.clone()));
                match d.changes {
                    Some(changes) if !changes.is_empty() => pulled.push(DocChangesV1 {
                        collection: d.collection,
                        id: d.id,
                        changes,
                    }),
                    Some(_) => {}
                    None => total.value.0.push(d),
                }
            }
            progress |= !answered.is_empty();
            again.extend(
                req.docs
                    .into_iter()
                    .filter(|d| !answered.contains(&(d.collection.clone(), d.id.clone()))),
            );
            let applied = apply_changes(r, pulled).await?;
            for r in applied.rejected {
                total
                    .value
                    .1
                    .push(skipped("local", &r.collection, &r.id, r.reason));
            }
        }
        if !progress {
            // The peer serves none of what is left (it cannot read them): next round.
            for d in &again {
                total.value.1.push(skipped(
                    "peer",
                    &d.collection,
                    &d.id,
                    "the peer did not serve it".into(),
                ));
            }
            break;
        }
        wanted = again;
    }
    Ok(total)
}

/// Sends changes the peer lacks, several requests at a time, each bounded in documents and
/// bytes; returns the documents the peer could not take.
async fn push_all<T: PeerTransport>(
    net: &T,
    peer: &str,
    docs: Vec<DocChangesV1>,
) -> Result<Exchange<Vec<SkippedDoc>>, ReplicationError> {
    let results: Vec<Result<Exchange<ChangesResultV1>, _>> =
        futures::stream::iter(chunk_changes(docs, DOCS_PER_REQUEST, PUSH_REQUEST_BYTES))
            .map(|chunk| async move { net.push_changes(peer, &ChangesV1 { docs: chunk }).await })
            .buffer_unordered(REQUESTS_IN_FLIGHT)
            .collect()
            .await;
    let mut total = Exchange {
        value: Vec::new(),
        sent: 0,
        received: 0,
    };
    for r in results {
        let r = r?;
        total.sent += r.sent;
        total.received += r.received;
        for d in r.value.rejected {
            total
                .value
                .push(skipped("peer", &d.collection, &d.id, d.reason));
        }
    }
    Ok(total)
}

/// Runs the Automerge sync protocol for `docs` with `peer` until neither side has anything to say.
async fn sync_session<T: PeerTransport>(
    r: &Arc<Replica>,
    net: &T,
    peer: &str,
    docs: &[(String, String)],
    t: &mut Tally,
) -> Result<(), ReplicationError> {
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
    let n = r.clone();
    let st = states.clone();
    let (mut outgoing, unreadable) = blocking(move || {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for k in keys {
            let state = st[&k].clone();
            let msg = match n
                .store
                .read(&k, |doc, _| doc.generate_sync_message(&mut state.lock()))
            {
                Ok(Some(m)) => m,
                // We do not have it at all: start from an empty document's point of view.
                Ok(None) => automerge::Automerge::new().generate_sync_message(&mut state.lock()),
                Err(e) => {
                    n.metrics.replication_docs_skipped.inc();
                    tracing::warn!(doc = %k, error = %e, "anti-entropy skipped a document");
                    unreadable.push(skipped("local", k.collection(), k.id(), e.to_string()));
                    continue;
                }
            };
            if let Some(m) = msg {
                out.push(DocMessageV1::new(
                    k.collection().to_string(),
                    k.id().to_string(),
                    m,
                ));
            }
        }
        Ok((out, unreadable))
    })
    .await?;
    t.skipped.extend(unreadable);
    for _ in 0..16 {
        if outgoing.is_empty() {
            break;
        }
        let req = SyncV1 {
            session,
            docs: std::mem::take(&mut outgoing),
        };
        let resp: SyncV1 = t.add(net.sync(peer, &req).await?);
        let n = r.clone();
        let st = states.clone();
        let (next, unreadable) = blocking(move || {
            let mut out = Vec::new();
            let mut unreadable = Vec::new();
            for d in resp.docs {
                let Ok(k) = DocKey::new(&d.collection, &d.id) else {
                    continue;
                };
                let Some(state) = st.get(&k).cloned() else {
                    continue;
                };
                let Ok(msg) = crate::sync::decode_message(&d.message) else {
                    continue;
                };
                let reply =
                    match crate::sync::step(&n.store, Origin::Peer, &k, &mut state.lock(), msg) {
                        Ok(r) => r,
                        // A full disk stops the round (every document would fail the same).
                        Err(e) if e.is_no_space() => return Err(e),
                        // One document that cannot be synced leaves the session; others go on.
                        Err(e) => {
                            n.metrics.replication_docs_skipped.inc();
                            tracing::warn!(doc = %k, error = %e, "anti-entropy skipped a document");
                            unreadable.push(skipped("local", &d.collection, &d.id, e.to_string()));
                            None
                        }
                    };
                if let Some(m) = reply {
                    out.push(DocMessageV1::new(d.collection, d.id, m));
                }
            }
            Ok((out, unreadable))
        })
        .await?;
        outgoing = next;
        t.skipped.extend(unreadable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::replication::in_process::InProcess;
    use crate::replication::testing::{json, patch, replica};
    use crate::replication::Blame;

    /// Two stores that each took writes the other never saw (only-here documents on both sides,
    /// documents one side edited further, documents both sides edited concurrently): one round
    /// walks the digest tree down to the differing buckets and leaves both replicas equal, with
    /// every edit from both sides; the next round ends after the hello, on equal roots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_round_over_the_digest_walk_makes_two_stores_equal() {
        let net = InProcess::default();
        let (_da, a) = replica(&net, "a", &["b"]);
        let (_db, b) = replica(&net, "b", &["a"]);
        for i in 0..40 {
            patch(&a, &format!("shared{i}"), json!({"base": i}));
        }
        round(&a, &net, "b").await.unwrap();
        assert_eq!(a.store.digest_root(), b.store.digest_root());
        for i in 0..300 {
            patch(&a, &format!("a{i}"), json!({"from": "a", "i": i}));
        }
        for i in 0..200 {
            patch(&b, &format!("b{i}"), json!({"from": "b", "i": i}));
        }
        for i in 0..10 {
            // Linear on one side (b is behind), concurrent on both sides.
            patch(&a, &format!("shared{i}"), json!({"a": true}));
            patch(&a, &format!("shared{}", 10 + i), json!({"a": true}));
            patch(&b, &format!("shared{}", 10 + i), json!({"b": true}));
        }
        assert_ne!(a.store.digest_root(), b.store.digest_root());

        let report = round(&a, &net, "b").await.unwrap();
        assert_eq!(a.store.digest_root(), b.store.digest_root());
        assert!(report.docs >= 520, "repaired {} documents", report.docs);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        for i in 0..300 {
            let id = format!("a{i}");
            assert_eq!(json(&b, &id), json(&a, &id), "{id}");
        }
        for i in 0..200 {
            let id = format!("b{i}");
            assert_eq!(
                json(&a, &id).and_then(|m| m.get("i").cloned()),
                Some(json!(i))
            );
        }
        for i in 0..10 {
            let both = format!("shared{}", 10 + i);
            let expected = json!({"base": 10 + i, "a": true, "b": true});
            for r in [&a, &b] {
                assert_eq!(json(r, &both).map(Value::Object), Some(expected.clone()));
            }
            let linear = format!("shared{i}");
            assert_eq!(
                json(&b, &linear).map(Value::Object),
                Some(json!({"base": i, "a": true}))
            );
        }

        let again = round(&a, &net, "b").await.unwrap();
        assert_eq!(again.docs, 0);
        assert_eq!(
            a.metrics
                .ae_rounds
                .get_or_create(&PeerLabels { peer: "b".into() })
                .get(),
            3
        );
    }

    /// A peer that cannot be reached is the peer's fault (it goes down); nothing moved.
    #[tokio::test]
    async fn an_unreachable_peer_is_blamed_on_the_peer() {
        let net = InProcess::default();
        let (_da, a) = replica(&net, "a", &["b"]);
        let (_db, _b) = replica(&net, "b", &["a"]);
        patch(&a, "x", json!({"n": 1}));
        net.set_cut("b", true);
        let e = round(&a, &net, "b").await.unwrap_err();
        assert_eq!(e.blame(), Blame::PeerDown, "{e}");
        net.set_cut("b", false);
        round(&a, &net, "b").await.unwrap();
        assert_eq!(a.store.digest_root(), _b.store.digest_root());
    }
}
