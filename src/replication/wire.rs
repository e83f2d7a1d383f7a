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
