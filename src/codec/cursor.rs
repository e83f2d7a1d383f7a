//! Changes-feed cursors (`since`, `Last-Event-ID`).

/// Where a reader of the changes feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// After this feed sequence number (`0`: from the beginning).
    After(u64),
    /// From the current end of the feed: only what is written from now on.
    Now,
}

/// Parses a cursor as clients send it: a cursor from this feed, `0`, or `now`.
pub fn parse(s: &str) -> Result<Cursor, String> {
    if s == "now" {
        return Ok(Cursor::Now);
    }
    // Only plain decimal digits: `+5` or ` 5` are not cursors this feed hands out.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid cursor `{s}`: use a `cursor` from this feed, `0` or `now`"
        ));
    }
    s.parse::<u64>()
        .map(Cursor::After)
        .map_err(|_| format!("invalid cursor `{s}`: larger than any cursor this feed hands out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(parse("0"), Ok(Cursor::After(0)));
        assert_eq!(parse("42"), Ok(Cursor::After(42)));
        assert_eq!(parse("now"), Ok(Cursor::Now));
        for bad in ["", "+5", " 5", "-1", "1e3", "18446744073709551616", "NOW"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
