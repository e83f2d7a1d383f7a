//! Conditional requests: `If-Match` (optimistic concurrency on writes) and `If-None-Match`
//! (cheap re-validation of reads). Entity tags are document versions (heads).

use automerge::ChangeHash;
use axum::http::{HeaderMap, HeaderName};

use super::problem::ApiError;
use crate::doc::heads;

#[derive(Debug, Clone)]
pub enum Condition {
    /// `*`: any current version.
    Any,
    /// Any of these versions.
    Versions(Vec<Vec<ChangeHash>>),
}

impl Condition {
    pub fn from_headers(headers: &HeaderMap, name: HeaderName) -> Result<Option<Self>, ApiError> {
        let Some(raw) = headers.get(&name) else {
            return Ok(None);
        };
        let name = if name == axum::http::header::IF_MATCH {
            "If-Match"
        } else {
            "If-None-Match"
        };
        let raw = raw
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("{name} is not valid ASCII")))?;
        Self::parse(raw)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
    }

    pub fn parse(raw: &str) -> Result<Self, crate::doc::DocError> {
        if raw.trim() == "*" {
            return Ok(Condition::Any);
        }
        // Our tags never contain commas, so a list splits cleanly on them.
        raw.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(heads::parse_etag)
            .collect::<Result<Vec<_>, _>>()
            .map(Condition::Versions)
    }

    /// Whether a document at `current` (None: absent or deleted) satisfies the condition.
    pub fn matches(&self, current: Option<&[ChangeHash]>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Condition::Any, Some(_)) => true,
            (Condition::Versions(vs), Some(cur)) => vs.iter().any(|v| v.as_slice() == cur),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_star() {
        let a = ChangeHash([1; 32]);
        let b = ChangeHash([2; 32]);
        let list = format!("{}, W/{}", heads::etag(&[a]), heads::etag(&[b]));
        let c = Condition::parse(&list).unwrap();
        assert!(c.matches(Some(&[b])));
        assert!(!c.matches(Some(&[a, b])));
        assert!(!c.matches(None));
        assert!(Condition::parse("*").unwrap().matches(Some(&[a])));
        assert!(Condition::parse("\"nope\"").is_err());
    }
}
