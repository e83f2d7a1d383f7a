//! Each live document's JSON, serialised, kept beside it in column family `doc_json` and
//! replaced in the very commit that changes the document.
//!
//! Turning an Automerge document into JSON costs far more than reading it back: a `GET`, a
//! query's candidate or an index build would otherwise load the document and walk its op set
//! on every read. The entry holds the heads it was built at, so a read answers a version and an
//! `If-None-Match` from one RocksDB lookup, and since it is written in the commit's own batch it
//! is never ahead of or behind the document. A document whose JSON is large (a long text) has no
//! entry: rewriting a large JSON on every keystroke would cost more than building it on the rare
//! read, so after a commit finds it too large the next [`RECHECK_AFTER`] commits do not build it,
//! and a read that finds no entry builds the JSON (and keeps it when it fits again: see
//! `Store::current_json`). History does not count: a document with a long history and a small
//! JSON is materialised like any other.

use rocksdb::WriteBatch;
use serde_json::{Map, Value};

use super::error::StoreError;

/// A document is materialised only when its JSON is at most this large.
pub const MAX_JSON_BYTES: usize = 256 << 10;
/// Commits of a document whose JSON was too large before its JSON is built again to see whether
/// it shrank (building it on every edit of a large text is what the bound avoids).
pub const RECHECK_AFTER: u32 = 64;

const FORMAT: u8 = 1;
/// A JSON nested deeper than this is not kept: `serde_json` refuses to parse past 128 levels,
/// and documents read from Automerge can be up to `doc::json::MAX_READ_DEPTH` deep (sync
/// clients and ops can build what REST writes refuse), so such a copy could not be read back.
pub const MAX_KEPT_DEPTH: usize = 120;

/// A document's JSON as of `heads`.
#[derive(Debug, Clone, PartialEq)]
pub struct Materialized {
    pub heads: Vec<[u8; 32]>,
    /// Shared, so the in-memory copy (`json_cache`) is handed out without copying the bytes.
    pub json: bytes::Bytes,
}

impl Materialized {
    /// The JSON parsed (it was written by serialising a JSON object, so this only fails on
    /// damaged bytes).
    pub fn parse(&self) -> Result<Map<String, Value>, StoreError> {
        serde_json::from_slice(&self.json)
            .map_err(|e| StoreError::Corrupt(format!("materialised JSON: {e}")))
    }
}

/// `[format][heads count: u16 LE][32 bytes per head][JSON]`.
pub fn encode(heads: &[[u8; 32]], json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + heads.len() * 32 + json.len());
    out.push(FORMAT);
    out.extend_from_slice(&(heads.len() as u16).to_le_bytes());
    for h in heads {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(json);
    out
}

pub fn decode(bytes: &[u8]) -> Result<Materialized, StoreError> {
    let bad = |why: &str| StoreError::Corrupt(format!("materialised JSON entry: {why}"));
    let (&format, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    if format != FORMAT {
        return Err(bad("unknown format"));
    }
    let (n, rest) = rest.split_at_checked(2).ok_or_else(|| bad("truncated"))?;
    let n = u16::from_le_bytes([n[0], n[1]]) as usize;
    let (hs, json) = rest
        .split_at_checked(n * 32)
        .ok_or_else(|| bad("truncated heads"))?;
    let heads = hs
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok(Materialized {
        heads,
        json: bytes::Bytes::copy_from_slice(json),
    })
}

/// The JSON to keep for a document, serialised; `None` when it is too large or too deep to
/// keep.
pub fn serialise(json: &Value) -> Result<Option<Vec<u8>>, StoreError> {
    let mut bytes = serde_json::to_vec(json)
        .map_err(|e| StoreError::Corrupt(format!("serialising JSON: {e}")))?;
    // The buffer grew by doubling; the in-memory copy keeps the whole allocation, which its
    // weight (the length) would understate by up to half.
    bytes.shrink_to_fit();
    let keep = bytes.len() <= MAX_JSON_BYTES && crate::codec::json_depth(&bytes) <= MAX_KEPT_DEPTH;
    Ok(keep.then_some(bytes))
}

/// Stages the entry for a document at `heads` in a commit's batch: its serialised JSON, or no
/// entry when there is none to keep (deleted, or too large).
pub fn stage(
    batch: &mut WriteBatch,
    cf: &rocksdb::ColumnFamily,
    enc: &[u8],
    heads: &[[u8; 32]],
    json: Option<&[u8]>,
) {
    match json {
        Some(b) => batch.put_cf(cf, enc, encode(heads, b)),
        None => batch.delete_cf(cf, enc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_an_error() {
        let heads = vec![[7u8; 32], [9u8; 32]];
        let e = encode(&heads, br#"{"a":1}"#);
        let m = decode(&e).unwrap();
        assert_eq!(m.heads, heads);
        assert_eq!(m.parse().unwrap()["a"], 1);
        assert!(decode(&e[..40]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[2, 0, 0]).is_err());
        assert!(decode(&encode(&[], b"not json")).unwrap().parse().is_err());
    }

    fn nested(depth: usize) -> Value {
        (1..depth).fold(
            serde_json::json!({}),
            |inner, _| serde_json::json!({ "a": inner }),
        )
    }

    /// What is kept can be read back: a JSON too deep for the parser is not kept (reads build
    /// it from the document instead).
    #[test]
    fn only_what_parses_back_is_kept() {
        let ok = serialise(&nested(MAX_KEPT_DEPTH)).unwrap().expect("kept");
        assert_eq!(crate::codec::json_depth(&ok), MAX_KEPT_DEPTH);
        let m = decode(&encode(&[], &ok)).unwrap();
        assert!(m.parse().is_ok());
        assert_eq!(serialise(&nested(200)).unwrap(), None);
        // Why: the parser's own limit.
        let deep = serde_json::to_vec(&nested(200)).unwrap();
        assert!(serde_json::from_slice::<Value>(&deep).is_err());
    }
}
