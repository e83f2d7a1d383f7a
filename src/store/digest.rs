//! The anti-entropy digest: a fixed-depth hash tree over `document → hash(heads)`.
//!
//! Every document has a *leaf*, a 64-bit hash of its key and heads, and a *bucket*, the top 16
//! bits of a hash of its key. The tree has three levels of XORs of leaves: the root (all
//! documents), 256 level-1 buckets (by the bucket's high byte) and 65,536 level-2 buckets. A commit
//! that moves a document from leaf `old` to leaf `new` XORs `old ^ new` into its three tree nodes
//! with RocksDB merge operands in the commit's own `WriteBatch`: O(1), no read, no lock, so
//! concurrent commits never contend and the digest always agrees with the data. Beside the tree,
//! the `buckets` column family lists each bucket's documents with their heads, so a differing
//! level-2 bucket can be expanded into its documents without scanning.
//!
//! Hashes are xxh3 (stable across platforms and versions); 64 bits make an accidental equal XOR
//! vanishingly unlikely, and the cost of one would only be a repair delayed to the next change.

use xxhash_rust::xxh3::xxh3_64;

pub const ROOT_KEY: &[u8] = b"r";

/// The bucket of a document (by its encoded key).
pub fn bucket(doc_key: &[u8]) -> u16 {
    (xxh3_64(doc_key) >> 48) as u16
}

/// The leaf of a document at `heads` (no heads: absent, leaf 0).
pub fn leaf(doc_key: &[u8], heads: &[[u8; 32]]) -> u64 {
    if heads.is_empty() {
        return 0;
    }
    let mut buf = Vec::with_capacity(doc_key.len() + 1 + heads.len() * 32);
    buf.extend_from_slice(doc_key);
    buf.push(0);
    for h in heads {
        buf.extend_from_slice(h);
    }
    xxh3_64(&buf)
}

pub fn level1_key(b0: u8) -> [u8; 2] {
    [b'1', b0]
}

pub fn level2_key(bucket: u16) -> [u8; 3] {
    let [b0, b1] = bucket.to_be_bytes();
    [b'2', b0, b1]
}

/// The three tree nodes a document's leaf contributes to.
pub fn tree_keys(bucket: u16) -> [Vec<u8>; 3] {
    [
        ROOT_KEY.to_vec(),
        level1_key(bucket.to_be_bytes()[0]).to_vec(),
        level2_key(bucket).to_vec(),
    ]
}

/// `buckets` column family key: bucket (big-endian) then the document key.
pub fn bucket_entry_key(bucket: u16, doc_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + doc_key.len());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(doc_key);
    k
}

pub fn encode_heads(heads: &[[u8; 32]]) -> Vec<u8> {
    heads.concat()
}

pub fn decode_heads(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .collect()
}

pub fn decode_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// The merge operator of the `digest` column family: XOR.
pub fn xor_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc = existing.map(decode_u64).unwrap_or(0);
    for op in operands {
        acc ^= decode_u64(op);
    }
    Some(acc.to_le_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_tree_is_order_independent() {
        let docs: Vec<(Vec<u8>, [u8; 32])> =
            (0..100u8).map(|i| (vec![b'c', 0, i], [i; 32])).collect();
        let fold = |order: &mut dyn Iterator<Item = &(Vec<u8>, [u8; 32])>| {
            order.fold(0u64, |acc, (k, h)| acc ^ leaf(k, &[*h]))
        };
        assert_eq!(fold(&mut docs.iter()), fold(&mut docs.iter().rev()));
        // Updating a leaf by XORing old ^ new equals recomputing.
        let mut root = fold(&mut docs.iter());
        let (k, h) = &docs[7];
        root ^= leaf(k, &[*h]) ^ leaf(k, &[[255; 32]]);
        let recomputed = docs
            .iter()
            .map(|(k2, h2)| {
                if k2 == k {
                    leaf(k2, &[[255; 32]])
                } else {
                    leaf(k2, &[*h2])
                }
            })
            .fold(0, |a, l| a ^ l);
        assert_eq!(root, recomputed);
        assert_eq!(leaf(b"x", &[]), 0);
    }
}
