//! Test support for the replication core: replicas on real stores in temporary directories,
//! reachable in-process, and small helpers to write and read documents.

use std::sync::Arc;

use serde_json::{Map, Value};
use tempfile::TempDir;

use super::in_process::InProcess;
use super::membership::Membership;
use super::replica::Replica;
use crate::doc::write::{apply, Write};
use crate::metrics::Metrics;
use crate::store::{DocKey, Store, StoreError, StoreOptions};

/// A replica on its own store, registered at `addr` on `net`, knowing `peers`.
pub fn replica(net: &InProcess, addr: &str, peers: &[&str]) -> (TempDir, Arc<Replica>) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let opts = StoreOptions {
        sync_writes: false,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open(dir.path(), opts, metrics.clone()).unwrap());
    let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    let membership = Arc::new(Membership::new(
        addr.to_string(),
        store.node_id().to_string(),
        &peers,
        std::time::Duration::from_millis(50),
    ));
    let r = Arc::new(Replica::new(store, metrics, membership));
    net.register(addr, r.clone());
    (dir, r)
}

pub fn key(id: &str) -> DocKey {
    DocKey::new("docs", id).unwrap()
}

/// A local write: a JSON merge patch of `body` into document `id`.
pub fn patch(r: &Replica, id: &str, body: Value) {
    let Value::Object(m) = body else {
        panic!("not an object")
    };
    r.store
        .write::<_, StoreError>(&key(id), |doc, _| {
            apply(doc, &Write::MergePatch(m), 1).map_err(StoreError::Doc)
        })
        .unwrap();
}

/// Document `id` as JSON, `None` when the replica lacks it.
pub fn json(r: &Replica, id: &str) -> Option<Map<String, Value>> {
    r.store
        .read(&key(id), |doc, _| crate::doc::json::to_json(doc, None))
        .unwrap()
}
