//! Client sync: apps that keep Automerge documents locally (browsers, phones, Node processes)
//! work offline and sync with any node when they reconnect, using stock Automerge libraries.
//!
//! - `http`: the Automerge sync protocol over HTTP (one message per request, state per client
//!   persisted), raw changes by heads, whole-document bytes, and per-document live events.
//! - `websocket`: the automerge-repo network protocol, for stock automerge-repo clients.
//!
//! Changes a client brings are ordinary local commits: durable before the answer, pushed to peers,
//! visible in the changes feed.

pub mod http;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use crate::doc::DocError;
use crate::server::Node;
use crate::store::{DocKey, Origin, Store, StoreError};

/// Decodes a sync message from an untrusted peer (see [`crate::codec::sync_message`]).
pub use crate::codec::decode_sync_message as decode_message;

/// One step of the Automerge sync protocol against a stored document, for every kind of peer
/// (HTTP clients, automerge-repo clients, other nodes): applies the other side's message (its
/// changes durably, in one commit) and returns this side's next message.
pub fn step(
    store: &Store,
    origin: Origin,
    key: &DocKey,
    state: &mut automerge::sync::State,
    msg: automerge::sync::Message,
) -> Result<Option<automerge::sync::Message>, StoreError> {
    use automerge::sync::SyncDoc;
    let (reply, _) = store.write_from::<_, StoreError>(origin, key, |doc, _| {
        doc.receive_sync_message(state, msg)
            .map_err(|e| StoreError::Doc(DocError::SyncRejected(e.to_string())))?;
        Ok(doc.generate_sync_message(state))
    })?;
    Ok(reply)
}

/// Persists a client's sync state, within its principal's quota
/// (`max_sync_states_per_principal`): beyond it the client still syncs, without a kept state.
pub fn keep_state(
    node: &Node,
    owner: &str,
    client: &str,
    key: &DocKey,
    state: &automerge::sync::State,
) -> Result<(), StoreError> {
    let quota = node.config.max_sync_states_per_principal;
    if node
        .store
        .put_sync_state(owner, client, key, &state.encode(), quota)?
        == crate::store::StatePut::OverQuota
    {
        node.metrics.sync_states_over_quota.inc();
        tracing::debug!(owner, client, doc = %key, quota, "sync state not kept: the principal is at its quota");
    }
    Ok(())
}

/// Removes client sync states unused for `sync_state_ttl_days`, once at start and then hourly.
pub async fn sweep_states(node: Arc<Node>) {
    let ttl_ms = node.config.sync_state_ttl_days.saturating_mul(86_400_000);
    loop {
        let store = node.store.clone();
        match tokio::task::spawn_blocking(move || store.sweep_sync_states(ttl_ms)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "expired client sync states removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping client sync states failed"),
            _ => {}
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
