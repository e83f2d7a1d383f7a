//! Persisted sync states of clients that sync documents over HTTP or the automerge-repo
//! WebSocket.
//!
//! Automerge's sync protocol keeps per-peer state; its persistent part (the heads both sides are
//! known to share) lets a client that reconnects, after a restart of either side, resume without
//! resending what the node already has. Clients choose their own ids, so every row belongs to the
//! principal that wrote it (its key starts with the principal's name): one token can neither read
//! nor overwrite another's states, and each principal may own a bounded number of rows. Rows are
//! stamped with their last use and swept, in bounded batches, once unused for the configured time.
//!
//! Losing a state only makes the next sync resend a little, which is why rows of the earlier
//! layout (without an owner) are simply left to expire, and why a principal over its quota still
//! syncs, only without a persisted state.

use super::db::{cfs, handle, now_ms};
use super::error::StoreError;
use super::keys::DocKey;
use super::Store;

/// Deletions written per batch by a sweep, so a sweep of millions of rows never builds one
/// giant batch.
const SWEEP_BATCH: usize = 10_000;

/// The key prefix of every row `owner` owns: its name, length-prefixed so that no owner's prefix
/// is a prefix of another's.
fn owner_prefix(owner: &str) -> Vec<u8> {
    let name = owner.as_bytes();
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let name = &name[..usize::from(len)];
    let mut k = Vec::with_capacity(2 + name.len());
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(name);
    k
}

fn key(owner: &str, client: &str, doc: &DocKey) -> Vec<u8> {
    let mut k = owner_prefix(owner);
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k.extend_from_slice(&doc.encode());
    k
}

/// What became of a state handed to [`Store::put_sync_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePut {
    Stored,
    /// The owner has `quota` rows already: this new row was not stored.
    OverQuota,
}

impl Store {
    /// The persisted sync state of `client` of `owner` for `doc` (Automerge's `State::encode()`).
    pub fn sync_state(
        &self,
        owner: &str,
        client: &str,
        doc: &DocKey,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = handle(self.db(), cfs::SYNC_STATES)?;
        Ok(self
            .db()
            .get_pinned_cf(cf, key(owner, client, doc))?
            .filter(|v| v.len() >= 8)
            .map(|v| v[8..].to_vec()))
    }

    /// Stores a sync state, unless it would be a new row beyond the owner's `quota`. Not fsynced:
    /// losing one only makes the next sync resend a little.
    pub fn put_sync_state(
        &self,
        owner: &str,
        client: &str,
        doc: &DocKey,
        state: &[u8],
        quota: u64,
    ) -> Result<StatePut, StoreError> {
        let cf = handle(self.db(), cfs::SYNC_STATES)?;
        let k = key(owner, client, doc);
        if self.db().get_pinned_cf(cf, &k)?.is_none() {
            let mut counts = self.sync_state_counts.lock();
            let owned = match counts.get(owner) {
                Some(n) => *n,
                None => self.count_sync_states(owner)?,
            };
            if owned >= quota {
                counts.insert(owner.to_string(), owned);
                return Ok(StatePut::OverQuota);
            }
            counts.insert(owner.to_string(), owned + 1);
        }
        let mut v = Vec::with_capacity(8 + state.len());
        v.extend_from_slice(&now_ms().to_le_bytes());
        v.extend_from_slice(state);
        self.db().put_cf(cf, k, v)?;
        Ok(StatePut::Stored)
    }

    /// Rows `owner` has (a scan of its prefix: done once per owner, then counted in memory).
    fn count_sync_states(&self, owner: &str) -> Result<u64, StoreError> {
        let cf = handle(self.db(), cfs::SYNC_STATES)?;
        let prefix = owner_prefix(owner);
        let mut iter = self.db().raw_iterator_cf(cf);
        iter.seek(&prefix);
        let mut n = 0;
        while let Some(k) = iter.key() {
            if !k.starts_with(&prefix) {
                break;
            }
            n += 1;
            iter.next();
        }
        iter.status()?;
        Ok(n)
    }

    /// Deletes states unused for `max_age_ms`, [`SWEEP_BATCH`] at a time; returns how many.
    pub fn sweep_sync_states(&self, max_age_ms: u64) -> Result<usize, StoreError> {
        let cf = handle(self.db(), cfs::SYNC_STATES)?;
        let cutoff = now_ms().saturating_sub(max_age_ms);
        let mut batch = rocksdb::WriteBatch::default();
        let mut n = 0;
        for item in self.db().iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let used = <[u8; 8]>::try_from(v.get(..8).unwrap_or(&[0; 8]))
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            if used <= cutoff {
                batch.delete_cf(cf, k);
                n += 1;
                if batch.len() >= SWEEP_BATCH {
                    self.db().write(std::mem::take(&mut batch))?;
                }
            }
        }
        self.db().write(batch)?;
        // Owners' counts are recounted on their next new row.
        self.sync_state_counts.lock().clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, Default::default(), crate::metrics::Metrics::new()).unwrap()
    }

    #[test]
    fn states_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = DocKey::new("c", "d").unwrap();
        assert_eq!(store.sync_state("alice", "client-1", &d).unwrap(), None);
        assert_eq!(
            store
                .put_sync_state("alice", "client-1", &d, b"state", 10)
                .unwrap(),
            StatePut::Stored
        );
        assert_eq!(
            store
                .sync_state("alice", "client-1", &d)
                .unwrap()
                .as_deref(),
            Some(&b"state"[..])
        );
        assert_eq!(store.sync_state("alice", "client-2", &d).unwrap(), None);
        assert_eq!(store.sweep_sync_states(60_000).unwrap(), 0);
        assert_eq!(store.sweep_sync_states(0).unwrap(), 1);
        assert_eq!(store.sync_state("alice", "client-1", &d).unwrap(), None);
    }

    #[test]
    fn owners_are_separate_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = DocKey::new("c", "d").unwrap();
        // Another principal using the same client id neither sees nor replaces alice's state.
        store
            .put_sync_state("alice", "phone", &d, b"alice's", 10)
            .unwrap();
        store
            .put_sync_state("mallory", "phone", &d, b"mallory's", 10)
            .unwrap();
        assert_eq!(
            store.sync_state("alice", "phone", &d).unwrap().as_deref(),
            Some(&b"alice's"[..])
        );
        // Names that are prefixes of each other stay apart.
        assert_eq!(store.sync_state("alic", "ephone", &d).unwrap(), None);

        // A quota of 3 rows: the fourth new row is refused, updates of owned rows are not, and
        // other owners are unaffected.
        for i in 0..3 {
            let doc = DocKey::new("c", &format!("q{i}")).unwrap();
            assert_eq!(
                store.put_sync_state("bob", "c1", &doc, b"s", 3).unwrap(),
                StatePut::Stored
            );
        }
        let fourth = DocKey::new("c", "q3").unwrap();
        assert_eq!(
            store.put_sync_state("bob", "c1", &fourth, b"s", 3).unwrap(),
            StatePut::OverQuota
        );
        assert_eq!(store.sync_state("bob", "c1", &fourth).unwrap(), None);
        let first = DocKey::new("c", "q0").unwrap();
        assert_eq!(
            store.put_sync_state("bob", "c1", &first, b"s2", 3).unwrap(),
            StatePut::Stored
        );
        assert_eq!(
            store
                .put_sync_state("carol", "c1", &fourth, b"s", 3)
                .unwrap(),
            StatePut::Stored
        );
        // The count survives a restart (recounted from disk).
        drop(store);
        let store = open(dir.path());
        assert_eq!(
            store.put_sync_state("bob", "c1", &fourth, b"s", 3).unwrap(),
            StatePut::OverQuota
        );
        // A sweep frees room.
        assert_eq!(store.sweep_sync_states(0).unwrap(), 6);
        assert_eq!(
            store.put_sync_state("bob", "c1", &fourth, b"s", 3).unwrap(),
            StatePut::Stored
        );
    }

    #[test]
    fn sweeps_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let n = SWEEP_BATCH + 17;
        for i in 0..n {
            let doc = DocKey::new("c", &format!("d{i}")).unwrap();
            store
                .put_sync_state("owner", "c", &doc, b"s", u64::MAX)
                .unwrap();
        }
        assert_eq!(store.sweep_sync_states(0).unwrap(), n);
        assert_eq!(store.count_sync_states("owner").unwrap(), 0);
    }
}
