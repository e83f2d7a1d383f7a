//! Durability: graceful restarts, `kill -9` of a real process under write load, a corrupted
//! document record that must stay contained to that document, and the WAL synced before every
//! acknowledgement (which `kill -9` cannot show: the page cache survives it).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::http::{get_json, get_text};
use common::{client, corrupt_document, metric, scrape, NodeProcess, TestNode};
use concord::metrics::Metrics;
use concord::store::{DocKey, Store, StoreError, StoreOptions};
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[tokio::test]
async fn restart_keeps_every_document_and_the_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let node = TestNode::start(dir.path()).await;
    let id1: Value = get_json(&http, node.url("/v1/health")).await;
    for i in 0..50 {
        let r = http
            .put(node.url(&format!("/v1/collections/r/docs/d{i}")))
            .header("content-type", "application/json")
            .body(json!({"i": i, "s": format!("text {i}")}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    // Enough edits to one document to force snapshot compaction.
    for i in 0..300 {
        let r = http
            .patch(node.url("/v1/collections/r/docs/d0"))
            .header("content-type", "application/json")
            .body(json!({"n": i, "pad": "y".repeat(100)}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    // Read once, so each keeps a materialised copy (a write drops it; the next read builds it).
    for i in 0..50 {
        let _: Value = get_json(&http, node.url(&format!("/v1/collections/r/docs/d{i}"))).await;
    }
    node.stop().await;

    let node = TestNode::start(dir.path()).await;
    let id2: Value = get_json(&http, node.url("/v1/health")).await;
    assert_eq!(id1["node_id"], id2["node_id"]);
    for i in 1..50 {
        let v: Value = get_json(&http, node.url(&format!("/v1/collections/r/docs/d{i}"))).await;
        assert_eq!(v, json!({"i": i, "s": format!("text {i}")}));
    }
    let v: Value = get_json(&http, node.url("/v1/collections/r/docs/d0")).await;
    assert_eq!(v["n"], 299);
    // Those reads came from the materialised copies the reads before the restart kept, on disk:
    // no document was loaded.
    let misses = |m: &str| metric(m, "concord_cache_misses_total").unwrap_or(0.0);
    let m = get_text(&http, node.url("/metrics")).await;
    assert_eq!(misses(&m), 0.0, "{m}");
    // ...but from disk: RocksDB read data blocks (its block cache was empty after the restart);
    // a second read of the same document finds its block in memory.
    let block_reads = |m: &str| metric(m, "concord_block_reads_total").unwrap_or(0.0);
    let after_reads = block_reads(&m);
    assert!(after_reads >= 1.0, "{m}");
    let _: Value = get_json(&http, node.url("/v1/collections/r/docs/d1")).await;
    let m = get_text(&http, node.url("/metrics")).await;
    assert_eq!(block_reads(&m), after_reads, "{m}");
    // A write loads d0's (compacted) document from disk, and the next read sees it.
    let r = http
        .patch(node.url("/v1/collections/r/docs/d0"))
        .header("content-type", "application/json")
        .body(json!({"n": 300}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let m = get_text(&http, node.url("/metrics")).await;
    assert_eq!(misses(&m), 1.0, "{m}");
    let v: Value = get_json(&http, node.url("/v1/collections/r/docs/d0")).await;
    assert_eq!(
        (v["n"].clone(), v["pad"].as_str().map(str::len)),
        (json!(300), Some(100))
    );
    let feed: Value = get_json(&http, node.url("/v1/changes?limit=1000")).await;
    assert_eq!(feed["results"].as_array().unwrap().len(), 50);
    node.stop().await;
}

/// A crash loop: concurrent writers log every acknowledged write; the node is killed with SIGKILL
/// at a random moment (after a random number of acknowledged writes, from a printed seed that
/// `CONCORD_TEST_SEED` replays), ten times; after each restart the store opens cleanly and every
/// acknowledged write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_write() {
    let seed = common::test_seed("crash loop");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 1 + (rng % 300) as usize;
        let proc_ = NodeProcess::start(dir.path()).await;
        let url = proc_.url.clone();
        if round == 0 {
            // Create the documents first: a PUT by a writer would replace the others' fields.
            let http = client();
            for doc in 0..5 {
                let r = http
                    .put(format!("{url}/v1/collections/crash/docs/doc{doc}"))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        }
        // acknowledged[(doc, writer)] = highest acknowledged value
        let acked: Arc<Mutex<HashMap<(usize, usize), i64>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..8usize {
            let acked = acked.clone();
            let url = url.clone();
            writers.push(tokio::spawn(async move {
                let http = client();
                for n in 0..10_000i64 {
                    let doc = (n as usize) % 5;
                    let body = json!({format!("w{w}"): n, "round": round});
                    let r = http
                        .patch(format!("{url}/v1/collections/crash/docs/doc{doc}"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status() == 200 => {
                            acked.lock().await.insert((doc, w), n);
                        }
                        _ => return, // the node is gone
                    }
                }
            }));
        }
        // Kill after a random number of acknowledged writes.
        common::poll_until(
            "writes acknowledged",
            std::time::Duration::from_secs(60),
            || {
                let acked = acked.clone();
                async move {
                    acked
                        .lock()
                        .await
                        .values()
                        .map(|n| *n as usize + 1)
                        .sum::<usize>()
                        >= kill_after
                }
            },
        )
        .await;
        proc_.kill9();
        for w in writers {
            w.await.unwrap();
        }
        let acked = acked.lock().await.clone();
        assert!(!acked.is_empty());

        let proc_ = NodeProcess::start(dir.path()).await;
        let http = client();
        for ((doc, w), n) in &acked {
            let v: Value = get_json(
                &http,
                proc_.url(&format!("/v1/collections/crash/docs/doc{doc}")),
            )
            .await;
            let got = v[format!("w{w}")].as_i64().unwrap_or(-1);
            // Later writes to the same field may have landed unacknowledged; never fewer.
            assert!(
                got >= *n,
                "round {round}: doc{doc}.w{w} = {got}, but {n} was acknowledged"
            );
        }
        let status = proc_.terminate();
        assert!(status.success(), "graceful stop after recovery: {status:?}");
    }
}

#[tokio::test]
async fn corrupt_document_is_contained() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let node = TestNode::start_with(dir.path(), |c| c.compact_min_bytes = 1 << 30).await;
    for id in ["good", "bad"] {
        let r = http
            .put(node.url(&format!("/v1/collections/c/docs/{id}")))
            .header("content-type", "application/json")
            .body(json!({"v": id}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    node.stop().await;

    corrupt_document(dir.path(), "c", "bad");

    let node = TestNode::start(dir.path()).await;
    let r = http
        .get(node.url("/v1/collections/c/docs/bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["type"].as_str().unwrap().ends_with("document-corrupt"),
        "{v}"
    );
    let r = http
        .patch(node.url("/v1/collections/c/docs/bad"))
        .header("content-type", "application/json")
        .body("{\"x\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        500,
        "writes to the corrupt document fail too, without a crash"
    );
    // Everything else keeps working.
    let v: Value = get_json(&http, node.url("/v1/collections/c/docs/good")).await;
    assert_eq!(v, json!({"v": "good"}));
    let r = http
        .put(node.url("/v1/collections/c/docs/new"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    node.stop().await;
}

/// An acknowledged write has been fsynced: sequential PUTs are each their own write group, so
/// RocksDB's WAL-sync ticker (`concord_wal_syncs_total`) must rise by at least one between one
/// acknowledgement and the next. A write that only reached the page cache would survive
/// `kill -9` but not a power cut; this is the test that sees the difference.
#[tokio::test]
async fn every_acknowledged_write_syncs_the_wal_first() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    let syncs = || async {
        metric(&scrape(&http, &node.url).await, "concord_wal_syncs_total")
            .expect("concord_wal_syncs_total is exposed")
    };
    let mut last = syncs().await;
    for i in 0..20 {
        let r = http
            .put(node.url(&format!("/v1/collections/s/docs/d{}", i % 4)))
            .header("content-type", "application/json")
            .body(json!({"i": i}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "write {i}: {}", r.status());
        let now = syncs().await;
        assert!(
            now >= last + 1.0,
            "write {i} was acknowledged without a WAL sync (syncs {last} -> {now})"
        );
        last = now;
    }
    // Reads sync nothing: the counter is not simply counting requests.
    for i in 0..4 {
        let r = http
            .get(node.url(&format!("/v1/collections/s/docs/d{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(syncs().await, last, "reads must not sync the WAL");
    node.stop().await;
}

/// The counter behind `concord_wal_syncs_total` counts syncs, not writes: commits with
/// `sync_writes` off leave it where it was, commits with it on raise it by at least one each.
#[test]
fn wal_sync_counter_moves_only_for_synced_commits() {
    for sync_writes in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            sync_writes,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options, Metrics::new()).unwrap();
        let before = store.stats().wal_syncs;
        for i in 0..10 {
            let key = DocKey::new("s", &format!("d{i}")).unwrap();
            let body = json!({"i": i}).as_object().unwrap().clone();
            store
                .write::<_, StoreError>(&key, |doc, _| {
                    concord::doc::write::apply(doc, &concord::doc::write::Write::Replace(body), 1)?;
                    Ok(())
                })
                .unwrap();
        }
        let after = store.stats().wal_syncs;
        if sync_writes {
            assert!(
                after >= before + 10,
                "10 synced commits, syncs {before} -> {after}"
            );
        } else {
            assert_eq!(after, before, "unsynced commits must not count as syncs");
        }
    }
}

/// Index entries are written in the same batch as the commit they describe: after `kill -9` in
/// the middle of concurrent writes and deletes, every document the index finds has the indexed
/// value (no entry outlives its version: each key examined is a match), and every document with
/// the value is found (no version without its entry). The same holds for each document's
/// materialised JSON: `GET` answers exactly the listed version's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_never_splits_an_index_from_its_documents() {
    let seed = common::test_seed("index crash loop");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 50 + (rng % 400) as usize;
        let proc_ = NodeProcess::start(dir.path()).await;
        let url = proc_.url.clone();
        let http = client();
        if round == 0 {
            let r = common::http::send_json(
                &http,
                reqwest::Method::PUT,
                format!("{url}/v1/collections/ix/indexes/by_v"),
                &json!({"fields": ["v"]}),
            )
            .await;
            assert_eq!(r.status(), 201);
        }
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let (acked, url) = (acked.clone(), url.clone());
            writers.push(tokio::spawn(async move {
                let http = client();
                let mut x = w + 1;
                for _ in 0..100_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let doc = format!("{url}/v1/collections/ix/docs/d{}", x % 50);
                    let r = if x % 7 == 0 {
                        http.delete(&doc).send().await
                    } else {
                        let body = json!({"v": x % 10, "w": w});
                        common::http::try_send_json(&http, reqwest::Method::PUT, &doc, &body).await
                    };
                    match r {
                        Ok(_) => {
                            acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        common::poll_until("writes made", std::time::Duration::from_secs(60), || {
            let acked = acked.clone();
            async move { acked.load(std::sync::atomic::Ordering::Relaxed) >= kill_after }
        })
        .await;
        proc_.kill9();
        for w in writers {
            w.await.unwrap();
        }

        let proc_ = NodeProcess::start(dir.path()).await;
        let ix = proc_.url("/v1/collections/ix/indexes/by_v");
        common::poll_until("index ready", std::time::Duration::from_secs(30), || {
            let (http, ix) = (http.clone(), ix.clone());
            async move { get_json(&http, ix).await["state"] == "ready" }
        })
        .await;
        let listing = get_json(
            &http,
            proc_.url("/v1/collections/ix/docs?include_docs=true&limit=1000"),
        )
        .await;
        for v in 0..10u64 {
            let mut want: Vec<String> = listing["docs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["deleted"] == false && d["body"]["v"] == v)
                .map(|d| d["id"].as_str().unwrap().to_string())
                .collect();
            want.sort();
            let r = common::http::send_json(
                &http,
                reqwest::Method::POST,
                proc_.url("/v1/collections/ix/find"),
                &json!({"selector": {"v": v}, "use_index": "by_v", "limit": 1000}),
            )
            .await;
            let found: Value = r.json().await.unwrap();
            let mut got: Vec<String> = found["docs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string())
                .collect();
            got.sort();
            assert_eq!(got, want, "round {round}, v = {v}: {found}");
            assert_eq!(
                found["stats"]["keys_examined"], found["stats"]["returned"],
                "round {round}, v = {v}: an entry without its document version"
            );
        }
        // Each document's materialised JSON (what `GET` answers from) is its version's JSON too.
        for d in listing["docs"].as_array().unwrap() {
            if d["deleted"] == true {
                continue;
            }
            let id = d["id"].as_str().unwrap();
            let r = http
                .get(proc_.url(&format!("/v1/collections/ix/docs/{id}")))
                .send()
                .await
                .unwrap();
            let etag = r.headers()["etag"].to_str().unwrap().to_string();
            let body: Value = r.json().await.unwrap();
            assert_eq!(body, d["body"], "round {round}, {id}");
            assert_eq!(etag.trim_matches('"'), d["version"], "round {round}, {id}");
        }
        let status = proc_.terminate();
        assert!(status.success(), "graceful stop after recovery: {status:?}");
    }
}
