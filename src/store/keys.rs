//! Names and keys: which collection names and document ids are valid, and how they are laid out
//! as RocksDB keys.
//!
//! A document key is `collection 0x00 id`; neither part may contain 0x00, so one collection's
//! documents form a contiguous, prefix-addressable range, and a document's incremental changes
//! (`doc key 0x00 seq:u64be`) form another.

use std::fmt;

use super::error::StoreError;
pub use super::error::{COLLECTION_RULE, ID_RULE};

pub const MAX_COLLECTION_LEN: usize = 64;
pub const MAX_ID_LEN: usize = 256;

/// A validated (collection, document id) pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DocKey {
    collection: String,
    id: String,
}

/// Collections the node keeps for itself (clients cannot address them; see `http::auth`).
pub const SYSTEM_COLLECTIONS: [&str; 1] = ["_indexes"];

pub fn validate_collection(name: &str) -> Result<(), StoreError> {
    if SYSTEM_COLLECTIONS.contains(&name) {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidCollection(
            name.chars().take(80).collect(),
        ))
    }
}

pub fn validate_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidId(id.chars().take(80).collect()))
    }
}

impl DocKey {
    pub fn new(collection: &str, id: &str) -> Result<Self, StoreError> {
        validate_collection(collection)?;
        validate_id(id)?;
        Ok(DocKey {
            collection: collection.to_string(),
            id: id.to_string(),
        })
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key of the document's metadata and snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.collection.len() + 1 + self.id.len());
        k.extend_from_slice(self.collection.as_bytes());
        k.push(0);
        k.extend_from_slice(self.id.as_bytes());
        k
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let sep = bytes.iter().position(|b| *b == 0)?;
        let collection = std::str::from_utf8(&bytes[..sep]).ok()?;
        let id = std::str::from_utf8(&bytes[sep + 1..]).ok()?;
        DocKey::new(collection, id).ok()
    }

    /// The first key of this document's incremental changes; all of them share it as a prefix.
    pub fn changes_prefix(&self) -> Vec<u8> {
        let mut k = self.encode();
        k.push(0);
        k
    }

    pub fn change_key(&self, seq: u64) -> Vec<u8> {
        let mut k = self.changes_prefix();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

/// The key range of a collection's documents: `collection 0x00 ..`.
pub fn collection_prefix(collection: &str) -> Vec<u8> {
    let mut k = collection.as_bytes().to_vec();
    k.push(0);
    k
}

/// The smallest key greater than every key starting with a prefix (shared with index ranges).
pub use crate::query::plan::prefix_end;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(DocKey::new("users", "a-b_c.d:e~f").is_ok());
        for bad in ["", "_x", "-x", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(validate_collection(bad).is_err(), "{bad:?}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a\0b", &"x".repeat(257), "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_round_trip_and_nest() {
        let k = DocKey::new("c", "ab").unwrap();
        assert_eq!(DocKey::decode(&k.encode()).unwrap(), k);
        let other = DocKey::new("c", "a").unwrap();
        assert!(!k.change_key(1).starts_with(&other.changes_prefix()));
        assert!(k.change_key(7) < prefix_end(&k.changes_prefix()));
    }
}
