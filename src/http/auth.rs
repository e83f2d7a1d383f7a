//! Client authentication and authorization, at the HTTP edge.
//!
//! A client presents `Authorization: Bearer <token>`, or `?access_token=` for browser WebSocket
//! clients that cannot set headers: a static token from the configuration, or a signed token
//! (JWT) an app's backend minted (see [`crate::access`]). Missing or invalid → 401; a token
//! without the right → 403. Tokens are never logged. Peer endpoints accept only the cluster
//! secret (see `peer_auth`), and this middleware accepts no secret.
//!
//! A token whose scopes narrow a collection to some documents sees only those: the handlers of
//! the routes listed in [`SCOPE_AWARE`] judge each document (one outside the scope does not
//! exist for the caller: 404, left out of lists). Every other route of such a collection is
//! refused to it with 403, so a route that does not judge documents can never leak one.
//!
//! With no tokens and no signing keys configured, the node serves loopback clients only, unless
//! `allow_unauthenticated_remote` says otherwise.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
pub use crate::access::{Access, Grant};
pub use crate::config::TokenConfig;
use crate::node::Node;
use crate::tls::Conn;

/// Resolves when `who`'s grant ends (see [`Grant::expires`]); never when it does not.
pub async fn expired(who: &Grant) {
    match who.remaining() {
        Some(left) => tokio::time::sleep(left).await,
        None => std::future::pending().await,
    }
}

/// `stream`, ended when `who`'s grant ends: a long-lived response must not outlast the token
/// that opened it (every request with it would be refused by then); the client reconnects with
/// a fresh one.
pub fn until_expired<S: futures::Stream>(
    stream: S,
    who: &Grant,
) -> impl futures::Stream<Item = S::Item> {
    let who = who.clone();
    futures::StreamExt::take_until(stream, async move { expired(&who).await })
}

/// Who is calling, as the handlers see it (a request extension).
#[derive(Debug, Clone)]
pub struct Principal(pub Arc<Grant>);

impl std::ops::Deref for Principal {
    type Target = Grant;
    fn deref(&self) -> &Grant {
        &self.0
    }
}

impl Principal {
    /// Anyone, when no tokens are configured.
    pub fn anonymous() -> Self {
        Principal(Arc::new(Grant::anonymous()))
    }

    /// A 403 unless this principal may write `collection`.
    pub fn check_write(&self, collection: &str) -> Result<(), ApiError> {
        if self.may_write(collection) {
            Ok(())
        } else if self.may_use(collection) {
            Err(ApiError::Forbidden(format!(
                "token `{}` is read-only",
                self.name
            )))
        } else {
            Err(self.not_allowed(collection))
        }
    }

    /// A 403 unless this principal has the `admin` access level.
    pub fn check_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "token `{}` lacks the `admin` access level this needs",
                self.name
            )))
        }
    }

    pub fn not_allowed(&self, collection: &str) -> ApiError {
        ApiError::Forbidden(format!(
            "token `{}` may not use collection `{collection}`",
            self.name
        ))
    }

    /// The answer for a document outside the caller's scope: it does not exist for them.
    pub fn hidden(&self, collection: &str, id: &str) -> ApiError {
        ApiError::NotFound(format!("document {collection}/{id} does not exist"))
    }
}

/// Routes (method, path suffix after `/v1/collections/{c}`) whose handlers judge every document
/// against the caller's scopes. A token narrowed to some documents of a collection may use only
/// these on it.
pub const SCOPE_AWARE: &[(&str, &str)] = &[
    ("GET", "/docs"),
    ("POST", "/docs"),
    ("GET", "/docs/{id}"),
    ("HEAD", "/docs/{id}"),
    ("PUT", "/docs/{id}"),
    ("PATCH", "/docs/{id}"),
    ("DELETE", "/docs/{id}"),
    ("POST", "/docs/{id}/ops"),
    ("GET", "/docs/{id}/history"),
    ("GET", "/docs/{id}/events"),
    ("GET", "/docs/{id}/changes"),
    ("POST", "/docs/{id}/changes"),
    ("POST", "/docs/{id}/sync"),
    ("POST", "/bulk-read"),
    ("POST", "/bulk-write"),
    ("POST", "/find"),
    ("GET", "/find"),
    ("POST", "/explain"),
];

/// The route shape of a path under `/v1/collections/{c}` (ids replaced by `{id}`).
fn route_suffix(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/collections/")?;
    let (_, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let parts: Vec<&str> = rest.split('/').collect();
    Some(match parts.as_slice() {
        [""] => String::new(),
        ["docs", _id, tail @ ..] => {
            let mut s = "/docs/{id}".to_string();
            for t in tail {
                s.push('/');
                s.push_str(t);
            }
            s
        }
        other => format!("/{}", other.join("/")),
    })
}

/// Whether a narrowed principal may use this request on its collection.
fn scope_aware(method: &Method, path: &str) -> bool {
    // The automerge-repo WebSocket judges every document it serves (see `api::websocket`).
    if path == "/v1/automerge-repo" {
        // GET over HTTP/1.1, CONNECT over HTTP/2 (RFC 8441).
        return *method == Method::GET || *method == Method::CONNECT;
    }
    let Some(suffix) = route_suffix(path) else {
        return false;
    };
    SCOPE_AWARE
        .iter()
        .any(|(m, s)| *m == method.as_str() && *s == suffix)
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
        // An HTTP/2 WebSocket opens with CONNECT; the socket judges each write itself.
        || (*method == Method::CONNECT && path == "/v1/automerge-repo")
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
        .get::<ConnectInfo<Conn>>()
        .and_then(|ConnectInfo(c)| {
            client_ip(c.remote, req.headers(), &node.config.trusted_proxies)
        });
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
        if !principal.may_use(&c) {
            return principal.not_allowed(&c).into_response();
        }
        if !is_read(req.method(), &path) {
            if let Err(e) = principal.check_write(&c) {
                return e.into_response();
            }
        }
        let managing_indexes = route_suffix(&path).is_some_and(|s| s.starts_with("/indexes/"))
            && matches!(*req.method(), Method::PUT | Method::DELETE);
        if managing_indexes {
            if let Err(e) = principal.check_admin() {
                return e.into_response();
            }
        }
        if !principal.sees_all_of(&c) && !scope_aware(req.method(), &path) {
            return ApiError::Forbidden(format!(
                "token `{}` sees only some documents of `{c}`, and {} {} does not serve \
                 document-scoped tokens yet",
                principal.name,
                req.method(),
                route_suffix(&path).unwrap_or_default()
            ))
            .into_response();
        }
    } else if !principal.is_admin() && needs_admin(&path) {
        return ApiError::Forbidden(format!(
            "token `{}` lacks the `admin` access level {path} needs",
            principal.name
        ))
        .into_response();
    }
    strip_access_token(&mut req);
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Routes about the node rather than documents.
fn needs_admin(path: &str) -> bool {
    path == "/v1/cluster" || path.starts_with("/v1/admin/")
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
/// The client's address for the loopback rule: the connection's peer, unless that is one of the
/// `trusted` proxies, whose `X-Forwarded-For` then names the client (the rightmost address that
/// is not itself a trusted proxy). A forwarded request is never loopback: `None` when the header
/// is missing or unreadable, or names a loopback address (which a client can write into the
/// header the proxy appends to).
fn client_ip(
    remote: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    let peer = remote.ip().to_canonical();
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str())
        .collect::<Result<Vec<_>, _>>()
        .ok()?
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = None;
    for hop in forwarded.iter().rev() {
        let ip = hop.parse::<IpAddr>().ok()?.to_canonical();
        client = Some(ip);
        if !is_trusted(ip) {
            break;
        }
    }
    client.filter(|ip| !is_loopback(*ip))
}

fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn authenticate(node: &Node, remote: Option<IpAddr>, req: &Request) -> Result<Principal, ApiError> {
    if !node.auth.any() {
        let loopback = remote.is_some_and(is_loopback);
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
    node.auth
        .authenticate(&given)
        .map(Principal)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let from = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        let ip = |a: &str| a.parse::<IpAddr>().ok();
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        // No trusted proxies: the header is ignored, whoever sends it.
        assert_eq!(client_ip(from("127.0.0.1:1"), &h, &[]), ip("127.0.0.1"));
        // A local proxy that is trusted: the client it names is not loopback.
        let local = [net("127.0.0.1/32")];
        assert_eq!(
            client_ip(from("127.0.0.1:1"), &h, &local),
            ip("203.0.113.7")
        );
        // An untrusted sender cannot claim anything.
        assert_eq!(
            client_ip(from("198.51.100.1:1"), &h, &local),
            ip("198.51.100.1")
        );
        // A chain: the rightmost untrusted hop is the client, whatever the client wrote first.
        h.insert(
            "x-forwarded-for",
            "127.0.0.1, 203.0.113.7, 10.0.0.2".parse().unwrap(),
        );
        let two = [net("127.0.0.1/32"), net("10.0.0.0/8")];
        assert_eq!(client_ip(from("127.0.0.1:1"), &h, &two), ip("203.0.113.7"));
        // v4-mapped v6 peers are matched as v4.
        assert_eq!(
            client_ip(from("[::ffff:127.0.0.1]:1"), &h, &two),
            ip("203.0.113.7")
        );
        // Garbage from a trusted proxy: never loopback.
        h.insert("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(client_ip(from("127.0.0.1:1"), &h, &local), None);
        // A client that writes a loopback address itself, through a proxy on its network.
        h.insert("x-forwarded-for", "127.0.0.1, 10.0.0.9".parse().unwrap());
        let lan = [net("10.0.0.0/8")];
        assert_eq!(client_ip(from("10.0.0.1:1"), &h, &lan), None);
        // A trusted proxy without the header (a TCP or TLS proxy): not loopback either.
        assert_eq!(
            client_ip(from("127.0.0.1:1"), &axum::http::HeaderMap::new(), &local),
            None
        );
    }

    #[test]
    fn rights() {
        let p = Principal(Arc::new(Grant {
            name: "t".into(),
            access: Access::Read,
            collections: Some(vec!["a".into()]),
            scopes: None,
            expires: None,
        }));
        assert!(p.may_use("a"));
        assert!(!p.may_use("b"));
        assert!(p.check_admin().is_err());
        assert!(p.check_write("a").is_err());
        assert!(Principal::anonymous().check_write("z").is_ok());
        assert!(is_read(&Method::POST, "/v1/collections/a/bulk-read"));
        assert!(!is_read(&Method::POST, "/v1/collections/a/bulk-write"));
    }

    #[test]
    fn route_shapes() {
        assert_eq!(
            route_suffix("/v1/collections/a/docs/x%2Fy").unwrap(),
            "/docs/{id}"
        );
        assert_eq!(
            route_suffix("/v1/collections/a/docs/x/ops").unwrap(),
            "/docs/{id}/ops"
        );
        assert_eq!(route_suffix("/v1/collections/a/docs").unwrap(), "/docs");
        assert_eq!(route_suffix("/v1/collections/a/find").unwrap(), "/find");
        assert_eq!(route_suffix("/v1/collections/a").unwrap(), "");
        assert!(scope_aware(&Method::GET, "/v1/collections/a/docs/x"));
        assert!(scope_aware(&Method::POST, "/v1/collections/a/docs/x/sync"));
        assert!(scope_aware(&Method::POST, "/v1/collections/a/bulk-write"));
        assert!(!scope_aware(&Method::GET, "/v1/collections/a/docs/x/nope"));
        assert!(scope_aware(&Method::GET, "/v1/automerge-repo"));
        assert!(!scope_aware(&Method::GET, "/v1/collections/a/indexes"));
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
            scopes: None,
        };
        assert!(!format!("{t:?}").contains("super-secret"));
    }
}
