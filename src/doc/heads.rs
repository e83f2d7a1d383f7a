//! Version identifiers. A document's version is its set of heads (change hashes); the API shows it
//! as the hashes in hex joined by `.`, which is also the ETag value and what `?at=` accepts.

use automerge::ChangeHash;

use super::DocError;

/// Formats heads as the API shows them (sorted, hex, `.`-joined).
pub fn format(heads: &[ChangeHash]) -> String {
    // Written straight into one buffer: a query formats a version for every document it returns.
    let mut out = vec![b'.'; (heads.len() * 65).saturating_sub(1)];
    for (i, h) in heads.iter().enumerate() {
        // 32 bytes always fit their 64 hex digits.
        let _ = hex::encode_to_slice(h.0, &mut out[i * 65..i * 65 + 64]);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Heads as the store keeps them (raw 32-byte hashes) as Automerge change hashes.
pub fn from_stored(heads: &[[u8; 32]]) -> Vec<ChangeHash> {
    heads.iter().map(|h| ChangeHash(*h)).collect()
}

/// The quoted ETag for a version.
pub fn etag(heads: &[ChangeHash]) -> String {
    format!("\"{}\"", format(heads))
}

/// Parses heads as written by [`format`]; `,` is accepted as a separator too.
pub fn parse(s: &str) -> Result<Vec<ChangeHash>, DocError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DocError::InvalidHeads(s.to_string()));
    }
    let mut out = Vec::new();
    for part in s.split(['.', ',']) {
        let bytes = hex::decode(part.trim()).map_err(|_| DocError::InvalidHeads(s.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| DocError::InvalidHeads(s.to_string()))?;
        out.push(ChangeHash(arr));
    }
    if out.len() > 1024 {
        return Err(DocError::InvalidHeads("more than 1024 heads".into()));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses an `If-Match`/`If-None-Match` entity tag (quoted or not, weak or strong).
pub fn parse_etag(s: &str) -> Result<Vec<ChangeHash>, DocError> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let hs = vec![ChangeHash([1; 32]), ChangeHash([2; 32])];
        assert_eq!(parse(&format(&hs)).unwrap(), hs);
        assert_eq!(parse_etag(&etag(&hs)).unwrap(), hs);
        assert_eq!(parse_etag(&format!("W/{}", etag(&hs))).unwrap(), hs);
    }

    #[test]
    fn formats_hex_joined_by_dots() {
        assert_eq!(format(&[]), "");
        let one = ChangeHash([0xab; 32]);
        assert_eq!(format(&[one]), "ab".repeat(32));
        let three = [one, ChangeHash([0x01; 32]), ChangeHash([0xf0; 32])];
        let want = ["ab".repeat(32), "01".repeat(32), "f0".repeat(32)].join(".");
        assert_eq!(format(&three), want);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "xyz",
            "abcd",
            &"0".repeat(63),
            &format!("{}.", "a".repeat(64)),
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
