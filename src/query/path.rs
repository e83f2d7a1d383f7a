//! Field paths: `project.id` names field `id` of the object in field `project`. A dot inside a
//! key is written `\.` and a backslash `\\` (`"a\\.b"` in JSON names the key `a.b`). A segment
//! that is a non-negative integer also indexes into an array (`tags.0`).

use serde_json::Value;

/// A parsed field path: its segments, and the text it was written as (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    segments: Vec<String>,
    text: String,
}

impl FieldPath {
    /// Parses a dotted path; `None` when it is empty or has an empty segment or a dangling
    /// escape.
    pub fn parse(text: &str) -> Option<FieldPath> {
        let mut segments = Vec::new();
        let mut cur = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('.' | '\\')) => cur.push(e),
                    _ => return None,
                },
                '.' => {
                    if cur.is_empty() {
                        return None;
                    }
                    segments.push(std::mem::take(&mut cur));
                }
                c => cur.push(c),
            }
        }
        if cur.is_empty() {
            return None;
        }
        segments.push(cur);
        Some(FieldPath {
            segments,
            text: text.to_string(),
        })
    }

    /// The path of the value itself (inside `$elemMatch`).
    pub fn root() -> FieldPath {
        FieldPath {
            segments: Vec::new(),
            text: String::new(),
        }
    }

    /// This path followed by `other`.
    pub fn join(&self, other: &FieldPath) -> FieldPath {
        let text = match (self.text.is_empty(), other.text.is_empty()) {
            (true, _) => other.text.clone(),
            (_, true) => self.text.clone(),
            _ => format!("{}.{}", self.text, other.text),
        };
        FieldPath {
            segments: self
                .segments
                .iter()
                .chain(&other.segments)
                .cloned()
                .collect(),
            text,
        }
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in `v`, if there is one.
    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut cur = v;
        for s in &self.segments {
            cur = match cur {
                Value::Object(m) => m.get(s)?,
                Value::Array(a) => a.get(s.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_dots_escapes_and_array_indexes() {
        let p = FieldPath::parse("project.id").unwrap();
        assert_eq!(p.segments(), ["project", "id"]);
        let p = FieldPath::parse(r"a\.b.c\\d").unwrap();
        assert_eq!(p.segments(), ["a.b", r"c\d"]);
        for bad in ["", ".a", "a.", "a..b", r"a\", r"a\x"] {
            assert!(FieldPath::parse(bad).is_none(), "{bad:?}");
        }
        let doc = json!({"a.b": 1, "p": {"id": 7}, "tags": ["x", "y"]});
        assert_eq!(
            FieldPath::parse(r"a\.b").unwrap().get(&doc),
            Some(&json!(1))
        );
        assert_eq!(FieldPath::parse("p.id").unwrap().get(&doc), Some(&json!(7)));
        assert_eq!(
            FieldPath::parse("tags.1").unwrap().get(&doc),
            Some(&json!("y"))
        );
        assert_eq!(FieldPath::parse("tags.2").unwrap().get(&doc), None);
        assert_eq!(FieldPath::parse("p.id.x").unwrap().get(&doc), None);
    }
}
