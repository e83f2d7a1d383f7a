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

/// A digest tree node as sent: the low 32 bits of its XOR. Four bytes per bucket keep the
/// descent cheap; an accidental match of two different buckets (2^-32 per differing bucket) only
/// delays that bucket's repair to the next change in it.
pub type BucketHashV1 = [u8; 4];

pub fn bucket_hash(v: u64) -> BucketHashV1 {
    (v as u32).to_le_bytes()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level1V1 {
    pub buckets: Vec<BucketHashV1>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level2RequestV1 {
    pub b0: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level2V1 {
    pub levels: Vec<(u8, Vec<BucketHashV1>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketsRequestV1 {
    pub buckets: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeadsV1 {
    pub collection: String,
    pub id: String,
    pub heads: Vec<[u8; 32]>,
}

/// A document's digest leaf (hash of key and heads): enough to tell whether two replicas differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocLeafV1 {
    pub collection: String,
    pub id: String,
    pub leaf: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketsV1 {
    pub docs: Vec<DocLeafV1>,
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
    /// The responder's heads (empty: it does not have the document).
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

/// Automerge sync messages for many documents within one session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncV1 {
    pub session: u64,
    pub docs: Vec<DocMessageV1>,
}
