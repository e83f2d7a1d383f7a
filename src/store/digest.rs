//! The anti-entropy digest: a fixed-depth hash tree over `document → hash(heads)`.
//!
//! Every document has a *leaf*, a 64-bit hash of its key and heads, and a *bucket*, the top 16
//! bits of a hash of its key. Tree nodes are XORs of leaves: the root (all documents), 256
//! level-1 nodes (top 8 bits of the bucket), 4,096 level-2 nodes (top 12 bits) and 65,536
//! level-3 nodes (the bucket). A commit that moves a document from leaf `old` to leaf `new` XORs
//! `old ^ new` into its four nodes with RocksDB merge operands in the commit's own `WriteBatch`:
//! O(1), no read, no lock, so concurrent commits never contend and the digest on disk always
//! agrees with the data. The store mirrors the tree in memory ([`Tree`]), so reading it costs no
//! RocksDB merge work. Beside the tree, the `buckets` column family lists each bucket's documents
//! with their heads, so a differing bucket expands into its documents without scanning.
//!
//! Hashes are xxh3 (stable across platforms and versions).

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Nodes per level: root, level 1, 2 and 3.
pub const LEVEL_SIZES: [usize; 4] = [1, 256, 4096, 65536];
/// Children of one node of the level above: 256 under the root, then 16.
pub const FANOUT: [usize; 4] = [1, 256, 16, 16];

/// The index of the node holding `bucket` at `level`.
pub fn node_index(level: usize, bucket: u16) -> usize {
    match level {
        0 => 0,
        1 => usize::from(bucket >> 8),
        2 => usize::from(bucket >> 4),
        _ => usize::from(bucket),
    }
}

/// The RocksDB key of a tree node.
pub fn node_key(level: usize, index: usize) -> Vec<u8> {
    match level {
        0 => ROOT_KEY.to_vec(),
        _ => {
            let mut k = vec![b'0' + level as u8];
            k.extend_from_slice(&(index as u32).to_be_bytes()[1..]);
            k
        }
    }
}

fn parse_node_key(k: &[u8]) -> Option<(usize, usize)> {
    if k == ROOT_KEY {
        return Some((0, 0));
    }
    match k {
        [l @ b'1'..=b'3', a, b, c] => {
            let level = usize::from(l - b'0');
            let index = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            (index < LEVEL_SIZES[level]).then_some((level, index))
        }
        _ => None,
    }
}

/// The four tree nodes (keys) a document's leaf contributes to.
pub fn tree_keys(bucket: u16) -> [Vec<u8>; 4] {
    [0, 1, 2, 3].map(|l| node_key(l, node_index(l, bucket)))
}

/// The digest tree in memory, updated after each durable commit.
pub struct Tree {
    levels: [Box<[AtomicU64]>; 4],
}

impl Tree {
    /// Loads the tree from the `digest` column family.
    pub fn load(db: &rocksdb::DB, cf: &rocksdb::ColumnFamily) -> Result<Self, rocksdb::Error> {
        let tree = Tree {
            levels: LEVEL_SIZES.map(|n| (0..n).map(|_| AtomicU64::new(0)).collect()),
        };
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            if let Some((level, index)) = parse_node_key(&k) {
                tree.levels[level][index].store(decode_u64(&v), Ordering::Relaxed);
            }
        }
        Ok(tree)
    }

    pub fn apply(&self, bucket: u16, delta: u64) {
        for (level, nodes) in self.levels.iter().enumerate() {
            nodes[node_index(level, bucket)].fetch_xor(delta, Ordering::Relaxed);
        }
    }

    pub fn root(&self) -> u64 {
        self.levels[0][0].load(Ordering::Relaxed)
    }

    /// The children (at `level`) of node `parent` of the level above.
    pub fn children(&self, level: usize, parent: usize) -> Vec<u64> {
        let fan = FANOUT[level.min(3)];
        let start = parent * fan;
        self.levels[level.min(3)]
            .get(start..start + fan)
            .map(|s| s.iter().map(|v| v.load(Ordering::Relaxed)).collect())
            .unwrap_or_default()
    }
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
