//! Limits and overload: each limit answers a clear problem, and beyond its concurrency limit the
//! node sheds load with 503 + Retry-After at once instead of queueing.

mod common;

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
    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
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
