//! The one Automerge sync step, shared by every kind of peer: HTTP clients
//! (`api::client_sync`), automerge-repo WebSocket clients (`api::websocket`) and other nodes
//! (`replication`). Also the clients' persisted sync states: kept within a quota per principal,
//! swept when unused.
//!
//! Knows the store and the document domain, and nothing of HTTP or of the node: its callers pass
//! what it needs. Changes a client brings are ordinary local commits: durable before the answer,
//! pushed to peers, visible in the changes feed.

use std::sync::Arc;
use std::time::Duration;

use automerge::ReadDoc;
use tokio_util::sync::CancellationToken;

use crate::access::Grant;
use crate::doc::DocError;
use crate::metrics::Metrics;
use crate::store::sync_states::StatePut;
use crate::store::{Arrived, DocKey, Origin, Store, StoreError};

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
    let arrived = Arrived::of(msg.changes.iter());
    let (reply, _) = store.write_arrived::<_, StoreError>(origin, key, |doc, _| {
        doc.receive_sync_message(state, msg)
            .map_err(|e| StoreError::Doc(DocError::SyncRejected(e.to_string())))?;
        Ok((doc.generate_sync_message(state), arrived))
    })?;
    Ok(reply)
}

/// Why a scoped sync step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ScopedStepError {
    /// The document exists but is outside the caller's scope: for them it does not exist.
    #[error("document {0} does not exist")]
    Hidden(String),
    /// The caller's changes would leave the document outside its scope; nothing was applied.
    #[error("the changes would leave document {0} outside the scope of token `{1}`")]
    OutOfScope(String, String),
    /// The caller's changes depend on changes this node does not have: Automerge would hold
    /// them back until those arrive (from anyone, a peer included) and then apply them, where
    /// nothing could judge them against the caller's scope; nothing was applied.
    #[error("the changes to document {0} depend on {1} change(s) this node does not have: send those too")]
    MissingDeps(String, usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// [`step`] for a client whose token may see only some documents (`who`): a document outside
/// its scope is [`ScopedStepError::Hidden`] (nothing is sent back, not even that it exists),
/// and changes that would leave the document outside the scope are refused, judged on the merged
/// result under the document's lock, so nothing of them is kept.
pub fn step_scoped(
    store: &Store,
    key: &DocKey,
    state: &mut automerge::sync::State,
    msg: automerge::sync::Message,
    who: &Grant,
) -> Result<Option<automerge::sync::Message>, ScopedStepError> {
    use automerge::sync::SyncDoc;
    let (c, id) = (key.collection(), key.id());
    let arrived = Arrived::of(msg.changes.iter());
    let (reply, _) =
        store.write_arrived::<_, ScopedStepError>(Origin::Local, key, |doc, meta| {
            if meta.is_some() && !who.sees_doc(c, id, doc) {
                return Err(ScopedStepError::Hidden(key.to_string()));
            }
            let before = doc.get_heads();
            let missing_before = doc.get_missing_deps(&[]);
            doc.receive_sync_message(state, msg).map_err(|e| {
                ScopedStepError::Store(StoreError::Doc(DocError::SyncRejected(e.to_string())))
            })?;
            // Failing here drops the held-back changes with the copy in memory (the store reloads
            // a document a failed write left changed).
            let missing = doc
                .get_missing_deps(&[])
                .into_iter()
                .filter(|h| !missing_before.contains(h))
                .count();
            if missing > 0 {
                return Err(ScopedStepError::MissingDeps(key.to_string(), missing));
            }
            if doc.get_heads() != before && !who.may_leave(c, id, doc) {
                return Err(ScopedStepError::OutOfScope(
                    key.to_string(),
                    who.name.clone(),
                ));
            }
            Ok((doc.generate_sync_message(state), arrived))
        })?;
    Ok(reply)
}

/// Where clients' sync states persist, within `quota` rows per principal
/// (`max_sync_states_per_principal`).
pub struct ClientStates<'a> {
    store: &'a Store,
    metrics: &'a Metrics,
    quota: u64,
}

impl<'a> ClientStates<'a> {
    pub fn new(store: &'a Store, metrics: &'a Metrics, quota: u64) -> Self {
        ClientStates {
            store,
            metrics,
            quota,
        }
    }

    /// Persists a client's sync state; beyond its principal's quota the client still syncs,
    /// without a kept state (counted, logged at debug).
    pub fn keep(
        &self,
        owner: &str,
        client: &str,
        key: &DocKey,
        state: &automerge::sync::State,
    ) -> Result<(), StoreError> {
        let put = self
            .store
            .put_sync_state(owner, client, key, &state.encode(), self.quota)?;
        if put == StatePut::OverQuota {
            self.metrics.sync_states_over_quota.inc();
            tracing::debug!(owner, client, doc = %key, quota = self.quota, "sync state not kept: the principal is at its quota");
        }
        Ok(())
    }
}

/// Removes client sync states unused for `ttl`, once at start and then hourly, until `shutdown`.
pub async fn sweep_states(store: Arc<Store>, ttl: Duration, shutdown: CancellationToken) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.sweep_sync_states(ttl_ms)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "expired client sync states removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping client sync states failed"),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    fn grant(rule: &str, sub: &str) -> Grant {
        let rules = [crate::access::ScopeRule::parse_arg(rule).unwrap()];
        let claims = serde_json::json!({ "sub": sub })
            .as_object()
            .cloned()
            .unwrap_or_default();
        Grant {
            name: sub.into(),
            access: crate::access::Access::Write,
            collections: None,
            scopes: Some(Arc::new(
                crate::access::Scopes::bind(&rules, &claims).unwrap(),
            )),
            expires: None,
        }
    }

    fn change(doc: &mut Automerge, field: &str, value: &str) -> automerge::Change {
        let mut tx = doc.transaction();
        tx.put(ROOT, field, value).unwrap();
        tx.commit();
        doc.get_last_local_change().unwrap().clone()
    }

    /// A scoped client's change that depends on one the node lacks is refused, not held back:
    /// held back, it would be applied when its dependency arrives from a peer, unjudged (here
    /// it gives the document away to another owner).
    #[test]
    fn a_scoped_clients_change_with_missing_dependencies_is_refused() {
        let (_dir, store, key) = store();
        let who = grant(r#"c:{"owner":"$sub"}"#, "alice");
        // The node's document, alice's.
        let mut origin = Automerge::new();
        let first = change(&mut origin, "owner", "alice");
        store
            .write_from::<_, StoreError>(Origin::Peer, &key, |doc, _| {
                doc.apply_changes([first.clone()])
                    .map_err(|e| StoreError::Doc(DocError::SyncRejected(e.to_string())))
            })
            .unwrap();
        // Elsewhere: an edit the node has not seen, then one on top that hands the document to
        // bob (in scope for neither check on its own: its parent is missing here).
        let middle = change(&mut origin, "note", "x");
        let takeover = change(&mut origin, "owner", "bob");
        let msg = automerge::sync::Message {
            heads: origin.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: vec![takeover.raw_bytes().to_vec()].into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        };
        let mut state = automerge::sync::State::new();
        match step_scoped(&store, &key, &mut state, msg, &who) {
            Err(ScopedStepError::MissingDeps(_, 1)) => {}
            other => panic!("expected a refusal: {other:?}"),
        }
        // The missing change arrives from a peer: nothing of alice's client comes with it.
        store
            .write_from::<_, StoreError>(Origin::Peer, &key, |doc, _| {
                doc.apply_changes([middle.clone()])
                    .map_err(|e| StoreError::Doc(DocError::SyncRejected(e.to_string())))
            })
            .unwrap();
        let owner = store
            .read(&key, |doc, _| {
                doc.get(ROOT, "owner")
                    .unwrap()
                    .map(|(v, _)| v.into_string().ok())
            })
            .unwrap()
            .flatten()
            .flatten();
        assert_eq!(owner.as_deref(), Some("alice"));
    }

    /// A store in a temporary directory, and the key of one document in it.
    fn store() -> (tempfile::TempDir, Store, DocKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            crate::store::StoreOptions::default(),
            Metrics::new(),
        )
        .unwrap();
        (dir, store, DocKey::new("c", "d").unwrap())
    }

    /// One step with a message carrying `chunks`.
    fn send(store: &Store, key: &DocKey, state: &mut automerge::sync::State, chunks: Vec<Vec<u8>>) {
        let msg = automerge::sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: chunks.into(),
            flags: None,
            version: automerge::sync::MessageVersion::V2,
        };
        step(store, Origin::Local, key, state, msg).unwrap();
    }

    fn heads(store: &Store, key: &DocKey) -> Vec<automerge::ChangeHash> {
        store.clear_cache();
        store.read(key, |doc, _| doc.get_heads()).unwrap().unwrap()
    }

    /// A document a client sends whole is stored as it arrived (its saved form becomes the
    /// snapshot) and its later changes byte for byte, instead of being rebuilt by Automerge; a
    /// change sent twice is stored once, and the document reads back from disk at the client's
    /// heads.
    #[test]
    fn a_clients_document_and_changes_are_stored_as_they_arrived() {
        let (_dir, store, key) = store();
        let mut client = Automerge::new();
        for i in 0..3 {
            change(&mut client, "title", &format!("draft {i}"));
        }
        let saved = client.save();
        let mut state = automerge::sync::State::new();
        send(&store, &key, &mut state, vec![saved.clone()]);
        assert_eq!(store.stored_bytes(&key).unwrap().unwrap().0, saved);
        assert_eq!(heads(&store, &key), client.get_heads());

        let edit = change(&mut client, "title", "final").raw_bytes().to_vec();
        for _ in 0..2 {
            send(&store, &key, &mut state, vec![edit.clone()]);
            assert_eq!(
                store.stored_bytes(&key).unwrap().unwrap().0,
                [&saved[..], &edit].concat()
            );
        }
        assert_eq!(heads(&store, &key), client.get_heads());
    }

    /// Chunks that are not exactly what a step applied are not stored as they arrived: a change
    /// that releases one held back stores both, and a whole document merged into existing
    /// history stores what it added.
    #[test]
    fn chunks_that_are_not_exactly_the_new_changes_are_rebuilt() {
        let (_dir, store, key) = store();
        let mut client = Automerge::new();
        let first = change(&mut client, "a", "1").raw_bytes().to_vec();
        let second = change(&mut client, "b", "2").raw_bytes().to_vec();
        let third = change(&mut client, "c", "3").raw_bytes().to_vec();
        let mut state = automerge::sync::State::new();
        send(&store, &key, &mut state, vec![first]);
        // The third waits for the second, in the cached copy.
        send(&store, &key, &mut state, vec![third]);
        send(&store, &key, &mut state, vec![second]);
        assert_eq!(heads(&store, &key), client.get_heads());

        let mut other = Automerge::new();
        change(&mut other, "d", "4");
        let merged = {
            let mut m = other.clone();
            m.merge(&mut client).unwrap();
            m
        };
        send(&store, &key, &mut state, vec![other.save()]);
        assert_eq!(heads(&store, &key), merged.get_heads());
    }
}
