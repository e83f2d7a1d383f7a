//! Persisted sync states of clients that sync documents over HTTP.
//!
//! Automerge's sync protocol keeps per-peer state; its persistent part (the heads both sides are
//! known to share) lets a client that reconnects, after a restart of either side, resume without
//! resending what the node already has. States are keyed by client id and document, stamped with
//! their last use, and swept once unused for the configured time.

use super::{cfs, handle, now_ms, DocKey, Store, StoreError};

fn key(client: &str, doc: &DocKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(client.len() + 1 + 64);
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k.extend_from_slice(&doc.encode());
    k
}

impl Store {
    /// The persisted sync state of `client` for `doc` (Automerge's `State::encode()` bytes).
    pub fn sync_state(&self, client: &str, doc: &DocKey) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = handle(self.db(), cfs::SYNC_STATES)?;
        Ok(self
            .db()
            .get_pinned_cf(cf, key(client, doc))?
            .filter(|v| v.len() >= 8)
            .map(|v| v[8..].to_vec()))
    }

    /// Stores a sync state. Not fsynced: losing one only makes the next sync resend a little.
    pub fn put_sync_state(
        &self,
        client: &str,
        doc: &DocKey,
        state: &[u8],
    ) -> Result<(), StoreError> {
        let cf = handle(self.db(), cfs::SYNC_STATES)?;
        let mut v = Vec::with_capacity(8 + state.len());
        v.extend_from_slice(&now_ms().to_le_bytes());
        v.extend_from_slice(state);
        self.db().put_cf(cf, key(client, doc), v)?;
        Ok(())
    }

    /// Deletes states unused for `max_age_ms`; returns how many.
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
            }
        }
        self.db().write(batch)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Default::default(),
            crate::metrics::Metrics::new(),
        )
        .unwrap();
        let d = DocKey::new("c", "d").unwrap();
        assert_eq!(store.sync_state("client-1", &d).unwrap(), None);
        store.put_sync_state("client-1", &d, b"state").unwrap();
        assert_eq!(
            store.sync_state("client-1", &d).unwrap().as_deref(),
            Some(&b"state"[..])
        );
        assert_eq!(store.sync_state("client-2", &d).unwrap(), None);
        assert_eq!(store.sweep_sync_states(60_000).unwrap(), 0);
        assert_eq!(store.sweep_sync_states(0).unwrap(), 1);
        assert_eq!(store.sync_state("client-1", &d).unwrap(), None);
    }
}
