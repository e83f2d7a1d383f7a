//! One bad document stays one bad document in a cluster: a node holding a corrupted record for
//! one document keeps replicating every other document in both directions (eager push and
//! anti-entropy's pulls, pushes and syncs), its peers keep it `up`, and the document it cannot
//! read is reported (metrics, `/v1/cluster`'s last repair) rather than failing whole batches.

mod common;

use std::time::Duration;

use common::http::{get_json, get_text};
use common::{client, corrupt_document, poll_until, TestNode};
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
    get_json(http, node.url("/v1/cluster")).await
}

/// The sum of a metric's samples whose line contains `filter` (a label, or "" for all).
async fn metric(http: &reqwest::Client, node: &TestNode, name: &str, filter: &str) -> f64 {
    let text = get_text(http, node.url("/metrics")).await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
    corrupt_document(da.path(), "c", "bad");

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

/// `POST /v1/peer/changes` answers per document: a document with a valid change is applied, one
/// whose change is garbage is rejected, and one whose change depends on a change the node lacks
/// is parked; none of them fails the others, and the answer says which is which.
#[tokio::test]
async fn peer_changes_answer_per_document() {
    use automerge::transaction::Transactable;
    use concord::replication::wire::{ChangesResultV1, ChangesV1, DocChangesV1, CONTENT_TYPE};

    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), cluster_config).await;
    let http = client();

    // Two changes of one document; the node gets only the second (its dependency is missing).
    let mut doc = automerge::AutoCommit::new();
    doc.put(automerge::ROOT, "a", 1).unwrap();
    doc.commit();
    doc.put(automerge::ROOT, "b", 2).unwrap();
    doc.commit();
    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    assert_eq!(changes.len(), 2);

    let msg = ChangesV1 {
        docs: vec![
            DocChangesV1 {
                collection: "c".into(),
                id: "good".into(),
                changes: vec![changes[0].clone()],
            },
            DocChangesV1 {
                collection: "c".into(),
                id: "garbage".into(),
                changes: vec![b"not an automerge change".to_vec()],
            },
            DocChangesV1 {
                collection: "c".into(),
                id: "orphan".into(),
                changes: vec![changes[1].clone()],
            },
            DocChangesV1 {
                collection: "c".into(),
                id: "bad id with spaces".into(),
                changes: vec![changes[0].clone()],
            },
        ],
    };
    let r = http
        .post(node.url("/v1/peer/changes"))
        .header(concord::replication::client::SECRET_HEADER, SECRET)
        .header("content-type", CONTENT_TYPE)
        .body(postcard::to_stdvec(&msg).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let result = ChangesResultV1::decode(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(result.applied, 2, "{result:?}");
    let ids = |v: &[concord::replication::wire::DocIssueV1]| {
        let mut ids: Vec<String> = v.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&result.parked), vec!["orphan"]);
    assert_eq!(ids(&result.rejected), vec!["bad id with spaces", "garbage"]);
    assert_eq!(get(&http, &node, "good").await, Some(json!({"a": 1})));
    assert_eq!(get(&http, &node, "garbage").await, None);
    node.stop().await;
}

/// A listing with `include_docs` names the document it could not read instead of hiding it.
#[tokio::test]
async fn include_docs_reports_an_unreadable_document() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    {
        let node = TestNode::start_with(dir.path(), cluster_config).await;
        put(&http, &node, "bad", json!({"v": 1})).await;
        put(&http, &node, "good", json!({"v": 2})).await;
        node.stop().await;
    }
    corrupt_document(dir.path(), "c", "bad");
    let node = TestNode::start_with(dir.path(), cluster_config).await;
    let v: Value = get_json(&http, node.url("/v1/collections/c/docs?include_docs=true")).await;
    let docs = v["docs"].as_array().unwrap();
    assert_eq!(docs.len(), 2, "{v}");
    assert_eq!(docs[0]["id"], "bad");
    assert_eq!(docs[0]["error_status"], 500, "{v}");
    assert!(docs[0]["error"].as_str().unwrap().contains("load"), "{v}");
    assert!(docs[0].get("body").is_none());
    assert_eq!(docs[1]["body"], json!({"v": 2}));
    assert!(docs[1].get("error").is_none());
    node.stop().await;
}
