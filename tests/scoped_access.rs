//! Signed tokens (JWT) with scopes, over real HTTP: a document outside the caller's scope does
//! not exist for them (GET, history, bulk reads, listings, find), a write can neither give a
//! document away nor take one over (and a refused write leaves nothing behind), collection
//! counts are not told, routes that do not judge documents yet refuse such tokens, `admin` is
//! needed for index management and the cluster, and bad tokens are 401.

mod common;

use std::time::Duration;

use common::{client, TestNode};
use concord::access::tokens::{claims, mint_hs256};
use concord::access::{Access, ScopeRule};
use concord::config::TokenConfig;
use serde_json::{json, Value};

const SECRET: &[u8] = b"test-secret-for-hs256-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789";

async fn node(dir: &std::path::Path) -> TestNode {
    let secret = dir.join("jwt-secret");
    std::fs::write(&secret, SECRET).unwrap();
    TestNode::start_with(&dir.join("data"), |c| {
        c.jwt_secret_file = Some(secret);
        c.jwt_audience = Some("concord-tests".into());
        c.tokens = vec![TokenConfig {
            name: "ops".into(),
            token: ADMIN.into(),
            access: Access::Admin,
            collections: None,
            scopes: None,
        }];
    })
    .await
}

fn user(sub: &str, access: Access) -> String {
    let rules = [ScopeRule::parse_arg(r#"notes:{"owner":"$sub"}"#).unwrap()];
    let c = claims(
        sub,
        access,
        Some(&rules),
        Duration::from_secs(600),
        Some("concord-tests"),
        None,
    );
    mint_hs256(SECRET, &c).unwrap()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test]
async fn a_scoped_user_sees_and_changes_only_their_documents() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let api = Api {
        http: client(),
        base: n.url(""),
    };
    let (alice, bob) = (user("alice", Access::Write), user("bob", Access::Write));

    assert_eq!(
        api.call(
            &alice,
            "PUT",
            "/v1/collections/notes/docs/a1",
            Some(json!({"owner": "alice", "t": 1}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api.call(
            &bob,
            "PUT",
            "/v1/collections/notes/docs/b1",
            Some(json!({"owner": "bob", "t": 2}))
        )
        .await
        .0,
        201
    );
    // Creating a document for someone else: 403, and nothing was written.
    let (s, p) = api
        .call(
            &alice,
            "PUT",
            "/v1/collections/notes/docs/x",
            Some(json!({"owner": "bob"})),
        )
        .await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(
        api.call(ADMIN, "GET", "/v1/collections/notes/docs/x", None)
            .await
            .0,
        404
    );

    // Another's document does not exist for her, by any read.
    for path in [
        "/v1/collections/notes/docs/b1",
        "/v1/collections/notes/docs/b1/history",
    ] {
        assert_eq!(api.call(&alice, "GET", path, None).await.0, 404, "{path}");
    }
    assert_eq!(
        api.call(&alice, "GET", "/v1/collections/notes/docs/a1", None)
            .await
            .0,
        200
    );
    let (_, got) = api
        .call(
            &alice,
            "POST",
            "/v1/collections/notes/bulk-read",
            Some(json!({"ids": ["a1", "b1"]})),
        )
        .await;
    assert_eq!(got["results"][0]["status"], 200, "{got}");
    assert_eq!(got["results"][1]["status"], 404, "{got}");
    assert!(!got.to_string().contains("\"t\":2"), "{got}");

    // Nor by writes: changing it is 404, replacing it (a take-over) is 403; it stays bob's.
    assert_eq!(
        api.call(
            &alice,
            "PATCH",
            "/v1/collections/notes/docs/b1",
            Some(json!({"t": 9}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api.call(&alice, "DELETE", "/v1/collections/notes/docs/b1", None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.call(
            &alice,
            "PUT",
            "/v1/collections/notes/docs/b1",
            Some(json!({"owner": "alice"}))
        )
        .await
        .0,
        403
    );
    // Giving her own away is refused too (judged on the merged result).
    assert_eq!(
        api.call(
            &alice,
            "PATCH",
            "/v1/collections/notes/docs/a1",
            Some(json!({"owner": "bob"}))
        )
        .await
        .0,
        403
    );
    let (_, b1) = api
        .call(ADMIN, "GET", "/v1/collections/notes/docs/b1", None)
        .await;
    assert_eq!(b1, json!({"owner": "bob", "t": 2}));
    let (_, a1) = api
        .call(&alice, "GET", "/v1/collections/notes/docs/a1", None)
        .await;
    assert_eq!(a1, json!({"owner": "alice", "t": 1}));
    // A write that keeps it hers goes through.
    assert_eq!(
        api.call(
            &alice,
            "PATCH",
            "/v1/collections/notes/docs/a1",
            Some(json!({"t": 3}))
        )
        .await
        .0,
        200
    );

    // Listings: only hers, and no collection counts.
    let (_, list) = api
        .call(
            &alice,
            "GET",
            "/v1/collections/notes/docs?include_docs=true",
            None,
        )
        .await;
    let ids: Vec<&str> = list["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a1"], "{list}");
    // An id-prefix search finds only hers too: `b` matches bob's b1, which she does not see.
    for (prefix, want) in [("a", json!(["a1"])), ("b", json!([]))] {
        let (_, list) = api
            .call(
                &alice,
                "GET",
                &format!("/v1/collections/notes/docs?prefix={prefix}"),
                None,
            )
            .await;
        let ids: Vec<&str> = list["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(json!(ids), want, "prefix {prefix}: {list}");
    }
    // She can ask who she is to the node.
    let (s, me) = api.call(&alice, "GET", "/v1/me", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        me,
        json!({"name": "alice", "access": "write", "collections": ["notes"], "scoped": true,
               "tokens_required": true})
    );
    let (_, me) = api.call(ADMIN, "GET", "/v1/me", None).await;
    assert_eq!(
        (&me["name"], &me["access"], &me["scoped"]),
        (&json!("ops"), &json!("admin"), &json!(false))
    );
    let (_, cols) = api.call(&alice, "GET", "/v1/collections", None).await;
    assert_eq!(cols["collections"], json!([{"name": "notes"}]), "{cols}");
    let (_, cols) = api.call(ADMIN, "GET", "/v1/collections", None).await;
    assert_eq!(
        cols["collections"],
        json!([{"name": "notes", "docs": 2}]),
        "{cols}"
    );

    // find: the scope is a conjunct, served by an index on its field (never a scan).
    let (s, p) = api
        .call(
            &alice,
            "POST",
            "/v1/collections/notes/find",
            Some(json!({"selector": {}})),
        )
        .await;
    assert_eq!(s, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("owner"), "{p}");
    assert_eq!(
        api.call(
            &alice,
            "PUT",
            "/v1/collections/notes/indexes/by_owner",
            Some(json!({"fields": ["owner"]}))
        )
        .await
        .0,
        403,
        "index management needs admin"
    );
    assert_eq!(
        api.call(
            ADMIN,
            "PUT",
            "/v1/collections/notes/indexes/by_owner",
            Some(json!({"fields": ["owner"]}))
        )
        .await
        .0,
        201
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let found = loop {
        let (s, v) = api
            .call(
                &alice,
                "POST",
                "/v1/collections/notes/find",
                Some(json!({"selector": {"t": {"$gte": 0}}})),
            )
            .await;
        if s == 200 {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "index never served: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<&str> = found["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a1"], "{found}");
    assert_eq!(found["stats"]["index"], "by_owner", "{found}");
    assert_eq!(
        found["stats"]["keys_examined"], 0,
        "others' documents are not counted to her"
    );

    // The changes feed: her documents only; bob's feed has his.
    let (s, feed) = api
        .call(&alice, "GET", "/v1/changes?collection=notes", None)
        .await;
    assert_eq!(s, 200, "{feed}");
    let ids: Vec<&str> = feed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == "a1") && !ids.is_empty(), "{feed}");
    let (_, feed) = api
        .call(&bob, "GET", "/v1/changes?collection=notes", None)
        .await;
    let ids: Vec<&str> = feed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == "b1") && !ids.is_empty(), "{feed}");
    assert_eq!(
        api.call(&alice, "GET", "/v1/changes", None).await.0,
        403,
        "must name a collection"
    );

    // Raw changes, per-document events and HTTP sync: hers yes, his 404.
    for (path, want) in [
        ("/v1/collections/notes/docs/a1/changes", 200),
        ("/v1/collections/notes/docs/b1/changes", 404),
        ("/v1/collections/notes/docs/b1/events", 404),
    ] {
        assert_eq!(api.call(&alice, "GET", path, None).await.0, want, "{path}");
    }
    let sync = |id: &str, token: &str| {
        let doc = automerge::Automerge::new();
        let mut st = automerge::sync::State::new();
        use automerge::sync::SyncDoc;
        let msg = doc.generate_sync_message(&mut st).unwrap().encode();
        api.http
            .post(n.url(&format!("/v1/collections/notes/docs/{id}/sync")))
            .bearer_auth(token)
            .header("concord-client-id", "phone-1")
            .body(msg)
            .send()
    };
    assert_eq!(sync("b1", &alice).await.unwrap().status(), 404);
    assert_eq!(sync("a1", &alice).await.unwrap().status(), 200);

    // Changes that would give her document away are refused, and leave nothing behind.
    let bytes = api
        .http
        .get(n.url("/v1/collections/notes/docs/a1"))
        .bearer_auth(&alice)
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut doc = automerge::Automerge::load(&bytes).unwrap();
    let before = doc.get_heads();
    {
        use automerge::transaction::Transactable;
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "owner", "bob").unwrap();
        tx.commit();
    }
    let change: Vec<u8> = doc
        .get_changes(&before)
        .iter()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect();
    let r = api
        .http
        .post(n.url("/v1/collections/notes/docs/a1/changes"))
        .bearer_auth(&alice)
        .body(change)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (_, a1) = api
        .call(ADMIN, "GET", "/v1/collections/notes/docs/a1", None)
        .await;
    assert_eq!(a1["owner"], "alice", "{a1}");

    // Bulk writes are judged one by one, like single writes.
    let (s, got) = api
        .call(
            &alice,
            "POST",
            "/v1/collections/notes/bulk-write",
            Some(json!({"writes": [
                {"id": "a2", "op": "put", "body": {"owner": "alice"}},
                {"id": "b1", "op": "patch", "body": {"t": 7}},
                {"id": "x2", "op": "put", "body": {"owner": "bob"}},
            ]})),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    let statuses: Vec<u64> = got["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 404, 403], "{got}");
    assert_eq!(
        api.call(ADMIN, "GET", "/v1/collections/notes/docs/x2", None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.call(ADMIN, "GET", "/v1/collections/notes/docs/b1", None)
            .await
            .1["t"],
        2
    );

    // A live query: her documents enter, bob's never show (not even by id).
    let mut live = api
        .http
        .get(n.url("/v1/collections/notes/find?selector=%7B%7D"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !seen.contains("event: current") {
            let c = live.chunk().await.unwrap().expect("the stream goes on");
            seen.push_str(&String::from_utf8_lossy(&c));
        }
    })
    .await
    .expect("the initial result arrives");
    assert!(seen.contains("\"a1\"") && seen.contains("\"a2\""), "{seen}");
    assert!(!seen.contains("\"b1\""), "{seen}");
    drop(live);

    // Routes that do not judge documents yet refuse her on this collection.
    for (m, path) in [
        ("GET", "/v1/collections/notes/indexes"),
        ("GET", "/v1/cluster"),
    ] {
        assert_eq!(
            api.call(&alice, m, path, Some(json!({}))).await.0,
            403,
            "{m} {path}"
        );
    }
    // A document that leaves her scope (given to bob by someone allowed to) ends her stream of
    // its events, and from then on is bob's.
    let mut events = api
        .http
        .get(n.url("/v1/collections/notes/docs/a1/events"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("version"),
        "{first:?}"
    );
    assert_eq!(
        api.call(
            ADMIN,
            "PATCH",
            "/v1/collections/notes/docs/a1",
            Some(json!({"owner": "bob"}))
        )
        .await
        .0,
        200
    );
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while let Some(c) = events.chunk().await.unwrap() {
            seen.extend_from_slice(&c);
        }
        seen
    })
    .await
    .expect("the stream of a document that left her scope must end");
    assert!(
        !String::from_utf8_lossy(&rest).contains("bob"),
        "she saw the new owner"
    );
    assert_eq!(
        api.call(&alice, "GET", "/v1/collections/notes/docs/a1", None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.call(&bob, "GET", "/v1/collections/notes/docs/a1", None)
            .await
            .0,
        200
    );

    // Collections outside her scopes: 403.
    assert_eq!(
        api.call(&alice, "GET", "/v1/collections/other/docs/z", None)
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn bad_signed_tokens_are_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let api = Api {
        http: client(),
        base: n.url(""),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let base = json!({"sub": "eve", "aud": "concord-tests", "exp": now + 600, "access": "write"});
    let signed = |c: &Value| mint_hs256(SECRET, c).unwrap();
    let ok = signed(&base);
    assert_eq!(
        api.call(&ok, "GET", "/v1/collections/notes/docs/none", None)
            .await
            .0,
        404
    );

    let mut expired = base.clone();
    expired["exp"] = json!(now - 3600);
    let mut early = base.clone();
    early["nbf"] = json!(now + 3600);
    let mut other_aud = base.clone();
    other_aud["aud"] = json!("another-app");
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&base)
    );
    let forged = mint_hs256(b"not-the-secret-but-long-enough-0123456789", &base).unwrap();
    for (what, t) in [
        ("expired", signed(&expired)),
        ("not yet valid", signed(&early)),
        ("wrong audience", signed(&other_aud)),
        ("alg none", none),
        ("wrong signature", forged),
    ] {
        let (s, p) = api
            .call(&t, "GET", "/v1/collections/notes/docs/none", None)
            .await;
        assert_eq!(s, 401, "{what}: {p}");
    }
}

/// A stream or WebSocket opened with a signed token ends when the token does: an SSE changes
/// feed, a live query and a document's events end (the client's reconnect then needs a fresh
/// token), and an automerge-repo connection gets an `error` frame saying so, then a close.
/// The token here is valid for three more seconds (its `exp` is within the leeway).
#[tokio::test]
async fn streams_and_websockets_end_with_their_token() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let http = client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = now + 3 - concord::access::tokens::LEEWAY_SECS;
    let token = mint_hs256(
        SECRET,
        &json!({"sub": "eve", "aud": "concord-tests", "exp": exp, "access": "write"}),
    )
    .unwrap();
    let r = http
        .put(n.url("/v1/collections/notes/docs/n1"))
        .bearer_auth(&token)
        .json(&json!({"owner": "eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // All open before the token ends (after, each would be a 401).
    let mut open = Vec::new();
    for path in [
        "/v1/changes?feed=sse&since=0",
        "/v1/collections/notes/find?selector=%7B%7D",
        "/v1/collections/notes/docs/n1/events",
    ] {
        let r = http
            .get(n.url(path))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        open.push((path, r.bytes_stream()));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (path, mut body) in open {
        loop {
            match tokio::time::timeout_at(deadline, body.next()).await {
                Err(_) => panic!("{path}: the stream outlived its token"),
                Ok(Some(Ok(_))) => continue,
                Ok(_) => break,
            }
        }
    }
    // A WebSocket that stays idle after joining: ended by the expiry alone.
    let fresh = mint_hs256(
        SECRET,
        &json!({"sub": "eve", "aud": "concord-tests", "exp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() + 3 - concord::access::tokens::LEEWAY_SECS, "access": "write"}),
    )
    .unwrap();
    let mut ws = common::http::automerge_repo_socket(&n.url(""), &fresh).await;
    let join = ciborium::Value::Map(vec![
        ("type".into(), "join".into()),
        ("senderId".into(), "eve-peer".into()),
        (
            "supportedProtocolVersions".into(),
            ciborium::Value::Array(vec!["1".into()]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&join, &mut bytes).unwrap();
    ws.send(Message::Binary(bytes.into())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut error = None;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the connection outlived its token");
        match next {
            Some(Ok(Message::Binary(b))) => {
                let v: ciborium::Value = ciborium::from_reader(&b[..]).unwrap();
                let field = |k: &str| {
                    v.as_map()
                        .and_then(|m| m.iter().find(|(key, _)| key.as_text() == Some(k)))
                        .and_then(|(_, v)| v.as_text().map(str::to_string))
                };
                if field("type").as_deref() == Some("error") {
                    error = field("message");
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    let error = error.expect("an error frame before the close");
    assert!(error.contains("expired"), "{error}");
    n.stop().await;
}
