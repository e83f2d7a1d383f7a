//! Real JavaScript clients (`tests/js`, Node.js with the npm packages pinned by its lockfile):
//! stock automerge-repo 2.x over WebSocket, and @automerge/automerge syncing over HTTP, against
//! two replicating nodes. `scripts/test.sh` installs the packages.

mod common;

use common::TestNode;

const SECRET: &str = "js-cluster-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_clients_sync_with_concord() {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/@automerge/automerge-repo").exists(),
        "the JavaScript test clients are not installed: run `npm install --prefix tests/js` (scripts/test.sh does)"
    );
    let d0 = tempfile::tempdir().unwrap();
    let d1 = tempfile::tempdir().unwrap();
    let n0 = TestNode::start_with(d0.path(), |c| {
        c.cluster_secret = Some(SECRET.into());
        c.anti_entropy_interval_ms = 200;
    })
    .await;
    let seed = n0.url.trim_start_matches("http://").to_string();
    let n1 = TestNode::start_with(d1.path(), move |c| {
        c.cluster_secret = Some(SECRET.into());
        c.peers = vec![seed];
        c.anti_entropy_interval_ms = 200;
    })
    .await;
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .arg(js.join("repo_websocket.test.mjs"))
        .arg(js.join("http_sync.test.mjs"))
        .current_dir(&js)
        .env("CONCORD_URLS", format!("{},{}", n0.url, n1.url))
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "JavaScript client tests failed");
    assert!(stdout.contains("# fail 0"), "no test may fail");
    assert!(!stdout.contains("# pass 0"), "tests must run");
    n0.stop().await;
    n1.stop().await;
}
