//! `GET /v1/me`: who the caller is to this node, so a client (the console, an app) can show only
//! what its token allows without decoding the token itself (static tokens are opaque).

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;

use crate::access::Access;
use crate::http::auth::Principal;
use crate::node::Node;

#[derive(Debug, Serialize)]
pub struct Me {
    /// A static token's name or a signed token's `sub`; `anonymous` without tokens.
    pub name: String,
    pub access: Access,
    /// The collections the caller may use (its list, or the collections its scopes name);
    /// `None`: all.
    pub collections: Option<Vec<String>>,
    /// Whether scopes narrow the caller to some documents.
    pub scoped: bool,
    /// Whether this node asks clients for a token (otherwise it serves loopback clients, or
    /// everyone with `allow_unauthenticated_remote`, without one).
    pub tokens_required: bool,
}

/// `GET /v1/me`
pub async fn me(
    State(node): State<Arc<Node>>,
    axum::Extension(who): axum::Extension<Principal>,
) -> axum::Json<Me> {
    axum::Json(Me {
        name: who.name.clone(),
        access: who.access,
        // Scopes limit the collections as much as a collection list does.
        collections: match &who.scopes {
            Some(s) => Some(
                s.collections()
                    .into_iter()
                    .filter(|c| who.may_use(c))
                    .map(str::to_string)
                    .collect(),
            ),
            None => who.collections.clone(),
        },
        scoped: who.scopes.is_some(),
        tokens_required: node.auth.any(),
    })
}
