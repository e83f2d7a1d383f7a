//! Many clients writing one document at once: every field's last write is present, and
//! concurrent counter increments all count.

mod common;

use common::http::get_json;
use common::{client, TestNode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_to_different_fields_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    let url = node.url("/v1/collections/c/docs/shared");
    http.put(&url)
        .header("content-type", "application/json")
        .body(json!({"counter": 0}).to_string())
        .send()
        .await
        .unwrap();
    http.post(format!("{url}/ops"))
        .header("content-type", "application/json")
        .body(json!({"ops": [{"op": "counter", "path": "/hits"}]}).to_string())
        .send()
        .await
        .unwrap();

    let clients = 16;
    let writes = 25;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..writes {
                let r = http
                    .patch(&url)
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({format!("f{c}"): n, "nested": {format!("g{c}"): n}}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let r = http
                    .post(format!("{url}/ops"))
                    .header("content-type", "application/json")
                    .body(json!({"ops": [{"op": "increment", "path": "/hits"}]}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v: Value = get_json(&http, &url).await;
    for c in 0..clients {
        assert_eq!(v[format!("f{c}")], writes - 1, "{v}");
        assert_eq!(v["nested"][format!("g{c}")], writes - 1);
    }
    assert_eq!(v["hits"], clients * writes);
    node.stop().await;
}
