//! The nesting depth of a JSON text, measured before parsing it.

/// The deepest nesting of arrays and objects in a JSON text (strings are skipped, escapes
/// included). Run before parsing, so a hostile body cannot make the parser recurse deeply.
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_depth_ignores_strings() {
        assert_eq!(
            super::json_depth(br#"{"a": [1, {"b": "[[[{{{"}], "c": "\\\"["}"#),
            3
        );
        assert_eq!(super::json_depth(b"1"), 0);
        assert_eq!(super::json_depth(b"[[[]]]"), 3);
    }
}
