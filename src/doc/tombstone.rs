//! Deletion as a CRDT change.
//!
//! Deleting a document is a change that removes every root key and carries the message
//! [`DELETE_MESSAGE`]. It replicates like any other change. A document *is deleted* when its root
//! is empty and one of its heads is such a change. Consequences, all deterministic on every
//! replica:
//! - a delete concurrent with an update: the fields the update put survive (Automerge's map
//!   semantics: a put concurrent with a delete wins), so the document is live again with those
//!   fields; every other field is gone, and with it any concurrent edit made inside a field's
//!   existing value (text edited in place, a counter increment, a nested field), because the
//!   delete removed the object those edits target;
//! - a write after a delete re-creates the document (a write that adds nothing, such as `PUT {}`,
//!   records an empty change so that the delete is no longer a head).

use automerge::transaction::CommitOptions;
use automerge::{Automerge, ChangeHash, ReadDoc};

pub const DELETE_MESSAGE: &str = "concord:delete";
pub const CREATE_MESSAGE: &str = "concord:create";

/// Whether the document is deleted at `heads` (or now).
pub fn is_deleted(doc: &Automerge, heads: Option<&[ChangeHash]>) -> bool {
    let current;
    let heads = match heads {
        Some(h) => h,
        None => {
            current = doc.get_heads();
            &current
        }
    };
    if heads.is_empty() {
        return false;
    }
    let root_empty = doc
        .map_range_at(automerge::ROOT, .., heads)
        .next()
        .is_none();
    root_empty
        && heads.iter().any(|h| {
            doc.get_change_meta_by_hash(h)
                .and_then(|m| m.message)
                .is_some_and(|m| m == DELETE_MESSAGE)
        })
}

/// Records a delete: removes every root key, in one change marked as a delete.
pub fn delete(doc: &mut Automerge, time_ms: i64) -> Result<ChangeHash, super::DocError> {
    let opts = || {
        CommitOptions::default()
            .with_message(DELETE_MESSAGE)
            .with_time(time_ms)
    };
    let keys: Vec<String> = doc.keys(automerge::ROOT).collect();
    if keys.is_empty() {
        return Ok(doc.empty_commit(opts()));
    }
    let r = doc
        .transact_with(
            |_| opts(),
            |tx| {
                use automerge::transaction::Transactable;
                for k in &keys {
                    tx.delete(automerge::ROOT, k.as_str())?;
                }
                Ok::<_, automerge::AutomergeError>(())
            },
        )
        .map_err(|f| super::DocError::from(f.error))?;
    match r.hash {
        Some(h) => Ok(h),
        None => Ok(doc.empty_commit(opts())),
    }
}

/// After a write that produced no operations on a new or deleted document, records an empty change
/// so the document exists (again).
pub fn recreate(doc: &mut Automerge, time_ms: i64) -> ChangeHash {
    doc.empty_commit(
        CommitOptions::default()
            .with_message(CREATE_MESSAGE)
            .with_time(time_ms),
    )
}
