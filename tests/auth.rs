//! API tokens: read-only and read-write, limited to collections or not; 401 without a valid
//! token, 403 without the right; read-only sync clients sync down but cannot push; client tokens
//! and the cluster secret are never interchangeable.

mod common;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use common::{client, TestNode};
use concord::api::auth::{Access, TokenConfig};
use serde_json::{json, Value};

const WRITER: &str = "writer-token-0123456789";
const READER: &str = "reader-token-0123456789";
const SCOPED: &str = "scoped-token-0123456789";
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
            },
            TokenConfig {
                name: "reader".into(),
                token: READER.into(),
                access: Access::Read,
                collections: None,
            },
            TokenConfig {
                name: "scoped".into(),
                token: SCOPED.into(),
                access: Access::Write,
                collections: Some(vec!["a".into()]),
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
    for _ in 0..10 {
        let Some(msg) = doc.generate_sync_message(&mut state) else {
            break;
        };
        let r = http
            .post(format!("{url}/sync"))
            .bearer_auth(READER)
            .header("concord-client-id", "ro")
            .body(msg.encode())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => doc
                .receive_sync_message(
                    &mut state,
                    sync::Message::decode(&r.bytes().await.unwrap()).unwrap(),
                )
                .unwrap(),
            204 => break,
            s => panic!("sync answered {s}"),
        }
    }
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
