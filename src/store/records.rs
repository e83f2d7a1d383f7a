//! The records the store keeps besides Automerge bytes, and their encoding (postcard: compact and
//! fast, with serde's versioning discipline: fields are only ever appended).

use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// Per-document metadata, rewritten in the same batch as every commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocMeta {
    /// The document's heads after the last commit.
    pub heads: Vec<[u8; 32]>,
    /// Whether the document is a tombstone.
    pub deleted: bool,
    /// Bytes of the compacted snapshot (0 when there is none).
    pub snapshot_len: u64,
    /// Bytes of incremental changes stored since the snapshot.
    pub incr_len: u64,
    /// The sequence number the next incremental change is stored under.
    pub next_seq: u64,
    /// The document's current entry in the changes feed.
    pub feed_seq: Option<u64>,
    /// When the document last changed here (ms since the epoch).
    pub updated_ms: u64,
}

impl DocMeta {
    pub fn heads(&self) -> Vec<automerge::ChangeHash> {
        crate::doc::heads::from_stored(&self.heads)
    }

    pub fn stored_len(&self) -> u64 {
        self.snapshot_len + self.incr_len
    }
}

/// One entry of the changes feed: the latest state of a document that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEntry {
    pub collection: String,
    pub id: String,
    pub heads: Vec<[u8; 32]>,
    pub deleted: bool,
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(v).map_err(|e| StoreError::Encoding(e.to_string()))
}

pub fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
