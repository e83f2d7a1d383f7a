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

/// The same clients over TLS: automerge-repo over `wss://` and Automerge over `https://`, to two
/// nodes that replicate with mutual TLS, the test CA given to Node.js as `NODE_EXTRA_CA_CERTS`
/// (which automerge-repo's WebSocket adapter, taking no TLS options, honours through `ws`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_clients_sync_over_tls() {
    use concord::tls::local_ca::{write_node, LocalCa, Validity};
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let pki = tempfile::tempdir().unwrap();
    let ca = LocalCa::new("js test CA").unwrap();
    let ca_path = pki.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let mut files = Vec::new();
    for i in 0..2 {
        let pem = ca
            .node(
                &format!("node-{i}"),
                &["127.0.0.1", "localhost"],
                Validity::Lasting,
            )
            .unwrap();
        files.push(write_node(pki.path(), &format!("node-{i}"), &pem).unwrap());
    }
    let tls = |c: &mut concord::Config, i: usize| {
        c.tls_cert = Some(files[i].cert.clone());
        c.tls_key = Some(files[i].key.clone());
        c.peer_tls_ca = Some(ca_path.clone());
        c.peer_mtls = true;
        c.cluster_secret = Some(SECRET.into());
        c.anti_entropy_interval_ms = 200;
    };
    let d0 = tempfile::tempdir().unwrap();
    let d1 = tempfile::tempdir().unwrap();
    let n0 = TestNode::start_with(d0.path(), |c| tls(c, 0)).await;
    let seed = n0.url.trim_start_matches("https://").to_string();
    let n1 = TestNode::start_with(d1.path(), |c| {
        tls(c, 1);
        c.peers = vec![seed];
    })
    .await;
    assert!(n0.url.starts_with("https://") && n1.url.starts_with("https://"));
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .arg(js.join("repo_websocket.test.mjs"))
        .arg(js.join("http_sync.test.mjs"))
        .current_dir(&js)
        .env("CONCORD_URLS", format!("{},{}", n0.url, n1.url))
        .env("NODE_EXTRA_CA_CERTS", &ca_path)
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "JavaScript client tests over TLS failed"
    );
    assert!(stdout.contains("# fail 0"), "no test may fail");
    assert!(!stdout.contains("# pass 0"), "tests must run");
    n0.stop().await;
    n1.stop().await;
}

/// Stock automerge-repo clients with per-user signed tokens (`tests/js/scoped_repo.test.mjs`):
/// scopes `{"members": {"$all": ["$sub"]}}` on the automerge collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_clients_see_only_their_scope() {
    use concord::access::tokens::{claims, mint_hs256};
    use concord::access::{Access, ScopeRule};
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let dir = tempfile::tempdir().unwrap();
    let secret: &[u8] = b"js-scoped-secret-0123456789abcdef0123";
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let n = TestNode::start_with(&dir.path().join("data"), |c| {
        c.jwt_secret_file = Some(secret_file);
    })
    .await;
    let rules = [ScopeRule::parse_arg(r#"automerge:{"members":{"$all":["$sub"]}}"#).unwrap()];
    let token = |sub: &str, access: Access, scoped: bool| {
        let c = claims(
            sub,
            access,
            scoped.then_some(&rules[..]),
            std::time::Duration::from_secs(600),
            None,
            None,
        );
        mint_hs256(secret, &c).unwrap()
    };
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .arg(js.join("scoped_repo.test.mjs"))
        .current_dir(&js)
        .env("CONCORD_URLS", &n.url)
        .env("CONCORD_SCOPED_URL", &n.url)
        .env("CONCORD_TOKEN_ALICE", token("alice", Access::Write, true))
        .env("CONCORD_TOKEN_BOB", token("bob", Access::Write, true))
        .env("CONCORD_TOKEN_ADMIN", token("ops", Access::Admin, false))
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "JavaScript client tests failed");
    assert!(stdout.contains("# fail 0"), "no test may fail");
    assert!(stdout.contains("# pass 1"), "the test must run");
    n.stop().await;
}
