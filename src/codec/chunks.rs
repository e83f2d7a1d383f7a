//! Concatenated Automerge chunks, as `POST .../changes` takes them: changes and whole saved
//! documents, each checked, so that garbage is refused instead of being silently skipped.

/// Why a body is not Automerge changes.
#[derive(Debug, thiserror::Error)]
#[error("the body is not Automerge changes: {0}")]
pub struct ChunkError(pub String);

/// What a posted body holds: changes, or a whole saved document.
pub enum Chunk {
    Changes(Vec<automerge::Change>),
    Document(Box<automerge::Automerge>),
}

const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Splits concatenated Automerge chunks (magic, checksum, type, LEB128 length, data) and checks
/// each one, so garbage is refused instead of being silently skipped.
pub fn parse_chunks(mut data: &[u8]) -> Result<Vec<Chunk>, ChunkError> {
    let bad = |why: &str| ChunkError(why.to_string());
    let mut changes = Vec::new();
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 10 || data[..4] != CHUNK_MAGIC {
            return Err(bad("expected a chunk header"));
        }
        let (mut len, mut shift, mut pos) = (0u64, 0u32, 9usize);
        loop {
            let b = *data.get(pos).ok_or_else(|| bad("truncated chunk length"))?;
            len |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or_else(|| bad("chunk length overflows"))?;
            pos += 1;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift > 63 {
                return Err(bad("chunk length overflows"));
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|e| *e <= data.len())
            .ok_or_else(|| bad("truncated chunk"))?;
        let chunk = &data[..end];
        if data[8] == 0 {
            let doc = automerge::Automerge::load_with_options(
                chunk,
                automerge::LoadOptions::new().on_partial_load(automerge::OnPartialLoad::Error),
            )
            .map_err(|e| bad(&e.to_string()))?;
            out.push(Chunk::Document(Box::new(doc)));
        } else {
            changes.push(automerge::Change::try_from(chunk).map_err(|e| bad(&e.to_string()))?);
        }
        data = &data[end..];
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
}
