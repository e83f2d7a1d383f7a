//! JSON Pointers (RFC 6901) resolved against an Automerge document.

use automerge::{ObjId, ObjType, Prop, ReadDoc};

use super::DocError;

/// Splits a JSON Pointer into its unescaped reference tokens (`""` is the whole document).
pub fn parse(pointer: &str) -> Result<Vec<String>, DocError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let invalid = |reason: &str| DocError::InvalidPointer {
        pointer: pointer.to_string(),
        reason: reason.to_string(),
    };
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| invalid("a pointer is empty or starts with `/`"))?;
    rest.split('/')
        .map(|tok| {
            let mut out = String::with_capacity(tok.len());
            let mut chars = tok.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(invalid("`~` must be followed by `0` or `1`")),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

/// Where a path's last token points: a key of a map, or a position in a list.
#[derive(Debug)]
pub enum Slot {
    Key {
        obj: ObjId,
        key: String,
    },
    /// `index` may equal `len` (from `-` or an explicit index), meaning "append".
    Index {
        obj: ObjId,
        index: usize,
        len: usize,
    },
}

impl Slot {
    pub fn prop(&self) -> Prop {
        match self {
            Slot::Key { key, .. } => Prop::Map(key.clone()),
            Slot::Index { index, .. } => Prop::Seq(*index),
        }
    }

    pub fn obj(&self) -> &ObjId {
        match self {
            Slot::Key { obj, .. } | Slot::Index { obj, .. } => obj,
        }
    }
}

fn target_err(path: &str, reason: impl Into<String>) -> DocError {
    DocError::InvalidTarget {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn list_index(path: &str, tok: &str, len: usize) -> Result<usize, DocError> {
    if tok == "-" {
        return Ok(len);
    }
    // RFC 6901: no leading zeros, digits only.
    if tok.is_empty()
        || (tok.len() > 1 && tok.starts_with('0'))
        || !tok.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(target_err(path, format!("`{tok}` is not a list index")));
    }
    let i: usize = tok
        .parse()
        .map_err(|_| target_err(path, format!("`{tok}` is not a list index")))?;
    if i > len {
        return Err(target_err(
            path,
            format!("index {i} is past the end of a list of {len}"),
        ));
    }
    Ok(i)
}

/// Resolves every token to an existing object: the object the path names, and its type.
pub fn resolve_object<R: ReadDoc>(
    doc: &R,
    path: &str,
    tokens: &[String],
) -> Result<(ObjId, ObjType), DocError> {
    let mut obj = automerge::ROOT;
    let mut typ = ObjType::Map;
    for tok in tokens {
        let prop = match typ {
            ObjType::Map | ObjType::Table => Prop::Map(tok.clone()),
            ObjType::List => {
                let len = doc.length(&obj);
                let i = list_index(path, tok, len)?;
                if i == len {
                    return Err(DocError::PathNotFound(path.to_string()));
                }
                Prop::Seq(i)
            }
            ObjType::Text => return Err(target_err(path, "text has no children")),
        };
        match doc.get(&obj, prop)? {
            Some((automerge::Value::Object(t), id)) => {
                obj = id;
                typ = t;
            }
            Some((automerge::Value::Scalar(_), _)) => {
                return Err(target_err(
                    path,
                    format!("`{tok}` is a scalar, not a map, list or text"),
                ))
            }
            None => return Err(DocError::PathNotFound(path.to_string())),
        }
    }
    Ok((obj, typ))
}

/// Resolves all but the last token; the last names a slot in that container.
pub fn resolve_slot<R: ReadDoc>(doc: &R, path: &str, tokens: &[String]) -> Result<Slot, DocError> {
    let (last, parents) = tokens.split_last().ok_or_else(|| {
        target_err(
            path,
            "the empty path names the whole document; use PUT or PATCH",
        )
    })?;
    let (obj, typ) = resolve_object(doc, path, parents)?;
    match typ {
        ObjType::Map | ObjType::Table => Ok(Slot::Key {
            obj,
            key: last.clone(),
        }),
        ObjType::List => {
            let len = doc.length(&obj);
            let index = list_index(path, last, len)?;
            Ok(Slot::Index { obj, index, len })
        }
        ObjType::Text => Err(target_err(path, "text has no children; use a splice op")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc6901_examples() {
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
        assert_eq!(parse("/foo/0").unwrap(), vec!["foo", "0"]);
        assert_eq!(parse("/a~1b").unwrap(), vec!["a/b"]);
        assert_eq!(parse("/m~0n").unwrap(), vec!["m~n"]);
        assert_eq!(parse("/").unwrap(), vec![""]);
        assert!(parse("foo").is_err());
        assert!(parse("/a~2").is_err());
        assert!(parse("/a~").is_err());
    }
}
