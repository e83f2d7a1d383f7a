//! API tokens: read-only and read-write, limited to collections or not; 401 without a valid
//! token, 403 without the right; read-only sync clients sync down but cannot push; client tokens
//! and the cluster secret are never interchangeable. The table of gated routes is driven by the
//! router's own route list (checked against `openapi.yaml`), so a new route cannot slip by.

mod common;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ciborium::Value as Cbor;
use common::http::sync_to_end;
use common::{client, TestNode};
use concord::config::{Access, TokenConfig};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WRITER: &str = "writer-token-0123456789";
const READER: &str = "reader-token-0123456789";
const SCOPED: &str = "scoped-token-0123456789";
const CAROL: &str = "carol-token-0123456789";
const SECRET: &str = "cluster-secret-0123456789";

async fn node(dir: &std::path::Path) -> TestNode {
    TestNode::start_with(dir, |c| {
        c.cluster_secret = Some(SECRET.into());
        c.tokens = vec![
            TokenConfig {
                name: "writer".into(),
                token: WRITER.into(),
                access: Access::Write,
                collections: None,
                scopes: None,
            },
            TokenConfig {
                name: "reader".into(),
                token: READER.into(),
                access: Access::Read,
                collections: None,
                scopes: None,
            },
            TokenConfig {
                name: "scoped".into(),
                token: SCOPED.into(),
                access: Access::Write,
                collections: Some(vec!["a".into()]),
                scopes: None,
            },
            TokenConfig {
                name: "carol".into(),
                token: CAROL.into(),
                access: Access::Write,
                collections: None,
                scopes: Some(vec![concord::access::ScopeRule::parse_arg(
                    r#"automerge:{"owner":"$sub"}"#,
                )
                .unwrap()]),
            },
        ];
    })
    .await
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> u16 {
    let mut r = http.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn tokens_gate_every_client_request() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let http = client();
    let doc = |c: &str| n.url(&format!("/v1/collections/{c}/docs/d"));
    use reqwest::Method as M;

    // No token, a wrong one, or the cluster secret: 401 with a problem and WWW-Authenticate.
    for t in [None, Some("wrong-token-0123456789"), Some(SECRET)] {
        let r = http.get(doc("a"));
        let r = match t {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "token {t:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // Health and metrics stay open for probes.
    assert_eq!(
        call(&http, M::GET, n.url("/v1/health"), None, None).await,
        200
    );

    assert_eq!(
        call(&http, M::PUT, doc("a"), Some(WRITER), Some(json!({"v": 1}))).await,
        201
    );
    assert_eq!(
        call(&http, M::PUT, doc("b"), Some(WRITER), Some(json!({"v": 1}))).await,
        201
    );
    // Read-only: reads and bulk reads yes, writes no.
    assert_eq!(call(&http, M::GET, doc("a"), Some(READER), None).await, 200);
    assert_eq!(
        call(
            &http,
            M::POST,
            n.url("/v1/collections/a/bulk-read"),
            Some(READER),
            Some(json!({"ids": ["d"]}))
        )
        .await,
        200
    );
    for (m, body) in [
        (M::PUT, Some(json!({}))),
        (M::PATCH, Some(json!({"x": 1}))),
        (M::DELETE, None),
    ] {
        assert_eq!(call(&http, m, doc("a"), Some(READER), body).await, 403);
    }
    assert_eq!(
        call(
            &http,
            M::POST,
            n.url("/v1/collections/a/bulk-write"),
            Some(READER),
            Some(json!({"writes": []}))
        )
        .await,
        403
    );
    // Scoped to collection a.
    assert_eq!(
        call(
            &http,
            M::PATCH,
            doc("a"),
            Some(SCOPED),
            Some(json!({"s": 1}))
        )
        .await,
        200
    );
    assert_eq!(call(&http, M::GET, doc("b"), Some(SCOPED), None).await, 403);
    assert_eq!(
        call(&http, M::PUT, doc("b"), Some(SCOPED), Some(json!({}))).await,
        403
    );
    let v: Value = http
        .get(n.url("/v1/collections"))
        .bearer_auth(SCOPED)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["collections"],
        json!([{"name": "a", "docs": 1}]),
        "only its collections are listed"
    );
    assert_eq!(
        call(&http, M::GET, n.url("/v1/changes"), Some(SCOPED), None).await,
        403
    );
    assert_eq!(
        call(
            &http,
            M::GET,
            n.url("/v1/changes?collection=a"),
            Some(SCOPED),
            None
        )
        .await,
        200
    );
    assert_eq!(
        call(
            &http,
            M::GET,
            n.url("/v1/changes?collection=b"),
            Some(SCOPED),
            None
        )
        .await,
        403
    );
    // WebSocket clients in browsers pass the token in the query string.
    assert_eq!(
        call(
            &http,
            M::GET,
            n.url(&format!("/v1/collections/a/docs/d?access_token={READER}")),
            None,
            None
        )
        .await,
        200
    );
    // Peer endpoints take the cluster secret only, never a client token.
    let r = http
        .post(n.url("/v1/peer/hello"))
        .header("concord-cluster-secret", WRITER)
        .body(vec![])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    n.stop().await;
}

#[tokio::test]
async fn read_only_clients_sync_down_but_cannot_push() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let http = client();
    let url = n.url("/v1/collections/a/docs/s");
    assert_eq!(
        call(
            &http,
            reqwest::Method::PUT,
            url.clone(),
            Some(WRITER),
            Some(json!({"x": 1}))
        )
        .await,
        201
    );

    // Syncing down with a read-only token works.
    let mut doc = Automerge::new();
    let mut state = sync::State::new();
    let sync_url = format!("{url}/sync");
    sync_to_end(&http, &sync_url, "ro", Some(READER), &mut doc, &mut state).await;
    assert_eq!(
        doc.get(ROOT, "x").unwrap().and_then(|(v, _)| v.as_i64()),
        Some(1)
    );

    // Pushing a change with it is refused.
    doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "y", 2).map(|_| ()))
        .unwrap();
    let mut refused = false;
    for _ in 0..10 {
        let Some(msg) = doc.generate_sync_message(&mut state) else {
            break;
        };
        let pushes = !msg.changes.is_empty();
        let r = http
            .post(format!("{url}/sync"))
            .bearer_auth(READER)
            .header("concord-client-id", "ro")
            .body(msg.encode())
            .send()
            .await
            .unwrap();
        if pushes {
            assert_eq!(r.status(), 403);
            refused = true;
            break;
        }
        if r.status() == 200 {
            doc.receive_sync_message(
                &mut state,
                sync::Message::decode(&r.bytes().await.unwrap()).unwrap(),
            )
            .unwrap();
        }
    }
    assert!(refused, "the change was offered and refused");
    let v: Value = http
        .get(&url)
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"x": 1}));
    n.stop().await;
}

/// Route paths the router registers: every string literal in `src/api/mod.rs` that starts with
/// `/` is one (the file holds nothing else that does).
fn router_paths() -> BTreeSet<String> {
    let literals = |src: &'static str| src.split('"').skip(1).step_by(2);
    // The console's module also holds file paths in its tests: only its `.route(` lines count.
    let console = include_str!("../src/api/console.rs")
        .lines()
        .filter(|l| l.trim_start().starts_with(".route("))
        .flat_map(|l| l.split('"').skip(1).step_by(2).take(1));
    literals(include_str!("../src/api/mod.rs"))
        .chain(console)
        .filter(|lit| lit.starts_with('/'))
        // axum spells a catch-all `{*path}`; OpenAPI has no such form.
        .map(|lit| lit.replace("{*", "{"))
        .collect()
}

/// Path → methods declared in `openapi.yaml` (`paths:` entries are indented two spaces, their
/// operations four).
fn contract_routes() -> BTreeMap<String, BTreeSet<String>> {
    let spec = include_str!("../openapi.yaml");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut in_paths = false;
    let mut current = None;
    for line in spec.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(path) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            let path = format!("/{path}");
            out.entry(path.clone()).or_default();
            current = Some(path);
        } else if let Some(op) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "put", "post", "patch", "delete"].contains(&op) {
                if let Some(path) = &current {
                    out.entry(path.clone())
                        .or_default()
                        .insert(op.to_uppercase());
                }
            }
        }
    }
    out
}

/// Routes that answer without a token: the probes, and the console's static files (its login page
/// must load before anyone has typed a token; every call it makes then carries one).
const OPEN: [&str; 5] = ["/v1/health", "/metrics", "/ui", "/ui/", "/ui/{path}"];

fn is_peer(path: &str) -> bool {
    path.starts_with("/v1/peer/")
}

/// A concrete URL path for a route template.
fn concrete(path: &str) -> String {
    path.replace("{collection}", "a")
        .replace("{id}", "d")
        .replace("{path}", "js/app.js")
}

/// Asserts the response is a 401 a client can act on.
async fn assert_unauthorized(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    assert_eq!(
        r.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..]),
        "{what}: WWW-Authenticate"
    );
    assert_eq!(
        r.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..]),
        "{what}: content type"
    );
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["status"], 401, "{what}: problem body {body}");
}

/// With tokens configured, every client route, by every method it serves, is 401 without a token
/// and with an unknown one (also the query-string form and the cluster secret). The route list
/// comes from the router source and must match the contract, so a new route is covered (or this
/// test fails) without anyone editing it. Health and metrics stay open; peer routes want the
/// cluster secret, never a client token.
#[tokio::test]
async fn every_client_route_is_closed_without_a_valid_token() {
    let routes = contract_routes();
    let router = router_paths();
    assert_eq!(
        router,
        routes.keys().cloned().collect::<BTreeSet<_>>(),
        "the router and openapi.yaml must list the same routes"
    );
    assert!(
        router.len() >= 20,
        "route extraction found too little: {router:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let http = client();
    // The document exists, so a route that skipped authentication would answer 2xx, not 404.
    assert_eq!(
        call(
            &http,
            reqwest::Method::PUT,
            n.url("/v1/collections/a/docs/d"),
            Some(WRITER),
            Some(json!({"v": 1}))
        )
        .await,
        201
    );

    let mut probed = 0;
    for (path, methods) in &routes {
        if OPEN.contains(&path.as_str()) || is_peer(path) {
            continue;
        }
        assert!(!methods.is_empty(), "{path} declares no method");
        let url = n.url(&concrete(path));
        for method in ["GET", "PUT", "POST", "PATCH", "DELETE"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            for token in [
                None,
                Some("unknown-token-0123456789"),
                Some(SECRET),
                Some(""),
            ] {
                let mut req = http
                    .request(m.clone(), &url)
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let r = req.send().await.unwrap();
                let what = format!("{method} {path} with token {token:?}");
                if methods.contains(method) {
                    assert_unauthorized(r, &what).await;
                    probed += 1;
                } else {
                    // A method the route does not serve may say so, but must not serve anything.
                    assert!(
                        [401, 405].contains(&r.status().as_u16()),
                        "{what}: {}",
                        r.status()
                    );
                }
            }
            if methods.contains(method) {
                let r = http
                    .request(
                        m.clone(),
                        format!("{url}?access_token=unknown-token-0123456789"),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_unauthorized(r, &format!("{method} {path} with ?access_token")).await;
            }
        }
    }
    assert!(probed >= 4 * 18, "only {probed} route/method/token probes");

    // The streaming and long-poll forms of the feeds, and the WebSocket handshake itself.
    for path in [
        "/v1/changes?feed=longpoll&timeout=20000",
        "/v1/changes?feed=sse",
        "/v1/changes?collection=a&feed=longpoll",
        "/v1/collections/a/docs/d/events",
    ] {
        for token in [None, Some("unknown-token-0123456789")] {
            let mut req = http.get(n.url(path)).header("accept", "text/event-stream");
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = tokio::time::timeout(Duration::from_secs(10), req.send())
                .await
                .expect("a refused stream answers at once")
                .unwrap();
            assert_unauthorized(r, &format!("GET {path} with {token:?}")).await;
        }
    }
    let ws_url = n.url("/v1/automerge-repo").replacen("http", "ws", 1);
    for token in [None, Some("unknown-token-0123456789")] {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "WebSocket upgrade with {token:?}");
                assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            }
            Err(e) => panic!("WebSocket upgrade with {token:?}: {e}"),
            Ok(_) => panic!("WebSocket upgrade with {token:?} was accepted"),
        }
    }
    // ...while a valid token upgrades (so the 401s above are about the token).
    drop(common::http::automerge_repo_socket(&n.url(""), READER).await);

    // Probes stay open.
    for path in OPEN {
        let r = http.get(n.url(&concrete(path))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} without a token");
    }
    // Peer routes: a client token is no cluster secret.
    for path in routes.keys().filter(|p| is_peer(p)) {
        for token in [WRITER, READER] {
            let r = http
                .post(n.url(path))
                .header("concord-cluster-secret", token)
                .bearer_auth(token)
                .body(vec![])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{path} with a client token");
        }
    }
    n.stop().await;
}

fn cbor_field<'a>(v: &'a Cbor, key: &str) -> Option<&'a Cbor> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn cbor_text(v: &Cbor, key: &str) -> String {
    cbor_field(v, key)
        .and_then(|t| t.as_text())
        .unwrap_or_default()
        .to_string()
}

fn frame(pairs: Vec<(&str, Cbor)>) -> Message {
    let v = Cbor::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Cbor::Text(k.into()), v))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    Message::Binary(out.into())
}

/// A read-only token syncs a document down over the automerge-repo WebSocket, but the first sync
/// message carrying a change is answered with an `error` frame and the connection is closed; the
/// node's copy is unchanged.
#[tokio::test]
async fn read_only_websocket_client_pushing_changes_gets_an_error_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let http = client();
    let document_id = bs58::encode([7u8; 16]).with_check().into_string();
    let rest = n.url(&format!("/v1/collections/automerge/docs/{document_id}"));
    assert_eq!(
        call(
            &http,
            reqwest::Method::PUT,
            rest.clone(),
            Some(WRITER),
            Some(json!({"x": 1}))
        )
        .await,
        201
    );
    let (joined, doc, pushed, error) = push_over_websocket(&n, READER, &document_id, |tx| {
        tx.put(ROOT, "y", 2).map(|_| ())
    })
    .await;
    assert!(joined, "the node answered the join");
    assert_eq!(
        doc.get(ROOT, "x").unwrap().and_then(|(v, _)| v.as_i64()),
        Some(1),
        "the read-only client synced the document down"
    );
    assert!(pushed, "the client offered its change");
    let error = error.expect("an error frame before the close");
    assert!(error.contains("read-only"), "error frame says why: {error}");
    let v: Value = http
        .get(&rest)
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"x": 1}), "the refused change was not applied");
    n.stop().await;
}

/// A token scoped to its own documents (`{"owner": "$sub"}`) syncs its document down over the
/// WebSocket, but a change that would give the document away gets an `error` frame and a close,
/// and nothing of it is applied; another's document is `doc-unavailable` to it.
#[tokio::test]
async fn scoped_websocket_client_cannot_give_a_document_away() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let http = client();
    let mine = bs58::encode([8u8; 16]).with_check().into_string();
    let theirs = bs58::encode([9u8; 16]).with_check().into_string();
    let rest = |id: &str| n.url(&format!("/v1/collections/automerge/docs/{id}"));
    for (id, owner) in [(&mine, "carol"), (&theirs, "dave")] {
        let put = call(
            &http,
            reqwest::Method::PUT,
            rest(id),
            Some(WRITER),
            Some(json!({"x": 1, "owner": owner})),
        );
        assert_eq!(put.await, 201);
    }
    let (joined, _, pushed, error) =
        push_over_websocket(&n, CAROL, &theirs, |tx| tx.put(ROOT, "y", 2).map(|_| ())).await;
    assert!(
        joined && !pushed,
        "nothing of another's document reached the client"
    );
    assert_eq!(
        error.as_deref(),
        Some("doc-unavailable"),
        "as if it did not exist"
    );
    let (joined, doc, pushed, error) = push_over_websocket(&n, CAROL, &mine, |tx| {
        tx.put(ROOT, "owner", "dave").map(|_| ())
    })
    .await;
    assert!(joined && pushed);
    assert_eq!(
        doc.get(ROOT, "x").unwrap().and_then(|(v, _)| v.as_i64()),
        Some(1),
        "her own document synced down"
    );
    let error = error.expect("an error frame before the close");
    assert!(
        error.contains("outside the scope"),
        "error frame says why: {error}"
    );
    let v: Value = http
        .get(rest(&mine))
        .bearer_auth(WRITER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"x": 1, "owner": "carol"}),
        "the refused change was not applied"
    );
    n.stop().await;
}

/// Joins the automerge-repo WebSocket with `token`, requests `document_id`, syncs it down, makes
/// `edit` and offers it. Answers whether the node answered the join, the client's copy, whether
/// the change was offered, and the `error` frame's message (or `doc-unavailable`).
async fn push_over_websocket(
    n: &TestNode,
    token: &str,
    document_id: &str,
    edit: impl Fn(&mut automerge::transaction::Transaction<'_>) -> Result<(), automerge::AutomergeError>,
) -> (bool, Automerge, bool, Option<String>) {
    let document_id = document_id.to_string();
    let mut ws = common::http::automerge_repo_socket(&n.url(""), token).await;
    ws.send(frame(vec![
        ("type", Cbor::Text("join".into())),
        ("senderId", Cbor::Text("reader-peer".into())),
        (
            "supportedProtocolVersions",
            Cbor::Array(vec![Cbor::Text("1".into())]),
        ),
        (
            "peerMetadata",
            Cbor::Map(vec![(Cbor::Text("isEphemeral".into()), Cbor::Bool(true))]),
        ),
    ]))
    .await
    .unwrap();

    let mut doc = Automerge::new();
    let mut state = sync::State::new();
    let sync_frame = |kind: &str, msg: sync::Message| {
        frame(vec![
            ("type", Cbor::Text(kind.into())),
            ("senderId", Cbor::Text("reader-peer".into())),
            ("targetId", Cbor::Text(String::new())),
            ("documentId", Cbor::Text(document_id.clone())),
            ("data", Cbor::Bytes(msg.encode())),
        ])
    };
    // Phase 1: sync down until we hold x = 1. Phase 2: edit, offer the change, expect refusal.
    let mut joined = false;
    let mut pushed = false;
    let mut edited = false;
    let mut error = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the exchange finished in time");
        let msg = match next {
            None => break,
            Some(Err(_)) => break,
            Some(Ok(m)) => m,
        };
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let v: Cbor = ciborium::from_reader(&bytes[..]).unwrap();
        match cbor_text(&v, "type").as_str() {
            "peer" => {
                joined = true;
                let m = doc.generate_sync_message(&mut state).unwrap();
                ws.send(sync_frame("request", m)).await.unwrap();
            }
            "sync" => {
                let data = cbor_field(&v, "data").and_then(|d| d.as_bytes()).unwrap();
                doc.receive_sync_message(&mut state, sync::Message::decode(data).unwrap())
                    .unwrap();
                let synced_down = doc.get(ROOT, "x").unwrap().is_some();
                if synced_down && !edited {
                    edited = true;
                    doc.transact::<_, _, automerge::AutomergeError>(|tx| edit(tx))
                        .unwrap();
                }
                if let Some(m) = doc.generate_sync_message(&mut state) {
                    pushed |= !m.changes.is_empty();
                    ws.send(sync_frame("sync", m)).await.unwrap();
                }
            }
            "error" => error = Some(cbor_text(&v, "message")),
            "doc-unavailable" => {
                error = Some("doc-unavailable".into());
                break;
            }
            _ => {} // gossip the protocol allows; not this test's business
        }
    }
    (joined, doc, pushed, error)
}
