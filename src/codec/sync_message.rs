//! Automerge sync messages from untrusted peers and clients.

use super::leb128::leb128_u64;

/// Decodes a sync message and checks what Automerge itself trusts: a Bloom filter claiming
/// billions of probes per entry makes Automerge allocate without bound (an abort no panic handler
/// can catch), zero bits per entry divides by zero, and a bundle among the changes can expand
/// without bound (see [`super::chunks::split`]).
pub fn decode_sync_message(bytes: &[u8]) -> Result<automerge::sync::Message, String> {
    let msg =
        crate::doc::contain::contained("sync message", || automerge::sync::Message::decode(bytes))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    for have in &msg.have {
        let raw = have.bloom.to_bytes();
        if raw.is_empty() {
            continue;
        }
        let mut at = 0;
        let mut next = || {
            let (v, n) = leb128_u64(raw.get(at..).unwrap_or(&[]))?;
            at += n;
            Some(v)
        };
        let (Some(_entries), Some(bits), Some(probes)) = (next(), next(), next()) else {
            return Err("malformed Bloom filter".into());
        };
        if !(1..=64).contains(&bits) || !(1..=32).contains(&probes) {
            return Err(format!(
                "Bloom filter out of range ({bits} bits per entry, {probes} probes)"
            ));
        }
    }
    for entry in msg.changes.iter() {
        for (kind, chunk) in super::chunks::split(entry).map_err(|e| e.0)? {
            if kind != 0 {
                super::chunks::decode_change(chunk)?;
            }
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_reads_and_refuses_overlong_numbers() {
        assert_eq!(leb128_u64(&[0x05]), Some((5, 1)));
        assert_eq!(leb128_u64(&[0xe5, 0x8e, 0x26]), Some((624_485, 3)));
        assert_eq!(leb128_u64(&[0x80; 11]), None);
        assert_eq!(leb128_u64(&[]), None);
    }

    /// Found by fuzzing: a bundle in the changes made Automerge allocate gigabytes.
    #[test]
    fn a_bundle_bomb_is_refused_before_automerge_sees_it() {
        let input = include_bytes!("../../fuzz/regressions/sync-message-bundle-bomb");
        let e = decode_sync_message(input).expect_err("refused");
        assert!(e.contains("chunk type 3"), "{e}");
    }
}
