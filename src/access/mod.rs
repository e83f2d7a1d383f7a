//! Who may do what: access levels, scopes, and the signed tokens (JWT) that carry them.
//!
//! A caller holds a [`Grant`]: an access level (`read` < `write` < `admin`), optionally a list of
//! collections, and optionally [`Scopes`] that narrow collections to some of their documents.
//! Grants come from static tokens in the configuration or from JWTs an app's backend signs
//! ([`tokens::Verifier`]). This module judges; the HTTP layer asks it, and turns its answers into
//! 401, 403 and 404.

pub mod error;
pub mod scope;
pub mod tokens;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::AccessError;
pub use scope::{Scope, ScopeRule, Scopes};

/// What a caller may do, in increasing order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Reads, and syncing documents down; no writes.
    #[default]
    Read,
    /// Reads and writes of documents.
    Write,
    /// Everything, including what is not about documents: index management, cluster
    /// operations, backups.
    Admin,
}

/// What one caller may do, resolved from its token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// For logs and messages (a static token's name, a JWT's `sub`); never the token.
    pub name: String,
    pub access: Access,
    /// Collections it may use (`None`: all).
    pub collections: Option<Vec<String>>,
    /// Narrowing to documents (`None`: whole collections).
    pub scopes: Option<Arc<Scopes>>,
    /// When the grant ends, in Unix seconds (a signed token's `exp` with the verifier's
    /// leeway): long-lived streams and WebSocket connections it opened end then, as a request
    /// with the token would be refused. `None`: it does not (static tokens, no tokens).
    pub expires: Option<u64>,
}

impl Grant {
    /// Anyone, when the node has no tokens (loopback clients): everything.
    pub fn anonymous() -> Grant {
        Grant {
            name: "anonymous".into(),
            access: Access::Admin,
            collections: None,
            scopes: None,
            expires: None,
        }
    }

    /// How long the grant has left; `None` when it does not end.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.expires
            .map(|e| std::time::Duration::from_secs(e.saturating_sub(now)))
    }

    /// Whether the caller may use `collection` at all (some of its documents, at least).
    pub fn may_use(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == collection))
            && self.scopes.as_ref().is_none_or(|s| s.names(collection))
    }

    /// Whether the caller may write documents of `collection` (scopes then judge which).
    pub fn may_write(&self, collection: &str) -> bool {
        self.access >= Access::Write && self.may_use(collection)
    }

    pub fn is_admin(&self) -> bool {
        self.access == Access::Admin
    }

    /// Whether the caller sees every document of `collection` (no scope narrows it), so that
    /// nothing needs judging per document.
    pub fn sees_all_of(&self, collection: &str) -> bool {
        self.may_use(collection) && self.scopes.as_ref().is_none_or(|s| s.whole(collection))
    }

    /// Whether the caller sees the document `id` of `collection`, whose current JSON is `json`.
    pub fn sees(&self, collection: &str, id: &str, json: &Value) -> bool {
        self.may_use(collection)
            && self
                .scopes
                .as_ref()
                .is_none_or(|s| s.admits(collection, id, json))
    }

    /// Whether a write by the caller may leave the document as `doc` is now (judged on the
    /// merged result, under the document's lock): deleting a document it sees is its right;
    /// otherwise the document must stay in its scope, so a write can neither give a document
    /// away nor take one over.
    pub fn may_leave(&self, collection: &str, id: &str, doc: &automerge::Automerge) -> bool {
        crate::doc::tombstone::is_deleted(doc, None) || self.sees_doc(collection, id, doc)
    }

    /// Whether the caller sees this Automerge document as it is now: live, and its JSON in
    /// scope. A deleted document is seen by no narrowed caller (its last contents are not what
    /// a scope would be judged on).
    pub fn sees_doc(&self, collection: &str, id: &str, doc: &automerge::Automerge) -> bool {
        if self.sees_all_of(collection) {
            return true;
        }
        !crate::doc::tombstone::is_deleted(doc, None)
            && self.sees(
                collection,
                id,
                &Value::Object(crate::doc::json::to_json(doc, None)),
            )
    }

    /// The scopes narrowing `collection` (empty when the caller sees all of it).
    pub fn narrowing(&self, collection: &str) -> Vec<&Scope> {
        match &self.scopes {
            Some(s) if !s.whole(collection) => s.of(collection),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn levels_and_collections() {
        let g = Grant {
            name: "t".into(),
            access: Access::Write,
            collections: Some(vec!["a".into()]),
            scopes: None,
            expires: None,
        };
        assert!(g.may_write("a") && !g.may_use("b") && !g.is_admin());
        assert!(g.sees_all_of("a") && g.sees("a", "x", &json!({})));
        assert!(Access::Admin > Access::Write && Access::Write > Access::Read);
        let r = Grant {
            access: Access::Read,
            ..g
        };
        assert!(r.may_use("a") && !r.may_write("a"));
    }

    #[test]
    fn scopes_narrow_collections_to_documents() {
        let claims = json!({"sub": "alice"}).as_object().cloned().unwrap();
        let rules: Vec<ScopeRule> = serde_json::from_value(json!([
            {"collection": "notes", "selector": {"owner": "$sub"}},
            {"collection": "public"}
        ]))
        .unwrap();
        let g = Grant {
            name: "alice".into(),
            access: Access::Write,
            collections: None,
            scopes: Some(Arc::new(Scopes::bind(&rules, &claims).unwrap())),
            expires: None,
        };
        assert!(g.may_use("notes") && g.may_use("public") && !g.may_use("other"));
        assert!(!g.sees_all_of("notes") && g.sees_all_of("public"));
        assert!(g.sees("notes", "1", &json!({"owner": "alice"})));
        assert!(!g.sees("notes", "1", &json!({"owner": "bob"})));
        assert_eq!(g.narrowing("notes").len(), 1);
        assert!(g.narrowing("public").is_empty());
    }
}
