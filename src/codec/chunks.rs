//! Concatenated Automerge chunks, as `POST .../changes` takes them: changes and whole saved
//! documents, each checked, so that garbage is refused instead of being silently skipped.

use super::leb128::leb128_u64;
use crate::doc::contain::contained;

/// Why a body is not Automerge changes.
#[derive(Debug, thiserror::Error)]
#[error("the body is not Automerge changes: {0}")]
pub struct ChunkError(pub String);

/// Decodes one change. Automerge panics on some malformed changes (an actor index beyond `u32`,
/// found by fuzzing): contained, that is an error like any other.
pub fn decode_change(bytes: &[u8]) -> Result<automerge::Change, String> {
    let change = contained("change", || automerge::Change::try_from(bytes))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    contained("change", || check_ops(&change)).map_err(|e| e.to_string())??;
    Ok(change)
}

/// Structural rules every valid change keeps, checked before Automerge applies it. Automerge
/// trusts them: a change with mark operations on the root map (found by fuzzing) makes it panic
/// inside a destructor while unwinding, an abort that no handler can contain, so one request
/// could stop a node. The root and the objects the change creates have known types; objects of
/// earlier changes are not checked here.
fn check_ops(change: &automerge::Change) -> Result<(), String> {
    use automerge::legacy::{Key, ObjectId, OpId, OpType};
    let expanded = change.decode();
    let (start, actor) = (change.start_op().get(), change.actor_id());
    // Objects this change creates: true for maps (keys), false for sequences (positions).
    let mut created: std::collections::HashMap<OpId, bool> = std::collections::HashMap::new();
    for (i, op) in expanded.operations.iter().enumerate() {
        let positional = matches!(op.key, Key::Seq(_));
        if op.insert && !positional {
            return Err(format!("operation {i}: an insert needs a list position"));
        }
        if matches!(op.action, OpType::MarkBegin(_) | OpType::MarkEnd(_)) && !op.insert {
            return Err(format!("operation {i}: a mark is inserted into a sequence"));
        }
        let map = match &op.obj {
            ObjectId::Root => Some(true),
            ObjectId::Id(id) => created.get(id).copied(),
        };
        match map {
            Some(true) if positional => {
                return Err(format!("operation {i}: a map has keys, not list positions"))
            }
            Some(false) if !positional => {
                return Err(format!("operation {i}: a sequence has positions, not keys"))
            }
            _ => {}
        }
        if let OpType::Make(t) = &op.action {
            let is_map = matches!(t, automerge::ObjType::Map | automerge::ObjType::Table);
            created.insert(OpId::new(start + i as u64, actor), is_map);
        }
    }
    Ok(())
}

/// What a posted body holds: changes, or a whole saved document.
pub enum Chunk {
    Changes(Vec<automerge::Change>),
    Document(Box<automerge::Automerge>),
}

const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Chunk types (the byte after the magic and checksum).
pub const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED_CHANGE: u8 = 2;

/// Splits concatenated chunks (magic, checksum, type, LEB128 length, data) into (type, bytes),
/// checking that every chunk is whole and of a type that sync and `save` produce. Bundles (type
/// 3) are neither: Automerge expands their run-length-encoded columns into memory without bound
/// (a 600-byte bundle made it allocate gigabytes, found by fuzzing), so they are refused before
/// Automerge sees them.
pub fn split(mut data: &[u8]) -> Result<Vec<(u8, &[u8])>, ChunkError> {
    let bad = |why: String| ChunkError(why);
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 10 || data[..4] != CHUNK_MAGIC {
            return Err(bad("expected a chunk header".into()));
        }
        let kind = data[8];
        if ![DOCUMENT, CHANGE, COMPRESSED_CHANGE].contains(&kind) {
            return Err(bad(format!(
                "chunk type {kind} is not accepted (only documents and changes)"
            )));
        }
        let (len, n) = leb128_u64(&data[9..]).ok_or_else(|| bad("bad chunk length".into()))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(9 + n))
            .filter(|e| *e <= data.len())
            .ok_or_else(|| bad("truncated chunk".into()))?;
        out.push((kind, &data[..end]));
        data = &data[end..];
    }
    Ok(out)
}

/// Parses a posted body: documents and changes, each decoded (Automerge work contained), so that
/// garbage is refused instead of being silently skipped.
pub fn parse_chunks(data: &[u8]) -> Result<Vec<Chunk>, ChunkError> {
    let bad = |why: String| ChunkError(why);
    let mut changes = Vec::new();
    let mut out = Vec::new();
    for (kind, chunk) in split(data)? {
        if kind == DOCUMENT {
            let doc = contained("saved document", || {
                automerge::Automerge::load_with_options(
                    chunk,
                    automerge::LoadOptions::new().on_partial_load(automerge::OnPartialLoad::Error),
                )
            })
            .map_err(|e| bad(e.to_string()))?
            .map_err(|e| bad(e.to_string()))?;
            out.push(Chunk::Document(Box::new(doc)));
        } else {
            changes.push(decode_change(chunk).map_err(bad)?);
        }
    }
    out.push(Chunk::Changes(changes));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_changes_and_refuses_garbage() {
        let mut doc = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "a", 1).unwrap();
        let first = doc.save_incremental();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "b", 2).unwrap();
        let second = doc.save_incremental();
        let both = [first.clone(), second].concat();
        match parse_chunks(&both).unwrap().as_slice() {
            [Chunk::Changes(c)] => assert_eq!(c.len(), 2),
            _ => panic!("expected two changes"),
        }
        assert!(parse_chunks(b"not automerge").is_err());
        assert!(
            parse_chunks(&first[..first.len() - 1]).is_err(),
            "truncated"
        );
        let mut bad_len = first.clone();
        bad_len.truncate(9);
        bad_len.extend_from_slice(&[0xff; 12]);
        assert!(parse_chunks(&bad_len).is_err(), "overlong length");
        assert!(
            matches!(parse_chunks(b"").unwrap().as_slice(), [Chunk::Changes(c)] if c.is_empty())
        );
    }

    #[test]
    fn bundles_are_refused() {
        let mut doc = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "a", 1).unwrap();
        let mut change = doc.save_incremental();
        change[8] = 3;
        let e = parse_chunks(&change).err().expect("refused");
        assert!(e.to_string().contains("chunk type 3"), "{e}");
    }

    /// Found by a longer fuzz run: mark operations on the root map made Automerge abort the
    /// process (a panic in a destructor while unwinding) when applied.
    #[test]
    fn a_change_that_aborts_automerge_is_refused_before_it_is_applied() {
        let input = include_bytes!("../../fuzz/regressions/changes-mark-on-root-aborts");
        let e = parse_chunks(input).err().expect("refused");
        assert!(e.to_string().contains("operation"), "{e}");
    }

    #[test]
    fn valid_changes_pass_the_structural_check() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        let text = doc
            .put_object(automerge::ROOT, "t", automerge::ObjType::Text)
            .unwrap();
        doc.splice_text(&text, 0, 0, "hello world").unwrap();
        let list = doc
            .put_object(automerge::ROOT, "l", automerge::ObjType::List)
            .unwrap();
        doc.insert(&list, 0, 1).unwrap();
        let map = doc
            .insert_object(&list, 1, automerge::ObjType::Map)
            .unwrap();
        doc.put(&map, "k", "v").unwrap();
        let mark = automerge::marks::Mark::new("bold".into(), true, 0, 5);
        doc.mark(&text, mark, automerge::marks::ExpandMark::After)
            .unwrap();
        doc.increment(automerge::ROOT, "c", 1).ok();
        let bytes = doc.save_incremental();
        let chunks = parse_chunks(&bytes).expect("a real change passes");
        assert!(matches!(chunks.as_slice(), [Chunk::Changes(c)] if !c.is_empty()));
    }

    /// The first input the `changes` fuzz target found: Automerge panicked decoding it.
    #[test]
    fn a_change_that_panics_automerge_is_an_error() {
        let input = include_bytes!("../../fuzz/regressions/changes-actor-index-overflow");
        assert!(parse_chunks(input).is_err());
        assert!(decode_change(input).is_err());
    }
}
