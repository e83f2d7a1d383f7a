//! One bad document stays one bad document in a cluster: a node holding a corrupted record for
//! one document keeps replicating every other document in both directions (eager push and
//! anti-entropy's pulls, pushes and syncs), its peers keep it `up`, and the document it cannot
//! read is reported (metrics, `/v1/cluster`'s last repair) rather than failing whole batches.

mod common;

use std::time::Duration;

use common::{client, poll_until, TestNode};
use concord::Config;
use serde_json::{json, Value};

const SECRET: &str = "test-cluster-secret-0123456789";
const CONVERGE: Duration = Duration::from_secs(60);

fn cluster_config(c: &mut Config) {
    c.cluster_secret = Some(SECRET.into());
    c.anti_entropy_interval_ms = 200;
    // Changes stay in the changes column family (no snapshot), where the test corrupts one.
    c.compact_min_bytes = 1 << 30;
}

fn addr(n: &TestNode) -> String {
    n.url.trim_start_matches("http://").to_string()
}

async fn put(http: &reqwest::Client, node: &TestNode, id: &str, body: Value) {
    let r = http
        .put(node.url(&format!("/v1/collections/c/docs/{id}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {id}: {}", r.status());
}

async fn get(http: &reqwest::Client, node: &TestNode, id: &str) -> Option<Value> {
    let r = http
        .get(node.url(&format!("/v1/collections/c/docs/{id}")))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

async fn cluster(http: &reqwest::Client, node: &TestNode) -> Value {
    http.get(node.url("/v1/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The sum of a metric's samples whose line contains `filter` (a label, or "" for all).
async fn metric(http: &reqwest::Client, node: &TestNode, name: &str, filter: &str) -> f64 {
    let text = http
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Overwrites the first stored change of `c/{id}` with bytes Automerge cannot load.
fn corrupt(dir: &std::path::Path, id: &str) {
    let cfs = concord::store::cfs::ALL;
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, cfs).unwrap();
    let changes = db.cf_handle(concord::store::cfs::CHANGES).unwrap();
    let key = concord::store::DocKey::new("c", id).unwrap().change_key(0);
    assert!(db.get_cf(changes, &key).unwrap().is_some());
    db.put_cf(changes, &key, b"\x85\x6f\x4a\x83garbage-not-automerge")
        .unwrap();
}

/// Every node sees both others `up`.
async fn all_up(http: &reqwest::Client, nodes: &[&TestNode]) -> bool {
    for n in nodes {
        let v = cluster(http, n).await;
        let members = v["members"].as_array().cloned().unwrap_or_default();
        if members.len() != nodes.len() - 1 || members.iter().any(|m| m["state"] != "up") {
            return false;
        }
    }
    true
}

/// Each node has completed an anti-entropy round with each peer after `since_ms`.
async fn synced_since(http: &reqwest::Client, nodes: &[&TestNode], since_ms: u64) -> bool {
    for n in nodes {
        let v = cluster(http, n).await;
        for m in v["members"].as_array().cloned().unwrap_or_default() {
            if m["last_sync_ms"].as_u64().unwrap_or(0) <= since_ms {
                return false;
            }
        }
    }
    true
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_document_does_not_stop_replication_of_the_others() {
    let http = client();
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // Node A, alone, writes `bad` and `early`; then a disk fault garbles `bad`'s stored change.
    {
        let a = TestNode::start_with(da.path(), cluster_config).await;
        put(&http, &a, "bad", json!({"v": "a"})).await;
        put(&http, &a, "early", json!({"v": "early"})).await;
        a.stop().await;
    }
    corrupt(da.path(), "bad");

    // B and C, then A seeded with both: gossip completes the membership.
    let b = TestNode::start_with(db.path(), cluster_config).await;
    let c = TestNode::start_with(dc.path(), cluster_config).await;
    let seeds = vec![addr(&b), addr(&c)];
    let a = TestNode::start_with(da.path(), move |cfg| {
        cluster_config(cfg);
        cfg.peers = seeds;
    })
    .await;
    let nodes = [&a, &b, &c];
    assert!(get(&http, &a, "bad").await.is_none(), "A cannot read `bad`");

    // Every node pulls A's `bad` (which A cannot serve) in its rounds: with a failing batch, A's
    // peers would mark it down here.
    poll_until("every node sees its peers up", CONVERGE, || {
        all_up(&http, &nodes)
    })
    .await;
    // B writes its own `bad`: eager push and anti-entropy offer it to A, which cannot take it.
    put(&http, &b, "bad", json!({"v": "b"})).await;
    let mut written = vec![("early".to_string(), json!({"v": "early"}))];
    for (i, n) in nodes.iter().enumerate() {
        for k in 0..10 {
            let id = format!("during-{i}-{k}");
            let body = json!({"node": i, "k": k});
            put(&http, n, &id, body.clone()).await;
            written.push((id, body));
        }
    }
    // Rounds that meet `bad` on every path (pull from A, push to A, sync) complete with it.
    let t0 = now_ms();
    poll_until("rounds completed after the writes", CONVERGE, || {
        synced_since(&http, &nodes, t0)
    })
    .await;
    let t1 = now_ms();
    poll_until("more rounds completed", CONVERGE, || {
        synced_since(&http, &nodes, t1)
    })
    .await;
    assert!(all_up(&http, &nodes).await, "no peer was marked down");

    // Eager push from B to A still runs (a peer marked down gets no pushes): B's pushes to A go
    // on rising with B's new writes.
    let a_label = format!("peer=\"{}\"", addr(&a));
    let pushed_before = metric(&http, &b, "concord_push_changes_total", &a_label).await;
    for k in 0..10 {
        let id = format!("after-b-{k}");
        let body = json!({"after": k});
        put(&http, &b, &id, body.clone()).await;
        written.push((id, body));
    }
    poll_until("B pushed its new writes to A", CONVERGE, || async {
        metric(&http, &b, "concord_push_changes_total", &a_label).await >= pushed_before + 10.0
    })
    .await;
    for (i, n) in [&a, &c].iter().enumerate() {
        for k in 0..5 {
            let id = format!("after-{i}-{k}");
            let body = json!({"after": k, "on": i});
            put(&http, n, &id, body.clone()).await;
            written.push((id, body));
        }
    }

    // Every other document reaches every node.
    for n in nodes {
        for (id, body) in &written {
            poll_until(&format!("{id} on {}", n.url), CONVERGE, || async {
                get(&http, n, id).await.as_ref() == Some(body)
            })
            .await;
        }
    }
    // B and C agree on `bad` (B's version); A still cannot read its own copy.
    poll_until("C has B's `bad`", CONVERGE, || async {
        get(&http, &c, "bad").await == Some(json!({"v": "b"}))
    })
    .await;
    assert!(all_up(&http, &nodes).await, "no peer was marked down");

    // The bad document is reported, not hidden.
    assert!(metric(&http, &a, "concord_replication_docs_skipped_total", "").await >= 1.0);
    let view = cluster(&http, &a).await;
    let reported = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["last_repair"]["skipped"].as_array())
        .flatten()
        .any(|s| s["id"] == "bad" && s["collection"] == "c");
    assert!(reported, "A's last repair lists `bad`: {view:#}");

    a.stop().await;
    b.stop().await;
    c.stop().await;
}
