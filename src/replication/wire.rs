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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level1V1 {
    pub buckets: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level2RequestV1 {
    pub b0: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level2V1 {
    pub levels: Vec<(u8, Vec<u64>)>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketsV1 {
    pub docs: Vec<DocHeadsV1>,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PullResponseV1 {
    pub docs: Vec<DocChangesV1>,
    /// Documents where the puller has changes the responder lacks too: reconcile with the
    /// Automerge sync protocol instead.
    pub concurrent: Vec<(String, String)>,
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
