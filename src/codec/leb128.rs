//! LEB128 numbers, as Automerge encodes lengths and counts: shared by the sync-message and
//! change decoders.

/// Reads an unsigned LEB128 number; returns it and the bytes it took.
pub fn leb128_u64(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
