//! Offline-first clients over HTTP: the Automerge sync protocol with persisted per-client state,
//! raw changes by version, whole-document bytes, and per-document live events. The client here is
//! the Automerge library itself, as an app would use it.

mod common;

use automerge::sync;
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use common::http::{get_json, post_bytes, sync_to_end};
use common::{client, TestNode};
use serde_json::{json, Value};

const DOC: &str = "/v1/collections/notes/docs/n1";

#[tokio::test]
async fn offline_client_syncs_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let node = TestNode::start(dir.path()).await;
    let url = node.url(DOC);

    // The client creates the document offline.
    let mut doc = Automerge::new();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        let t = tx.put_object(ROOT, "title", automerge::ObjType::Text)?;
        tx.splice_text(&t, 0, 0, "groceries")?;
        tx.put(ROOT, "count", 1)?;
        Ok(())
    })
    .unwrap();
    let mut state = sync::State::new();
    sync_to_end(
        &http,
        &format!("{url}/sync"),
        "phone-1",
        None,
        &mut doc,
        &mut state,
    )
    .await;
    let v: Value = get_json(&http, &url).await;
    assert_eq!(v, json!({"title": "groceries", "count": 1}));

    // A REST write reaches the client at the next sync.
    let r = http
        .patch(&url)
        .header("content-type", "application/json")
        .body(r#"{"count": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Reconnecting starts a new session from the persisted state.
    let mut state = sync::State::decode(&state.encode()).unwrap();
    sync_to_end(
        &http,
        &format!("{url}/sync"),
        "phone-1",
        None,
        &mut doc,
        &mut state,
    )
    .await;
    assert_eq!(doc.get(ROOT, "count").unwrap().unwrap().0.as_i64(), Some(2));

    // 1,000 edits offline, then one reconnect: the node has them all, and the client sent about
    // the size of its new changes, not the whole document.
    let before = doc.get_heads();
    for i in 0..1000 {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "count", 3 + i)?;
            let t = tx.get(ROOT, "title")?.unwrap().1;
            tx.splice_text(&t, 0, 0, "x")?;
            Ok(())
        })
        .unwrap();
    }
    let new_bytes: usize = doc
        .get_changes(&before)
        .iter()
        .map(|c| c.raw_bytes().len())
        .sum();
    // Both sides restart: the client keeps its persisted state, the node its store.
    let persisted = state.encode();
    node.stop().await;
    let node = TestNode::start(dir.path()).await;
    let url = node.url(DOC);
    let mut state = sync::State::decode(&persisted).unwrap();
    let sent = sync_to_end(
        &http,
        &format!("{url}/sync"),
        "phone-1",
        None,
        &mut doc,
        &mut state,
    )
    .await;
    let v: Value = get_json(&http, &url).await;
    assert_eq!(v["count"], 1002);
    assert!(v["title"].as_str().unwrap().starts_with(&"x".repeat(1000)));
    assert!(
        sent < new_bytes * 2 + 2048,
        "sent {sent} bytes for {new_bytes} bytes of new changes"
    );
    eprintln!("1,000 offline edits: {new_bytes} B of changes, {sent} B sent");

    // Binary views of the same document.
    let r = http
        .get(&url)
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let loaded = Automerge::load(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(loaded.get_heads(), doc.get_heads());
    let since = concord::doc::heads::format(&before);
    let r = http
        .get(format!("{url}/changes?since={since}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    let mut behind = doc.fork_at(&before).unwrap();
    behind.load_incremental(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(behind.get_heads(), doc.get_heads());
    node.stop().await;
}

#[tokio::test]
async fn changes_made_by_a_client_can_be_posted_raw() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let node = TestNode::start(dir.path()).await;
    let url = node.url("/v1/collections/raw/docs/r1");
    let mut doc = Automerge::new();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "a", 1).map(|_| ()))
        .unwrap();
    let mut bytes = Vec::new();
    for c in doc.get_changes(&[]) {
        bytes.extend_from_slice(c.raw_bytes());
    }
    let r = http
        .post(format!("{url}/changes"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Idempotent.
    let r = post_bytes(&http, format!("{url}/changes"), bytes).await;
    assert_eq!(r.status(), 200);
    let v: Value = get_json(&http, &url).await;
    assert_eq!(v, json!({"a": 1}));
    // A change whose dependency the node lacks is refused, not silently parked.
    let base = doc.get_heads();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "b", 2).map(|_| ()))
        .unwrap();
    let mid = doc.get_heads();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "c", 3).map(|_| ()))
        .unwrap();
    let mut last = Vec::new();
    for c in doc.get_changes(&mid) {
        last.extend_from_slice(c.raw_bytes());
    }
    let r = post_bytes(&http, format!("{url}/changes"), last).await;
    assert_eq!(r.status(), 422);
    let mut rest = Vec::new();
    for c in doc.get_changes(&base) {
        rest.extend_from_slice(c.raw_bytes());
    }
    let r = post_bytes(&http, format!("{url}/changes"), rest).await;
    assert_eq!(r.status(), 200);
    let v: Value = get_json(&http, &url).await;
    assert_eq!(v, json!({"a": 1, "b": 2, "c": 3}));
    node.stop().await;
}

#[tokio::test]
async fn bad_sync_input_is_a_clear_4xx_and_harms_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let node = TestNode::start(dir.path()).await;
    let url = node.url(DOC);
    http.put(&url)
        .header("content-type", "application/json")
        .body(r#"{"ok": true}"#)
        .send()
        .await
        .unwrap();
    let cases: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
        (None, sync::State::new().encode(), "Concord-Client-Id"),
        (Some("bad id!"), vec![0x42], "Concord-Client-Id"),
        (
            Some("c1"),
            b"garbage".to_vec(),
            "not an Automerge sync message",
        ),
        (
            Some("c1"),
            vec![0x42, 0xff, 0xff, 0xff, 0xff, 0x0f],
            "not an Automerge sync message",
        ), // A Bloom filter claiming 2^32 - 1 probes would make Automerge allocate without bound.
        (
            Some("c1"),
            vec![
                0x42, 0, 0, 1, 0, 8, 1, 8, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0,
            ],
            "Bloom filter",
        ),
    ];
    for (client_id, body, msg) in cases {
        let mut r = http.post(format!("{url}/sync")).body(body);
        if let Some(c) = client_id {
            r = r.header("concord-client-id", c);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains(msg), "{v}");
    }
    for body in [
        b"garbage".to_vec(),
        vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, 1, 0xff],
        // Found by fuzzing: Automerge panics decoding this change (contained: a 400).
        include_bytes!("../fuzz/regressions/changes-actor-index-overflow").to_vec(),
    ] {
        let r = post_bytes(&http, format!("{url}/changes"), body).await;
        assert_eq!(r.status(), 400, "{}", r.text().await.unwrap());
    }
    let r = http
        .get(format!("{url}/changes?since=zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The document and the node are fine.
    let v: Value = get_json(&http, &url).await;
    assert_eq!(v, json!({"ok": true}));
    let mut doc = Automerge::new();
    let mut state = sync::State::new();
    sync_to_end(
        &http,
        &format!("{url}/sync"),
        "c2",
        None,
        &mut doc,
        &mut state,
    )
    .await;
    assert_eq!(
        doc.get(ROOT, "ok").unwrap().map(|(v, _)| v.as_bool()),
        Some(Some(true))
    );
    node.stop().await;
}

#[tokio::test]
async fn document_events_stream_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let node = TestNode::start(dir.path()).await;
    let url = node.url("/v1/collections/ev/docs/e1");
    http.put(&url)
        .header("content-type", "application/json")
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .unwrap();
    let mut resp = http
        .get(format!("{url}/events?include_body=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    read_until(&mut resp, &mut buf, "\"n\":1").await;
    // A change from a sync client shows up too.
    let r = http
        .patch(&url)
        .header("content-type", "application/json")
        .body(r#"{"n": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    read_until(&mut resp, &mut buf, "\"n\":2").await;
    node.stop().await;
}

async fn read_until(resp: &mut reqwest::Response, buf: &mut String, needle: &str) {
    while !buf.contains(needle) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
            .await
            .expect("event in time")
            .expect("stream")
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}
