//! Client authentication and authorization.
//!
//! API tokens come from the configuration (or a token file), each read-only or read-write and
//! optionally limited to some collections. With tokens configured, every client request (REST,
//! SSE, HTTP sync, WebSocket) needs one: `Authorization: Bearer <token>`, or `?access_token=` for
//! browser WebSocket clients that cannot set headers. Missing or unknown → 401; a token without
//! the right → 403. Tokens are compared in constant time and never logged. Peer endpoints accept
//! only the cluster secret (see `peer_auth`), and this middleware accepts no secret.
//!
//! With no tokens configured, the node serves loopback clients only, unless
//! `allow_unauthenticated_remote` says otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::problem::ApiError;
pub use crate::config::{Access, TokenConfig};
use crate::node::Node;

/// Who is calling, as the handlers see it (a request extension).
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub access: Access,
    pub collections: Option<Vec<String>>,
}

impl Principal {
    /// Anyone, when no tokens are configured.
    pub fn anonymous() -> Self {
        Principal {
            name: "anonymous".into(),
            access: Access::Write,
            collections: None,
        }
    }

    pub fn may_read(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == collection))
    }

    pub fn may_write(&self, collection: &str) -> bool {
        self.access == Access::Write && self.may_read(collection)
    }

    /// A 403 unless this principal may write `collection`.
    pub fn check_write(&self, collection: &str) -> Result<(), ApiError> {
        if self.may_write(collection) {
            Ok(())
        } else if self.may_read(collection) {
            Err(ApiError::Forbidden(format!(
                "token `{}` is read-only",
                self.name
            )))
        } else {
            Err(self.not_allowed(collection))
        }
    }

    pub fn not_allowed(&self, collection: &str) -> ApiError {
        ApiError::Forbidden(format!(
            "token `{}` may not use collection `{collection}`",
            self.name
        ))
    }
}

fn presented(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(|t| t.to_string())
    })
}

/// The collection a request addresses, from its path (`/v1/collections/{c}/...`), or the
/// automerge-repo collection for the WebSocket endpoint.
fn collection_of(node: &Node, path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some("collections"), Some(c)) if !c.is_empty() => Some(c.to_string()),
        (Some("v1"), Some("automerge-repo"), _) => Some(node.config.automerge_collection.clone()),
        _ => None,
    }
}

/// Whether the request only reads (POST `bulk-read` and `sync` read or are checked by their
/// handlers; `sync` refuses a read-only client's changes there).
fn is_read(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (*method == Method::POST
            && ["/bulk-read", "/sync", "/find", "/explain"]
                .iter()
                .any(|end| path.ends_with(end)))
}

pub async fn require_token(
    State(node): State<Arc<Node>>,
    mut req: Request,
    next: Next,
) -> Response {
    // Present when the server is run with connect info (as `server::run` does).
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a);
    let principal = match authenticate(&node, remote, &req) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let path = req.uri().path().to_string();
    if let Some(c) = collection_of(&node, &path) {
        if crate::store::keys::SYSTEM_COLLECTIONS.contains(&c.as_str()) {
            return ApiError::Forbidden(format!(
                "collection `{c}` is the node's own: manage indexes at /v1/collections/{{collection}}/indexes"
            ))
            .into_response();
        }
        if !principal.may_read(&c) {
            return principal.not_allowed(&c).into_response();
        }
        if !is_read(req.method(), &path) {
            if let Err(e) = principal.check_write(&c) {
                return e.into_response();
            }
        }
    }
    strip_access_token(&mut req);
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Removes `access_token` from the query, so handlers (which refuse unknown parameters) never see
/// it, and nothing downstream can log it.
fn strip_access_token(req: &mut Request) {
    let Some(query) = req.uri().query() else {
        return;
    };
    if !query.split('&').any(|kv| kv.starts_with("access_token=")) {
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.starts_with("access_token="))
        .collect();
    let path = req.uri().path();
    let pq = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Loopback, counting IPv4 clients of a dual-stack listener (`::ffff:127.0.0.1`).
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn authenticate(
    node: &Node,
    remote: Option<SocketAddr>,
    req: &Request,
) -> Result<Principal, ApiError> {
    let tokens = &node.config.tokens;
    if tokens.is_empty() {
        let loopback = remote.is_some_and(|r| is_loopback(r.ip()));
        if loopback || node.config.allow_unauthenticated_remote {
            return Ok(Principal::anonymous());
        }
        return Err(ApiError::Forbidden(
            "this node has no API tokens configured and serves loopback clients only".into(),
        ));
    }
    let Some(given) = presented(req) else {
        return Err(ApiError::Unauthorized(
            "an API token is required: `Authorization: Bearer <token>` (or `?access_token=` for WebSocket)".into(),
        ));
    };
    // Compare against every token, so timing does not tell which one nearly matched.
    let mut found = None;
    for t in tokens {
        if bool::from(t.token.as_bytes().ct_eq(given.as_bytes())) {
            found = Some(t);
        }
    }
    match found {
        Some(t) => Ok(Principal {
            name: t.name.clone(),
            access: t.access,
            collections: t.collections.clone(),
        }),
        None => Err(ApiError::Unauthorized("unknown API token".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights() {
        let p = Principal {
            name: "t".into(),
            access: Access::Read,
            collections: Some(vec!["a".into()]),
        };
        assert!(p.may_read("a"));
        assert!(!p.may_read("b"));
        assert!(p.check_write("a").is_err());
        assert!(Principal::anonymous().check_write("z").is_ok());
        assert!(is_read(&Method::POST, "/v1/collections/a/bulk-read"));
        assert!(!is_read(&Method::POST, "/v1/collections/a/bulk-write"));
    }

    #[test]
    fn loopback_includes_mapped_ipv4() {
        for ip in ["127.0.0.1", "127.0.0.12", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn tokens_are_not_printed() {
        let t = TokenConfig {
            name: "ci".into(),
            token: "super-secret-token-value".into(),
            access: Access::Write,
            collections: None,
        };
        assert!(!format!("{t:?}").contains("super-secret"));
    }
}
