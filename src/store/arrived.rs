//! Changes kept as they arrived. A sync step applies a message's changes to the document and the
//! store then has to persist exactly the new ones; asking Automerge for them (`get_changes`)
//! rebuilds and re-encodes every one from its op set, which for a document arriving whole means
//! every change of its history. The message already holds those bytes. A writer may hand them
//! over as [`Arrived`]; the store keeps them only when the document proves they are exactly what
//! was applied (see [`Arrived::verify`]) and otherwise asks Automerge as before.

use automerge::{Automerge, ReadDoc};

use crate::codec::chunks;

/// The chunks of one received message, as a claim about what applying them did.
#[derive(Debug, Default)]
pub struct Arrived {
    chunks: Vec<Vec<u8>>,
    changes: u64,
    documents: u64,
}

/// What the store persists for a commit.
pub(crate) enum NewChanges {
    /// Rebuilt by Automerge, one per change.
    Built(Vec<automerge::Change>),
    /// Change chunks as they arrived, each one new change.
    Changes(Vec<Vec<u8>>),
    /// One saved document that is the whole of a document that was empty before: it becomes the
    /// snapshot.
    Document(Vec<u8>),
}

impl NewChanges {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            NewChanges::Built(c) => c.is_empty(),
            NewChanges::Changes(c) => c.is_empty(),
            NewChanges::Document(_) => false,
        }
    }

    /// Their encoded size.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            NewChanges::Built(c) => c.iter().map(|c| c.raw_bytes().len()).sum(),
            NewChanges::Changes(c) => c.iter().map(Vec::len).sum(),
            NewChanges::Document(d) => d.len(),
        }
    }
}

impl Arrived {
    /// The chunks in `entries` (a sync message's change entries, each possibly a bundle). `None`
    /// when they do not split into chunks (the message decoder already refused those).
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Option<Arrived> {
        let mut out = Arrived::default();
        for entry in entries {
            for (kind, chunk) in chunks::split(entry).ok()? {
                // `split` passes documents and (compressed or plain) changes only.
                if kind == chunks::DOCUMENT {
                    out.documents += 1;
                } else {
                    out.changes += 1;
                }
                out.chunks.push(chunk.to_vec());
            }
        }
        Some(out)
    }

    /// What to persist, when `doc` (which had `changes_before` changes and `held_back_before`
    /// changes waiting for dependencies before the write) shows that these chunks are exactly
    /// what the write added: every change chunk applied and new (the change count grew by their
    /// number, nothing is held back for missing dependencies), or one saved document loaded into
    /// an empty document. `None` otherwise (a duplicate, a change waiting for its dependencies, a
    /// document merged into existing history), and the store asks Automerge.
    pub(crate) fn verify(
        self,
        doc: &Automerge,
        changes_before: u64,
        held_back_before: usize,
    ) -> Option<NewChanges> {
        // Changes held back before the write may be applied by it: they are new too.
        if held_back_before > 0 || !doc.get_missing_deps(&[]).is_empty() {
            return None;
        }
        let added = doc.stats().num_changes.checked_sub(changes_before)?;
        match (self.documents, self.changes) {
            (0, n) if n > 0 && n == added => Some(NewChanges::Changes(self.chunks)),
            (1, 0) if changes_before == 0 && added > 0 => {
                self.chunks.into_iter().next().map(NewChanges::Document)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc_with(n: i64) -> Automerge {
        let mut doc = Automerge::new();
        for i in 0..n {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "n", i).unwrap();
            tx.commit();
        }
        doc
    }

    fn applied(doc: &mut Automerge, bytes: &[u8]) -> (u64, Option<NewChanges>) {
        let before = doc.stats().num_changes;
        let arrived = Arrived::of([bytes]).unwrap();
        doc.load_incremental(bytes).unwrap();
        (before, arrived.verify(doc, before, 0))
    }

    #[test]
    fn new_changes_are_kept_as_they_arrived() {
        let source = doc_with(3);
        let mut doc = Automerge::new();
        let bytes = source.save_after(&[]);
        match applied(&mut doc, &bytes).1 {
            Some(NewChanges::Changes(c)) => assert_eq!(c.concat(), bytes),
            _ => panic!("three new changes were not kept"),
        }
    }

    #[test]
    fn a_duplicate_or_a_held_back_change_falls_back_to_automerge() {
        let source = doc_with(3);
        let all = source.get_changes(&[]);
        // The first change again, with the second: only one is new.
        let mut doc = Automerge::new();
        doc.apply_changes([all[0].clone()]).unwrap();
        let bytes = [all[0].raw_bytes(), all[1].raw_bytes()].concat();
        assert!(applied(&mut doc, &bytes).1.is_none());
        // The third without the second: held back.
        let mut doc = Automerge::new();
        doc.apply_changes([all[0].clone()]).unwrap();
        assert!(applied(&mut doc, all[2].raw_bytes()).1.is_none());
    }

    #[test]
    fn a_whole_document_is_kept_only_into_an_empty_one() {
        let source = doc_with(3);
        let saved = source.save();
        let mut empty = Automerge::new();
        match applied(&mut empty, &saved).1 {
            Some(NewChanges::Document(d)) => assert_eq!(d, saved),
            _ => panic!("a document arriving whole was not kept"),
        }
        assert_eq!(empty.get_heads(), source.get_heads());
        let mut started = doc_with(1);
        assert!(applied(&mut started, &saved).1.is_none());
    }
}
