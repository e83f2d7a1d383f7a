//! Peer-to-peer messages. Versioned (`…V1`) and encoded with postcard; a future incompatible
//! change gets new types and new routes, so mixed-version clusters keep talking during upgrades.

use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE: &str = "application/x-concord-peer-v1";

/// Opens an anti-entropy round: who I am and who I know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloV1 {
    pub from: String,
    pub node_id: String,
    pub members: Vec<String>,
}

/// The answer to a hello: the responder's identity, digest root and members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootV1 {
    pub node_id: String,
    pub root: u64,
    pub members: Vec<String>,
}

/// A digest tree node as sent: 16 bits of a hash of its value salted per round. Two bytes keep
/// the descent cheap; a differing node that happens to hash equal (1 in 65,536) is only missed
/// for that round, as the next round uses another salt.
pub type NodeHashV1 = [u8; 2];

pub fn node_hash(salt: u64, value: u64) -> NodeHashV1 {
    (xxhash_rust::xxh3::xxh3_64_with_seed(&value.to_le_bytes(), salt) as u16).to_le_bytes()
}

/// The children at `level` (1-3) of the given nodes of the level above (level 1: the root's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestRequestV1 {
    pub salt: u64,
    pub level: u8,
    pub parents: Vec<u16>,
}

/// Salted hashes of the requested children, parent by parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestV1 {
    pub hashes: Vec<NodeHashV1>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketsRequestV1 {
    pub buckets: Vec<u16>,
}

/// Documents of one collection with their digest leaves (hash of key and heads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionLeavesV1 {
    pub collection: String,
    pub docs: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketsV1 {
    pub collections: Vec<CollectionLeavesV1>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeadsV1 {
    pub collection: String,
    pub id: String,
    pub heads: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocChangesV1 {
    pub collection: String,
    pub id: String,
    pub changes: Vec<Vec<u8>>,
}

/// Changes for many documents: eager pushes and anti-entropy repairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangesV1 {
    pub docs: Vec<DocChangesV1>,
}

/// A document a peer could not take or serve, and why (one bad document never fails a batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocIssueV1 {
    pub collection: String,
    pub id: String,
    pub reason: String,
}

/// The answer to [`ChangesV1`]: what became durable, and per document what did not.
///
/// Nodes before this type answered an empty body: postcard decodes `()` from these bytes (it
/// ignores what follows), and an empty answer decodes here as "all applied" (see
/// [`ChangesResultV1::decode`]), so mixed-version clusters keep talking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesResultV1 {
    /// Documents whose changes are applied and durable.
    pub applied: u64,
    /// Documents whose changes wait for dependencies the receiver lacks: held in memory only, not
    /// durable; anti-entropy sends the missing changes.
    pub parked: Vec<DocIssueV1>,
    /// Documents the receiver could not take (an invalid change, or its own copy unreadable).
    pub rejected: Vec<DocIssueV1>,
}

impl ChangesResultV1 {
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        if bytes.is_empty() {
            return Ok(ChangesResultV1::default());
        }
        postcard::from_bytes(bytes)
    }
}

/// "Send me what you have after these heads", for documents the puller is behind on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullV1 {
    pub docs: Vec<DocHeadsV1>,
}

/// The responder's side of one pulled document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PulledV1 {
    pub collection: String,
    pub id: String,
    /// The responder's heads, when it sends no changes (empty: it does not have the document).
    pub heads: Vec<[u8; 32]>,
    /// The changes after the puller's heads, when the responder knows all of those heads; `None`
    /// when the puller has changes the responder lacks.
    pub changes: Option<Vec<Vec<u8>>>,
}

/// Documents the responder cannot serve (unreadable here) and documents past its byte budget are
/// left out; the puller asks again for those it still lacks while answers make progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PullResponseV1 {
    pub docs: Vec<PulledV1>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocMessageV1 {
    pub collection: String,
    pub id: String,
    pub message: Vec<u8>,
}

impl DocMessageV1 {
    pub fn new(collection: String, id: String, message: automerge::sync::Message) -> Self {
        DocMessageV1 {
            collection,
            id,
            message: message.encode(),
        }
    }
}

/// Automerge sync messages for many documents within one session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncV1 {
    pub session: u64,
    pub docs: Vec<DocMessageV1>,
}

/// A push request's target size in change bytes, well under any node's body limit (16 MiB by
/// default). A single change larger than this travels alone.
pub const PUSH_REQUEST_BYTES: usize = 4 << 20;

/// Splits changes into requests of at most `max_docs` documents and about `max_bytes` of changes,
/// so a burst of large commits never makes a request that a peer refuses whole (and with it the
/// small commits batched alongside). A document whose changes exceed the budget is split across
/// consecutive requests, its changes in order; a single change larger than the budget travels
/// alone.
pub fn chunk_changes(
    docs: Vec<DocChangesV1>,
    max_docs: usize,
    max_bytes: usize,
) -> Vec<Vec<DocChangesV1>> {
    let mut out = Vec::new();
    let mut cur: Vec<DocChangesV1> = Vec::new();
    let mut bytes = 0usize;
    for DocChangesV1 {
        collection,
        id,
        changes,
    } in docs
    {
        if cur.len() >= max_docs.max(1) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        let mut part = Vec::new();
        for c in changes {
            if bytes > 0 && bytes + c.len() > max_bytes {
                if !part.is_empty() {
                    cur.push(DocChangesV1 {
                        collection: collection.clone(),
                        id: id.clone(),
                        changes: std::mem::take(&mut part),
                    });
                }
                out.push(std::mem::take(&mut cur));
                bytes = 0;
            }
            bytes += c.len();
            part.push(c);
        }
        if !part.is_empty() {
            cur.push(DocChangesV1 {
                collection,
                id,
                changes: part,
            });
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, sizes: &[usize]) -> DocChangesV1 {
        DocChangesV1 {
            collection: "c".into(),
            id: id.into(),
            changes: sizes.iter().map(|n| vec![0u8; *n]).collect(),
        }
    }

    fn shape(chunks: &[Vec<DocChangesV1>]) -> Vec<Vec<(String, Vec<usize>)>> {
        chunks
            .iter()
            .map(|c| {
                c.iter()
                    .map(|d| (d.id.clone(), d.changes.iter().map(Vec::len).collect()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn small_documents_share_requests_up_to_the_count() {
        let docs = (0..5).map(|i| doc(&format!("d{i}"), &[10])).collect();
        let chunks = chunk_changes(docs, 2, 1000);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
    }

    #[test]
    fn large_commits_do_not_carry_small_ones_over_the_byte_budget() {
        let docs = vec![
            doc("small1", &[10]),
            doc("big", &[600, 600]),
            doc("small2", &[10]),
        ];
        let chunks = chunk_changes(docs, 100, 1000);
        let s = |id: &str, sizes: &[usize]| (id.to_string(), sizes.to_vec());
        assert_eq!(
            shape(&chunks),
            vec![
                vec![s("small1", &[10]), s("big", &[600])],
                vec![s("big", &[600]), s("small2", &[10])],
            ]
        );
        for c in &chunks {
            let bytes: usize = c.iter().flat_map(|d| &d.changes).map(Vec::len).sum();
            assert!(bytes <= 1000, "{bytes}");
        }
    }

    #[test]
    fn an_oversized_change_travels_alone_and_order_is_kept() {
        let docs = vec![doc("a", &[5, 5000, 7]), doc("b", &[3])];
        let chunks = chunk_changes(docs, 100, 1000);
        let s = |id: &str, sizes: &[usize]| (id.to_string(), sizes.to_vec());
        assert_eq!(
            shape(&chunks),
            vec![
                vec![s("a", &[5])],
                vec![s("a", &[5000])],
                vec![s("a", &[7]), s("b", &[3])],
            ]
        );
    }

    #[test]
    fn old_empty_answers_decode_as_all_applied() {
        assert_eq!(
            ChangesResultV1::decode(&[]).unwrap(),
            ChangesResultV1::default()
        );
        let r = ChangesResultV1 {
            applied: 2,
            parked: vec![],
            rejected: vec![DocIssueV1 {
                collection: "c".into(),
                id: "x".into(),
                reason: "bad".into(),
            }],
        };
        let bytes = postcard::to_stdvec(&r).unwrap();
        assert_eq!(ChangesResultV1::decode(&bytes).unwrap(), r);
        // What an older node decodes the new answer as.
        postcard::from_bytes::<()>(&bytes).unwrap();
    }
}
