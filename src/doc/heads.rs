//! Version identifiers. A document's version is its set of heads (change hashes); the API shows it
//! as the hashes in hex joined by `.`, which is also the ETag value and what `?at=` accepts.

use automerge::ChangeHash;

use super::DocError;

/// Formats heads as the API shows them (sorted, hex, `.`-joined).
pub fn format(heads: &[ChangeHash]) -> String {
    let mut out = String::with_capacity(heads.len() * 65);
    for (i, h) in heads.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&hex::encode(h.0));
    }
    out
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
