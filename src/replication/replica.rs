//! This node as a replica: the values the replication core works on.

use std::sync::Arc;

use super::membership::Membership;
use super::sessions::SyncSessions;
use crate::metrics::Metrics;
use crate::store::Store;

/// This node as a replica: its store, its view of the cluster, and its half of peers' sync
/// sessions. The same values the node serves clients from (shared `Arc`s).
pub struct Replica {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub membership: Arc<Membership>,
    pub sessions: SyncSessions,
}

impl Replica {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, membership: Arc<Membership>) -> Self {
        Replica {
            store,
            metrics,
            membership,
            sessions: SyncSessions::default(),
        }
    }
}
