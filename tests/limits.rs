//! Limits and overload: each limit answers a clear problem, and beyond its concurrency limit the
//! node sheds load with 503 + Retry-After at once instead of queueing.

mod common;

use common::http::{get_json, get_text};
use common::{client, TestNode};
use serde_json::{json, Value};

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (s, r.json().await.unwrap())
}

#[tokio::test]
async fn json_depth_and_document_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start_with(dir.path(), |c| {
        c.max_json_depth = 5;
        c.max_document_bytes = 4096;
    })
    .await;
    let http = client();
    let url = n.url("/v1/collections/l/docs/d");
    let deep = json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}});
    let r = http
        .put(&url)
        .header("content-type", "application/json")
        .body(deep.to_string())
        .send()
        .await
        .unwrap();
    let (s, v) = problem(r).await;
    assert_eq!(s, 400);
    assert!(v["detail"].as_str().unwrap().contains("limit is 5"), "{v}");
    let ok = json!({"a": {"b": {"c": 1}}});
    let r = http
        .put(&url)
        .header("content-type", "application/json")
        .body(ok.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Random text does not compress: 8 KB of it exceeds a 4 KB document limit.
    let big: String = (0..8000)
        .map(|i| char::from(b'a' + ((i * 7919 + i / 3) % 26) as u8))
        .collect();
    let r = http
        .patch(&url)
        .header("content-type", "application/json")
        .body(json!({"big": big}).to_string())
        .send()
        .await
        .unwrap();
    let (s, v) = problem(r).await;
    assert_eq!(s, 413);
    assert!(
        v["type"].as_str().unwrap().ends_with("document-too-large"),
        "{v}"
    );
    // Nothing of the refused write remains, and the document still takes writes.
    let v: Value = get_json(&http, &url).await;
    assert_eq!(v, ok);
    let r = http
        .patch(&url)
        .header("content-type", "application/json")
        .body(r#"{"small": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_capacity_requests_are_shed_with_503() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start_with(dir.path(), |c| c.max_concurrent_requests = 2).await;
    let http = client();
    // Five long polls (3 s) against a limit of two: two wait, three are shed at once.
    let mut polls: futures::stream::FuturesUnordered<_> = (0..5)
        .map(|_| {
            let (http, url) = (
                http.clone(),
                n.url("/v1/changes?feed=longpoll&since=now&timeout=3000"),
            );
            async move {
                let started = std::time::Instant::now();
                let r = http.get(url).send().await.unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                (status, retry, body, started.elapsed())
            }
        })
        .collect();
    for _ in 0..3 {
        let (status, retry, body, took) =
            tokio::time::timeout(std::time::Duration::from_secs(10), polls.next())
                .await
                .expect("shed requests answer at once")
                .unwrap();
        assert_eq!(status, 503);
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(
            body["type"].as_str().unwrap().ends_with("overloaded"),
            "{body}"
        );
        assert!(
            took < std::time::Duration::from_secs(5),
            "shed quickly, not queued: {took:?}"
        );
    }
    // The two that got in finish their 3 s wait normally, and capacity comes back.
    for _ in 0..2 {
        let (status, _, body, _) = polls.next().await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let r = http.get(n.url("/v1/collections")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    n.stop().await;
}

#[tokio::test]
async fn websocket_connections_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start_with(dir.path(), |c| c.max_websockets = 1).await;
    let ws_url = n.url("/v1/automerge-repo").replace("http://", "ws://");
    let (first, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("first connection");
    let second = tokio_tungstenite::connect_async(&ws_url).await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
    drop(first);
    n.stop().await;
}

/// The automerge-repo WebSocket protocol spoken by hand: CBOR frames over tokio-tungstenite.
mod ws {
    use std::time::Duration;

    use automerge::sync::SyncDoc;
    use ciborium::Value;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    pub type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// A fresh, valid automerge-repo DocumentId (base58check of 16 random bytes).
    pub fn new_doc_id() -> String {
        bs58::encode(uuid::Uuid::new_v4().as_bytes())
            .with_check()
            .into_string()
    }

    pub fn frame(pairs: Vec<(&str, Value)>) -> Message {
        let v = Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::Text(k.into()), v))
                .collect(),
        );
        let mut out = Vec::new();
        ciborium::into_writer(&v, &mut out).unwrap();
        Message::Binary(out.into())
    }

    pub fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    pub fn join(sender: &str) -> Message {
        frame(vec![
            ("type", text("join")),
            ("senderId", text(sender)),
            ("supportedProtocolVersions", Value::Array(vec![text("1")])),
            (
                "peerMetadata",
                Value::Map(vec![(text("isEphemeral"), Value::Bool(true))]),
            ),
        ])
    }

    /// `request` (or `sync`) for `doc_id` carrying `data`.
    pub fn sync(kind: &str, sender: &str, doc_id: &str, data: Vec<u8>) -> Message {
        frame(vec![
            ("type", text(kind)),
            ("senderId", text(sender)),
            ("targetId", text("server")),
            ("documentId", text(doc_id)),
            ("data", Value::Bytes(data)),
        ])
    }

    /// The first sync message of a client that has nothing of the document.
    pub fn empty_doc_message() -> Vec<u8> {
        automerge::Automerge::new()
            .generate_sync_message(&mut automerge::sync::State::new())
            .unwrap()
            .encode()
    }

    /// The integer at `/n` of a document.
    pub fn n_of(doc: &automerge::Automerge) -> Option<i64> {
        use automerge::ReadDoc;
        match doc.get(automerge::ROOT, "n").ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_i64(),
            _ => None,
        }
    }

    /// A decoded frame: its fields by name.
    pub struct Frame(pub Vec<(Value, Value)>);

    impl Frame {
        pub fn get(&self, key: &str) -> Option<&Value> {
            self.0
                .iter()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v)
        }
        pub fn text(&self, key: &str) -> &str {
            self.get(key).and_then(|v| v.as_text()).unwrap_or("")
        }
        pub fn kind(&self) -> &str {
            self.text("type")
        }
    }

    pub async fn connect(ws_url: &str) -> Socket {
        tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("websocket connects")
            .0
    }

    /// The next binary frame, or None once the connection is closed; fails after `within`.
    pub async fn next(s: &mut Socket, within: Duration) -> Option<Frame> {
        loop {
            let m = tokio::time::timeout(within, s.next())
                .await
                .expect("a frame (or the close) within the deadline");
            match m {
                Some(Ok(Message::Binary(b))) => {
                    let Value::Map(m) = ciborium::from_reader::<Value, _>(&b[..]).unwrap() else {
                        panic!("frame is not a map");
                    };
                    return Some(Frame(m));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Joins as `sender` and expects the `peer` answer.
    pub async fn joined(ws_url: &str, sender: &str) -> Socket {
        let mut s = connect(ws_url).await;
        s.send(join(sender)).await.unwrap();
        let f = next(&mut s, Duration::from_secs(10)).await.expect("peer");
        assert_eq!(f.kind(), "peer", "{:?}", f.0);
        s
    }
}

/// Scrapes one un-labelled figure from `/metrics`.
async fn metric(http: &reqwest::Client, n: &TestNode, name: &str) -> i64 {
    let text = get_text(http, n.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// One client naming 100,000 document ids gets an `error` frame once it has the default cap
/// (`max_ws_docs_per_connection`) open; the node's per-connection document tracking never grows
/// past the cap, and a client connected at the same time keeps syncing, live updates included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_documents_per_connection_are_capped() {
    use automerge::sync::SyncDoc;
    use futures::{SinkExt, StreamExt};
    use std::time::Duration;
    let cap = concord::Config::default().max_ws_docs_per_connection;
    assert_eq!(cap, 10_000);
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start(dir.path()).await;
    let http = client();
    let ws_url = n.url("/v1/automerge-repo").replace("http://", "ws://");
    let doc_id = ws::new_doc_id();
    let doc_url = n.url(&format!("/v1/collections/automerge/docs/{doc_id}"));
    let r = http
        .put(&doc_url)
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let mut good = ws::joined(&ws_url, "good").await;
    let flood = ws::joined(&ws_url, "flood").await;
    let done = tokio_util::sync::CancellationToken::new();

    // The flood: 100,000 `request`s for random ids, sent while its replies are read.
    let flood_task = {
        let done = done.clone();
        async move {
            let (mut sink, mut stream) = flood.split();
            let data = ws::empty_doc_message();
            let sender = tokio::spawn(async move {
                let mut sent = 0usize;
                for _ in 0..100_000 {
                    let m = ws::sync("request", "flood", &ws::new_doc_id(), data.clone());
                    if sink.send(m).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                sent
            });
            let mut unavailable = 0usize;
            let mut error = None;
            loop {
                let m = tokio::time::timeout(Duration::from_secs(120), stream.next())
                    .await
                    .expect("the flood is answered or refused within the deadline");
                let Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) = m else {
                    break;
                };
                let ciborium::Value::Map(f) = ciborium::from_reader(&b[..]).unwrap() else {
                    panic!("frame is not a map")
                };
                let f = ws::Frame(f);
                match f.kind() {
                    "doc-unavailable" => unavailable += 1,
                    "error" => {
                        error = Some(f.text("message").to_string());
                        break;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            // The node closes after the error: the rest of the stream ends.
            let closed = tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(Ok(m)) = stream.next().await {
                    assert!(!m.is_binary(), "no frames after the error");
                }
            })
            .await;
            assert!(closed.is_ok(), "the connection is closed after the error");
            done.cancel();
            let sent = sender.await.unwrap();
            (unavailable, error, sent)
        }
    };

    // Meanwhile: the largest number of documents the node tracks for WebSocket connections.
    let sampler = {
        let (http, done) = (http.clone(), done.clone());
        let n = &n;
        async move {
            let mut peak = 0;
            while !done.is_cancelled() {
                peak = peak.max(metric(&http, n, "concord_websocket_documents").await);
                tokio::task::yield_now().await;
            }
            peak
        }
    };

    // Meanwhile: the other client syncs the document, and gets a change made over REST.
    let good_task = async {
        let mut doc = automerge::Automerge::new();
        let mut state = automerge::sync::State::new();
        let first = doc.generate_sync_message(&mut state).unwrap().encode();
        good.send(ws::sync("request", "good", &doc_id, first))
            .await
            .unwrap();
        let mut patched = false;
        loop {
            let f = ws::next(&mut good, Duration::from_secs(60))
                .await
                .expect("the good client stays connected");
            assert_eq!(f.kind(), "sync", "{:?}", f.0);
            assert_eq!(f.text("documentId"), doc_id);
            let data = f.get("data").and_then(|d| d.as_bytes()).unwrap();
            let msg = automerge::sync::Message::decode(data).unwrap();
            doc.receive_sync_message(&mut state, msg).unwrap();
            if let Some(reply) = doc.generate_sync_message(&mut state) {
                good.send(ws::sync("sync", "good", &doc_id, reply.encode()))
                    .await
                    .unwrap();
            }
            match ws::n_of(&doc) {
                Some(1) if !patched => {
                    let r = http
                        .patch(&doc_url)
                        .json(&json!({"n": 2}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    patched = true;
                }
                Some(2) => break,
                _ => {}
            }
        }
        (good, doc, state)
    };

    let ((unavailable, error, sent), peak, (mut good, mut doc, mut state)) =
        tokio::join!(flood_task, sampler, good_task);
    eprintln!("flood: {sent} requests sent, {unavailable} answered, then {error:?}; peak tracked documents {peak}");
    let error = error.expect("the flooding connection gets an error frame");
    assert!(error.contains("max_ws_docs_per_connection"), "{error}");
    assert_eq!(unavailable, cap, "every document up to the cap is served");
    assert!(
        peak as usize <= cap + 1,
        "tracked documents stay within the cap (+1 for the good client): {peak}"
    );
    // The flood's documents are released with its connection.
    common::poll_until("flood documents released", Duration::from_secs(10), || {
        let http = http.clone();
        let n = &n;
        async move { metric(&http, n, "concord_websocket_documents").await == 1 }
    })
    .await;
    // And the good client still gets live changes.
    let r = http
        .patch(&doc_url)
        .json(&json!({"n": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    loop {
        let f = ws::next(&mut good, Duration::from_secs(10))
            .await
            .expect("still connected");
        let data = f.get("data").and_then(|d| d.as_bytes()).unwrap();
        doc.receive_sync_message(&mut state, automerge::sync::Message::decode(data).unwrap())
            .unwrap();
        if ws::n_of(&doc) == Some(3) {
            break;
        }
    }
    n.stop().await;
}

/// Many upgrades at once against a small `max_websockets`: the slot is reserved before the
/// upgrade, so no more than the limit ever get through; the rest get a 503 problem at once, and a
/// closed connection frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_websocket_upgrades_never_exceed_the_limit() {
    use std::time::Duration;
    const LIMIT: usize = 3;
    const CLIENTS: usize = 128;
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start_with(dir.path(), |c| c.max_websockets = LIMIT).await;
    let http = client();
    let ws_url = n.url("/v1/automerge-repo").replace("http://", "ws://");
    let addr = n.url.trim_start_matches("http://").to_string();
    // Connections first, then every handshake at once, each from its own task: the upgrades
    // reach the node as close together as the machine allows.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (start, ws_url) = (start.clone(), ws_url.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            tokio_tungstenite::client_async(ws_url, tcp).await
        }));
    }
    let attempts = futures::future::join_all(tasks).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a.unwrap() {
            Ok((s, _)) => open.push(s),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503);
                assert_eq!(resp.headers()["content-type"], "application/problem+json");
                assert_eq!(resp.headers()["retry-after"], "1");
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                assert!(
                    body["detail"].as_str().unwrap().contains("WebSocket"),
                    "{body}"
                );
                refused += 1;
            }
            Err(e) => panic!("unexpected upgrade failure: {e}"),
        }
    }
    assert_eq!(
        open.len(),
        LIMIT,
        "exactly the limit got through ({refused} refused)"
    );
    assert_eq!(
        metric(&http, &n, "concord_websockets_open").await,
        LIMIT as i64
    );
    // Closing one frees its slot.
    drop(open.pop());
    let reopened = std::sync::Arc::new(std::sync::Mutex::new(None));
    common::poll_until("a slot frees", Duration::from_secs(10), || {
        let (ws_url, reopened) = (ws_url.clone(), reopened.clone());
        async move {
            match tokio_tungstenite::connect_async(ws_url).await {
                Ok((s, _)) => {
                    *reopened.lock().unwrap() = Some(s);
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let again = reopened.lock().unwrap().take();
    assert!(again.is_some());
    assert_eq!(
        metric(&http, &n, "concord_websockets_open").await,
        LIMIT as i64
    );
    drop((open, again));
    n.stop().await;
}

/// A `join` naming a live connection's `senderId`: the same principal (token) replaces its own
/// connection; another principal is refused with an `error` frame and the original stays.
#[tokio::test]
async fn websocket_sender_id_is_owned_by_its_principal() {
    use concord::config::{Access, TokenConfig};
    use futures::SinkExt;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let token = |name: &str| TokenConfig {
        name: name.into(),
        token: format!("{name}-token-0123456789"),
        access: Access::Write,
        collections: None,
        scopes: None,
    };
    let n = TestNode::start_with(dir.path(), |c| {
        c.tokens = vec![token("alice"), token("bob")]
    })
    .await;
    let url = |who: &str| {
        n.url(&format!(
            "/v1/automerge-repo?access_token={who}-token-0123456789"
        ))
        .replace("http://", "ws://")
    };
    let t = Duration::from_secs(10);
    let mut alice = ws::joined(&url("alice"), "shared-peer").await;

    // Bob names Alice's senderId: refused, and Alice keeps her connection.
    let mut bob = ws::connect(&url("bob")).await;
    bob.send(ws::join("shared-peer")).await.unwrap();
    let f = ws::next(&mut bob, t).await.expect("an error frame");
    assert_eq!(f.kind(), "error");
    assert!(f.text("message").contains("in use"), "{:?}", f.0);
    assert!(ws::next(&mut bob, t).await.is_none(), "bob is disconnected");
    let doc = ws::new_doc_id();
    alice
        .send(ws::sync(
            "request",
            "shared-peer",
            &doc,
            ws::empty_doc_message(),
        ))
        .await
        .unwrap();
    let f = ws::next(&mut alice, t)
        .await
        .expect("alice is still connected");
    assert_eq!(f.kind(), "doc-unavailable");

    // Alice reconnecting under the same senderId replaces her old connection.
    let mut alice2 = ws::joined(&url("alice"), "shared-peer").await;
    assert!(
        ws::next(&mut alice, t).await.is_none(),
        "old connection replaced"
    );
    alice2
        .send(ws::sync(
            "request",
            "shared-peer",
            &doc,
            ws::empty_doc_message(),
        ))
        .await
        .unwrap();
    assert_eq!(
        ws::next(&mut alice2, t).await.unwrap().kind(),
        "doc-unavailable"
    );
    n.stop().await;

    // With no tokens there is one principal: a reconnect replaces the old connection as before.
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start(dir.path()).await;
    let ws_url = n.url("/v1/automerge-repo").replace("http://", "ws://");
    let mut first = ws::joined(&ws_url, "p").await;
    let _second = ws::joined(&ws_url, "p").await;
    assert!(ws::next(&mut first, t).await.is_none(), "replaced");
    n.stop().await;
}

/// SSE streams and long polls hold a `max_streams` slot for their whole life: with all slots
/// taken the next one gets a 503 problem with `Retry-After`, and a client that disconnects frees
/// its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_streams_are_limited() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start_with(dir.path(), |c| c.max_streams = 3).await;
    let http = client();
    let r = http
        .put(n.url("/v1/collections/s/docs/d"))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let feed = n.url("/v1/changes?feed=sse&since=now");
    let events = n.url("/v1/collections/s/docs/d/events");
    // Three slots: a feed stream, a document's events, and a long poll.
    let sse = http.get(&feed).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let doc_events = http.get(&events).send().await.unwrap();
    assert_eq!(doc_events.status(), 200);
    let poll = {
        let (http, url) = (
            http.clone(),
            n.url("/v1/changes?feed=longpoll&since=now&timeout=20000"),
        );
        tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
    };
    common::poll_until("three streams open", Duration::from_secs(10), || {
        let http = http.clone();
        let n = &n;
        async move { metric(&http, n, "concord_streams_open").await == 3 }
    })
    .await;
    // Full: every kind of long-lived request is refused at once; short requests are not.
    for url in [
        feed.clone(),
        events.clone(),
        n.url("/v1/changes?feed=longpoll&since=now&timeout=20000"),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(5), http.get(&url).send())
            .await
            .expect("refused at once")
            .unwrap();
        assert_eq!(r.headers()["retry-after"], "1", "{url}");
        let (s, v) = problem(r).await;
        assert_eq!(s, 503, "{url}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("max_streams"), "{v}");
    }
    let r = http.get(n.url("/v1/changes")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A client that goes away frees its slot.
    drop(sse);
    let reopened = std::sync::Arc::new(std::sync::Mutex::new(None));
    common::poll_until("a stream slot frees", Duration::from_secs(20), || {
        let (http, feed, reopened) = (http.clone(), feed.clone(), reopened.clone());
        async move {
            let r = http.get(&feed).send().await.unwrap();
            let ok = r.status() == 200;
            if ok {
                *reopened.lock().unwrap() = Some(r);
            }
            ok
        }
    })
    .await;
    assert_eq!(metric(&http, &n, "concord_streams_open").await, 3);
    poll.abort();
    drop((doc_events, reopened));
    n.stop().await;
}

/// A collection-filtered feed behind more than one page's scan bound (10,000 entries) of other
/// collections: the long poll and the SSE stream find the match at once instead of stalling until
/// the next write, and the cursor they return has moved past the scanned entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_feed_progresses_past_other_collections() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start(dir.path()).await;
    let http = client();
    const OTHERS: usize = 10_500;
    for chunk in (0..OTHERS).collect::<Vec<_>>().chunks(1000) {
        let writes: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"id": format!("o{i}"), "op": "put", "body": {"i": i}}))
            .collect();
        let r = http
            .post(n.url("/v1/collections/other/bulk-write"))
            .json(&json!({ "writes": writes }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let r = http
        .put(n.url("/v1/collections/wanted/docs/needle"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, all) = {
        let r = http
            .get(n.url("/v1/changes?since=0&limit=1"))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let first_seq: u64 = all["results"][0]["cursor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // A plain page stops at its scan bound but still advances the cursor.
    let v: Value = get_json(&http, n.url("/v1/changes?collection=wanted&since=0")).await;
    assert!(v["results"].as_array().unwrap().is_empty(), "{v}");
    let scanned: u64 = v["last_cursor"].as_str().unwrap().parse().unwrap();
    assert!(
        scanned >= first_seq + 9_999,
        "cursor moved past the scan: {v}"
    );

    // Long poll: answers with the match at once (it waited for a write before).
    let started = Instant::now();
    let v: Value = get_json(
        &http,
        n.url("/v1/changes?collection=wanted&since=0&feed=longpoll&timeout=20000"),
    )
    .await;
    assert_eq!(v["results"][0]["id"], "needle", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let needle: u64 = v["results"][0]["cursor"].as_str().unwrap().parse().unwrap();
    assert!(needle > first_seq + OTHERS as u64 - 1, "{v}");
    assert_eq!(v["last_cursor"], v["results"][0]["cursor"], "{v}");
    // Nothing new: the long poll's cursor still moves to the end of what it scanned.
    let v: Value = get_json(
        &http,
        n.url("/v1/changes?collection=nothing&since=0&feed=longpoll&timeout=3000"),
    )
    .await;
    assert!(v["results"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(
        v["last_cursor"].as_str().unwrap(),
        needle.to_string(),
        "{v}"
    );

    // SSE: the match arrives promptly, after an id-only progress event, so an EventSource that
    // reconnects resumes past the scanned entries instead of rescanning them.
    let mut resp = http
        .get(n.url("/v1/changes?collection=wanted&since=0&feed=sse"))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = String::new();
    while !buf.contains("needle") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("the match arrives before the deadline")
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<u64> = buf
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 2, "{buf}");
    assert!(
        ids[0] >= first_seq + 9_999 && ids[0] < needle,
        "progress id: {buf}"
    );
    assert!(
        buf.starts_with(&format!("id: {}\n\n", ids[0])),
        "an id-only event (no data): {buf}"
    );
    assert_eq!(ids[1], needle, "{buf}");
    n.stop().await;
}
