//! The responder side of peer sync sessions: a peer drives an Automerge sync session over many
//! documents (`/v1/peer/sync`), and this node keeps its half of each document's sync state in
//! memory for the session, bounded and forgotten after a while.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::store::DocKey;

/// Responder-side sync states, per (session, document), forgotten after a while.
pub struct SyncSessions {
    states: moka::sync::Cache<(u64, DocKey), Arc<Mutex<automerge::sync::State>>>,
}

impl Default for SyncSessions {
    fn default() -> Self {
        SyncSessions {
            states: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
        }
    }
}

impl SyncSessions {
    pub fn state(&self, session: u64, key: &DocKey) -> Arc<Mutex<automerge::sync::State>> {
        self.states.get_with((session, key.clone()), || {
            Arc::new(Mutex::new(automerge::sync::State::new()))
        })
    }
}
