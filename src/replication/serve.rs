//! The responder side of the peer protocol: what this node answers to each peer request, as
//! typed functions over the [`Replica`]. The HTTP endpoints (`api::peer`) only decode, call these
//! and encode; the in-process transport calls them directly.
//!
//! Every answer is per document where documents are involved: one this node cannot read is left
//! out (counted and logged with its key), never failing the others. A full disk fails the whole
//! request, since every document would meet it.

use thiserror::Error;

use super::local;
use super::replica::Replica;
use super::wire::*;
use crate::store::{DocKey, Origin, StoreError};

/// Why a request could not be answered.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The request makes no sense (the peer's fault).
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Learns the caller and its members; answers with the digest root.
pub fn hello(r: &Replica, h: HelloV1) -> RootV1 {
    r.membership
        .learn(h.members.into_iter().chain(std::iter::once(h.from)));
    RootV1 {
        node_id: r.membership.node_id().to_string(),
        root: r.store.digest_root(),
        members: r.membership.addresses(),
    }
}

/// Salted hashes of the children of some digest tree nodes.
pub fn digest(r: &Replica, req: DigestRequestV1) -> Result<DigestV1, ServeError> {
    let level = usize::from(req.level);
    if !(1..=3).contains(&level) {
        return Err(ServeError::BadRequest(format!(
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
        return Err(ServeError::BadRequest(format!(
            "a level-{} node index is below {limit}",
            level - 1
        )));
    }
    let hashes = parents
        .into_iter()
        .flat_map(|p| r.store.digest_children(level, p))
        .map(|v| node_hash(req.salt, v))
        .collect();
    Ok(DigestV1 { hashes })
}

/// The documents (and leaves) of buckets. Blocking: reads the store.
pub fn bucket_docs(r: &Replica, req: BucketsRequestV1) -> Result<BucketsV1, ServeError> {
    let mut by_collection: std::collections::BTreeMap<String, Vec<(String, u64)>> =
        Default::default();
    for b in req.buckets {
        for (k, heads) in r.store.bucket_docs(b)? {
            let leaf = crate::store::digest::leaf(&k.encode(), &heads);
            by_collection
                .entry(k.collection().to_string())
                .or_default()
                .push((k.id().to_string(), leaf));
        }
    }
    Ok(BucketsV1 {
        collections: by_collection
            .into_iter()
            .map(|(collection, docs)| CollectionLeavesV1 { collection, docs })
            .collect(),
    })
}

/// Changes a pull response carries before it stops adding documents: a burst of large commits
/// never makes one answer huge, and the puller asks again for the documents left out.
pub const PULL_RESPONSE_BYTES: usize = 8 << 20;

/// For each document, the changes after the puller's heads (or our heads when we cannot serve
/// it). A document this node cannot read is left out, and so are documents past
/// [`PULL_RESPONSE_BYTES`]. Blocking: reads the store.
pub fn pull(r: &Replica, req: PullV1) -> Result<PullResponseV1, ServeError> {
    let mut resp = PullResponseV1::default();
    let mut bytes = 0usize;
    for d in req.docs {
        if bytes >= PULL_RESPONSE_BYTES {
            break;
        }
        let Ok(k) = DocKey::new(&d.collection, &d.id) else {
            continue;
        };
        let (heads, changes) = match local::changes_after(&r.store, &k, &d.heads) {
            Ok(x) => x,
            Err(e) if e.is_no_space() => return Err(e.into()),
            Err(e) => {
                r.metrics.replication_docs_skipped.inc();
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
}

/// One step of the Automerge sync protocol for each document, in a session the caller drives;
/// this side's sync states live in memory for the session. Blocking: writes the store.
pub fn sync(r: &Replica, req: SyncV1) -> Result<SyncV1, ServeError> {
    let session = req.session;
    let mut docs = Vec::new();
    for d in req.docs {
        // One document that cannot be synced (a bad message, an unreadable copy here) is left
        // out of the answer; the others go on. A full disk stops the batch.
        let Ok(k) = DocKey::new(&d.collection, &d.id) else {
            continue;
        };
        let reply = crate::sync::decode_message(&d.message)
            .map_err(|e| StoreError::Doc(crate::doc::DocError::SyncRejected(e.to_string())))
            .and_then(|msg| {
                let state = r.sessions.state(session, &k);
                let mut state = state.lock();
                crate::sync::step(&r.store, Origin::Peer, &k, &mut state, msg)
            });
        match reply {
            Ok(Some(m)) => docs.push(DocMessageV1::new(d.collection, d.id, m)),
            Ok(None) => {}
            Err(e) if e.is_no_space() => return Err(e.into()),
            Err(e) => {
                r.metrics.replication_docs_skipped.inc();
                tracing::warn!(doc = %k, error = %e, "cannot sync a document with a peer");
            }
        }
    }
    Ok(SyncV1 { session, docs })
}
