//! Queries over HTTP: declared indexes (built in the background, then maintained by every
//! write), `find` with sorts, projections and bookmarks checked against filtering every document
//! by hand, `explain`, no silent full scans, and errors that say what to fix.

mod common;

use std::time::Duration;

use common::http::{get_json, send_json};
use common::{client, poll_until, TestNode};
use reqwest::Method;
use serde_json::{json, Value};

fn task(i: u64) -> Value {
    let status = ["open", "closed", "hold"][(i % 3) as usize];
    json!({
        "status": status,
        "project": {"id": i % 7},
        "due": format!("2027-01-{:02}", 1 + (i * 13) % 28),
        "n": i,
        "tags": if i.is_multiple_of(2) { json!(["a"]) } else { json!(["b", "c"]) },
    })
}

async fn bulk_put(http: &reqwest::Client, node: &TestNode, coll: &str, docs: &[(String, Value)]) {
    for chunk in docs.chunks(500) {
        let writes: Vec<Value> = chunk
            .iter()
            .map(|(id, body)| json!({"id": id, "op": "put", "body": body}))
            .collect();
        let r = send_json(
            http,
            Method::POST,
            node.url(&format!("/v1/collections/{coll}/bulk-write")),
            &json!({ "writes": writes }),
        )
        .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

async fn define(
    http: &reqwest::Client,
    node: &TestNode,
    coll: &str,
    name: &str,
    def: Value,
) -> u16 {
    send_json(
        http,
        Method::PUT,
        node.url(&format!("/v1/collections/{coll}/indexes/{name}")),
        &def,
    )
    .await
    .status()
    .as_u16()
}

async fn wait_ready(http: &reqwest::Client, node: &TestNode, coll: &str, name: &str) {
    let url = node.url(&format!("/v1/collections/{coll}/indexes/{name}"));
    poll_until("index ready", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), url.clone());
        async move { get_json(&http, url).await["state"] == "ready" }
    })
    .await;
}

async fn find(http: &reqwest::Client, node: &TestNode, coll: &str, body: Value) -> (u16, Value) {
    let r = send_json(
        http,
        Method::POST,
        node.url(&format!("/v1/collections/{coll}/find")),
        &body,
    )
    .await;
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Every page of a query, followed by bookmark: the ids in order.
async fn all_pages(
    http: &reqwest::Client,
    node: &TestNode,
    coll: &str,
    mut body: Value,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let (s, v) = find(http, node, coll, body.clone()).await;
        assert_eq!(s, 200, "{v}");
        for d in v["docs"].as_array().unwrap() {
            ids.push(d["id"].as_str().unwrap().to_string());
        }
        match v.get("bookmark") {
            Some(b) => body["bookmark"] = b.clone(),
            None => return ids,
        }
    }
    panic!("too many pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_queries_sort_page_project_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    let docs: Vec<(String, Value)> = (0..300).map(|i| (format!("t{i:03}"), task(i))).collect();
    bulk_put(&http, &node, "tasks", &docs).await;
    // Defined after the documents: the build indexes them.
    let def = json!({"fields": ["status", "due"]});
    assert_eq!(
        define(&http, &node, "tasks", "status_due", def.clone()).await,
        201
    );
    assert_eq!(define(&http, &node, "tasks", "status_due", def).await, 200);
    assert_eq!(
        define(
            &http,
            &node,
            "tasks",
            "status_due",
            json!({"fields": ["due"]})
        )
        .await,
        409
    );
    assert_eq!(
        define(
            &http,
            &node,
            "tasks",
            "by_project",
            json!({"fields": ["project.id"]})
        )
        .await,
        201
    );
    wait_ready(&http, &node, "tasks", "status_due").await;
    wait_ready(&http, &node, "tasks", "by_project").await;

    // Writes after the build are indexed too.
    let r = send_json(
        &http,
        Method::PATCH,
        node.url("/v1/collections/tasks/docs/t001"),
        &json!({"status": "open", "due": "2027-01-31"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = http
        .delete(node.url("/v1/collections/tasks/docs/t003"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut current: Vec<(String, Value)> = docs
        .into_iter()
        .filter(|(id, _)| id != "t003")
        .map(|(id, mut v)| {
            if id == "t001" {
                v["status"] = json!("open");
                v["due"] = json!("2027-01-31");
            }
            (id, v)
        })
        .collect();
    current.sort_by(|a, b| a.0.cmp(&b.0));

    // Equality + range, sorted by the index's second field, descending, in pages of 7.
    let q = json!({
        "selector": {"status": "open", "due": {"$gte": "2027-01-10"}},
        "sort": [{"due": "desc"}], "limit": 7
    });
    let mut expected: Vec<&(String, Value)> = current
        .iter()
        .filter(|(_, v)| v["status"] == "open" && v["due"].as_str().unwrap() >= "2027-01-10")
        .collect();
    expected.sort_by(|a, b| {
        b.1["due"]
            .as_str()
            .cmp(&a.1["due"].as_str())
            .then(b.0.cmp(&a.0))
    });
    let got = all_pages(&http, &node, "tasks", q.clone()).await;
    let want: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got, want);
    let (_, first) = find(&http, &node, "tasks", q.clone()).await;
    assert_eq!(first["stats"]["index"], "status_due");
    assert_eq!(first["stats"]["returned"], 7);
    assert!(first.get("warning").is_none(), "{first}");

    // A projection, and `$in` over a nested path served by the other index.
    let (s, v) = find(
        &http,
        &node,
        "tasks",
        json!({
            "selector": {"project.id": {"$in": [2, 5]}, "tags": {"$size": 2}},
            "fields": ["n", "project.id"], "limit": 1000
        }),
    )
    .await;
    assert_eq!(s, 200);
    let want: Vec<&String> = current
        .iter()
        .filter(|(_, v)| {
            [2, 5].contains(&v["project"]["id"].as_u64().unwrap())
                && v["tags"].as_array().unwrap().len() == 2
        })
        .map(|(id, _)| id)
        .collect();
    let mut got: Vec<&str> = v["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(v["stats"]["index"], "by_project");
    let d = &v["docs"][0]["doc"];
    assert_eq!(d.as_object().unwrap().len(), 2, "{d}");
    assert!(d["project"]["id"].is_number() && d["n"].is_number());

    // `$or` over both indexes.
    let (s, v) = find(
        &http,
        &node,
        "tasks",
        json!({
            "selector": {"$or": [{"status": "hold"}, {"project.id": 3}]}, "limit": 1000
        }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let want = current
        .iter()
        .filter(|(_, v)| v["status"] == "hold" || v["project"]["id"] == 3)
        .count();
    assert_eq!(v["docs"].as_array().unwrap().len(), want);

    // Explain names the choice and the reasons.
    let r = send_json(
        &http,
        Method::POST,
        node.url("/v1/collections/tasks/explain"),
        &q,
    )
    .await;
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["index"], "status_due", "{e}");
    assert_eq!(e["in_memory_sort"], false);
    let by_project = e["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["index"] == "by_project")
        .unwrap();
    assert_eq!(by_project["usable"], false);
    assert!(by_project["reason"]
        .as_str()
        .unwrap()
        .contains("project.id"));
    assert_eq!(e["ranges"][0]["pinned"], json!(["open"]));

    let list = get_json(&http, node.url("/v1/collections/tasks/indexes")).await;
    assert_eq!(list["indexes"].as_array().unwrap().len(), 2);
    let r = http
        .delete(node.url("/v1/collections/tasks/indexes/by_project"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .get(node.url("/v1/collections/tasks/indexes/by_project"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The system collection stays the node's own.
    let r = http
        .get(node.url("/v1/collections/_indexes/docs/tasks:status_due"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_silent_full_scans_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    let docs: Vec<(String, Value)> = (0..1001).map(|i| (format!("d{i:04}"), task(i))).collect();
    bulk_put(&http, &node, "big", &docs).await;
    let small: Vec<(String, Value)> = (0..50).map(|i| (format!("d{i:04}"), task(i))).collect();
    bulk_put(&http, &node, "small", &small).await;

    let q = json!({"selector": {"status": "hold", "n": {"$gt": 500}}, "sort": ["n"]});
    let (s, v) = find(&http, &node, "big", q.clone()).await;
    assert_eq!(s, 400, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("[\"status\", \"n\"]") && detail.contains("allow_scan"),
        "{detail}"
    );

    let mut scan = q.clone();
    scan["allow_scan"] = json!(true);
    scan["limit"] = json!(1000);
    let (s, v) = find(&http, &node, "big", scan).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["stats"]["index"].is_null());
    assert_eq!(v["stats"]["docs_examined"], 1001);
    assert!(v["warning"].as_str().unwrap().contains("scanned"), "{v}");
    let want: Vec<u64> = (501..1001).filter(|i| i % 3 == 2).collect();
    let got: Vec<u64> = v["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["doc"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want);

    // A small collection may be scanned without asking, and says so.
    let (s, v) = find(
        &http,
        &node,
        "small",
        json!({"selector": {"status": "open"}}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["warning"].is_string());

    for (body, needle) in [
        (json!({"selector": {"n": {"$gtx": 1}}}), "$gtx"),
        (json!({"selector": {"n": {"$in": 3}}}), "$in"),
        (json!({"selector": {}, "limit": 0}), "limit"),
        (json!({"selector": {}, "sort": [{"n": "up"}]}), "sort"),
        (json!({"selector": {}, "bookmark": "garbage"}), "bookmark"),
        (json!({"selector": {}, "use_index": "nope"}), "nope"),
        (json!({"selector": {}, "bogus": 1}), "bogus"),
    ] {
        let (s, v) = find(&http, &node, "small", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains(needle),
            "{body}: {v}"
        );
    }
    for (def, needle) in [
        (json!({"fields": []}), "fields"),
        (json!({"fields": ["a..b"]}), "a..b"),
        (
            json!({"fields": ["a"], "partial_filter": {"x": {"$bad": 1}}}),
            "$bad",
        ),
    ] {
        let r = send_json(
            &http,
            Method::PUT,
            node.url("/v1/collections/small/indexes/x"),
            &def,
        )
        .await;
        assert_eq!(r.status(), 400, "{def}");
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains(needle), "{def}: {v}");
    }
    node.stop().await;
}

/// Writes through every client path land in the index at once: ops, posted Automerge changes,
/// HTTP sync, and a delete; and `$exists: false` finds documents lacking the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_is_indexed() {
    use automerge::transaction::Transactable;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    assert_eq!(
        define(&http, &node, "w", "by_kind", json!({"fields": ["kind"]})).await,
        201
    );
    wait_ready(&http, &node, "w", "by_kind").await;
    let doc = |id: &str| node.url(&format!("/v1/collections/w/docs/{id}"));

    let r = send_json(&http, Method::PUT, doc("put"), &json!({"kind": "k"})).await;
    assert_eq!(r.status(), 201);
    let r = send_json(&http, Method::PUT, doc("ops"), &json!({"other": 1})).await;
    assert_eq!(r.status(), 201);
    let r = send_json(
        &http,
        Method::POST,
        format!("{}/ops", doc("ops")),
        &json!({"ops": [{"op": "set", "path": "/kind", "value": "k"}]}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // An Automerge client's changes, posted as bytes.
    let mut am = automerge::AutoCommit::new();
    am.put(automerge::ROOT, "kind", "k").unwrap();
    let r = common::http::post_bytes(&http, format!("{}/changes", doc("posted")), am.save()).await;
    assert!(r.status().is_success(), "{}", r.status());

    // Another over the sync protocol.
    let mut synced = automerge::Automerge::new();
    synced
        .transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(automerge::ROOT, "kind", "k").map(|_| ())
        })
        .unwrap();
    let mut state = automerge::sync::State::new();
    common::http::sync_to_end(
        &http,
        &format!("{}/sync", doc("synced")),
        "client-1",
        None,
        &mut synced,
        &mut state,
    )
    .await;

    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let q = json!({"selector": {"kind": "k"}, "use_index": "by_kind"});
    let (s, v) = find(&http, &node, "w", q.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v), ["ops", "posted", "put", "synced"]);
    assert_eq!(v["stats"]["index"], "by_kind");

    let r = http.delete(doc("posted")).send().await.unwrap();
    assert!(r.status().is_success());
    let r = send_json(&http, Method::PATCH, doc("put"), &json!({"kind": null})).await;
    assert_eq!(r.status(), 200);
    let (_, v) = find(&http, &node, "w", q).await;
    assert_eq!(ids(&v), ["ops", "synced"]);
    let (_, v) = find(
        &http,
        &node,
        "w",
        json!({"selector": {"kind": {"$exists": false}}, "use_index": "by_kind"}),
    )
    .await;
    assert_eq!(ids(&v), ["put"]);
    assert_eq!(
        v["stats"]["keys_examined"], 1,
        "served from the index's absent-field keys"
    );
    node.stop().await;
}

fn started(r: &reqwest::Response) {
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
}

/// A live query: the matching documents now, then `enter` / `update` / `leave` as writes from a
/// client and from a peer's push move documents in and out, each once, in order; and a stream
/// resumed with `Last-Event-ID` gets every change it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_queries_follow_every_source_and_resume() {
    use common::http::SseReader;
    use std::time::Duration;
    const SECRET: &str = "live-query-cluster-secret-0123456789";
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n0 = TestNode::start_with(d0.path(), |c| c.cluster_secret = Some(SECRET.into())).await;
    let seed = n0.url.trim_start_matches("http://").to_string();
    let n1 = TestNode::start_with(d1.path(), move |c| {
        c.cluster_secret = Some(SECRET.into());
        c.peers = vec![seed];
    })
    .await;
    let http = client();
    let doc = |n: &TestNode, id: &str| n.url(&format!("/v1/collections/live/docs/{id}"));
    for (id, s) in [("a", "open"), ("b", "closed"), ("c", "open")] {
        let r = send_json(&http, Method::PUT, doc(&n0, id), &json!({"s": s, "n": 1})).await;
        assert_eq!(r.status(), 201);
    }
    let wait = Duration::from_secs(20);
    let r = send_json(
        &http,
        Method::POST,
        n0.url("/v1/collections/live/find"),
        &json!({"selector": {"s": "open"}, "fields": ["s"], "watch": true}),
    )
    .await;
    started(&r);
    let mut live = SseReader::new(r);
    let mut initial = Vec::new();
    loop {
        let e = live.next(wait).await.expect("initial result");
        if e.event == "current" {
            assert_eq!(e.data["count"], 2);
            assert!(e.id.is_some(), "the stream goes on from `current`");
            break;
        }
        // A reconnect in the middle of the initial result must not resume after it.
        assert_eq!(e.id, None, "initial events carry no cursor");
        assert_eq!(e.event, "enter");
        assert_eq!(e.data["doc"], json!({"s": "open"}), "projected");
        initial.push(e.data["id"].as_str().unwrap().to_string());
    }
    initial.sort();
    assert_eq!(initial, ["a", "c"]);

    // Client writes on this node.
    let r = send_json(&http, Method::PATCH, doc(&n0, "b"), &json!({"s": "open"})).await;
    assert_eq!(r.status(), 200);
    let r = send_json(&http, Method::PATCH, doc(&n0, "a"), &json!({"n": 2})).await;
    assert_eq!(r.status(), 200);
    let r = send_json(&http, Method::PATCH, doc(&n0, "c"), &json!({"s": "done"})).await;
    assert_eq!(r.status(), 200);
    // A write on the other node, arriving by its push.
    let r = send_json(&http, Method::PUT, doc(&n1, "d"), &json!({"s": "open"})).await;
    assert_eq!(r.status(), 201);
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while seen.len() < 4 {
        let e = live.next(wait).await.expect("a change event");
        last_id = e.id.clone().expect("events carry a cursor");
        seen.push((e.event, e.data["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        seen,
        [
            ("enter".to_string(), "b".to_string()),
            ("update".into(), "a".into()),
            ("leave".into(), "c".into()),
            ("enter".into(), "d".into()),
        ]
    );
    assert!(
        live.next(Duration::from_millis(300)).await.is_none(),
        "each change once"
    );
    drop(live);

    // Missed while disconnected: resumed from the last event id.
    let r = http.delete(doc(&n0, "b")).send().await.unwrap();
    assert!(r.status().is_success());
    let r = send_json(&http, Method::PUT, doc(&n0, "e"), &json!({"s": "open"})).await;
    assert_eq!(r.status(), 201);
    let r = http
        .get(n0.url("/v1/collections/live/find?selector=%7B%22s%22%3A%22open%22%7D"))
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    started(&r);
    let mut resumed = SseReader::new(r);
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = resumed.next(wait).await.expect("missed changes");
        got.push((e.event, e.data["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        got,
        [
            ("leave".to_string(), "b".to_string()),
            ("enter".into(), "e".into())
        ]
    );
    n1.stop().await;
    n0.stop().await;
}

/// The changes feed filtered by a selector: only documents matching now, judged from the index
/// entry when an index covers the selector (no document is loaded for it), by loading documents
/// otherwise (which a large collection refuses without `allow_scan`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_feed_selector_is_answered_from_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    assert_eq!(
        define(&http, &node, "f", "by_s", json!({"fields": ["s"]})).await,
        201
    );
    wait_ready(&http, &node, "f", "by_s").await;
    for i in 0..20 {
        let s = ["open", "closed"][i % 2];
        let r = send_json(
            &http,
            Method::PUT,
            node.url(&format!("/v1/collections/f/docs/d{i:02}")),
            &json!({"s": s, "n": i}),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    let r = http
        .delete(node.url("/v1/collections/f/docs/d00"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let loaded = || async {
        let text = common::scrape(&http, &node.url).await;
        common::metric(&text, "concord_feed_filter_docs_loaded_total").unwrap_or(0.0)
    };
    let feed = |sel: &str, extra: &str| {
        node.url(&format!(
            "/v1/changes?since=0&collection=f&selector={}{extra}",
            sel.replace('"', "%22")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace(':', "%3A")
        ))
    };
    let ids = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let before = loaded().await;
    let v = get_json(&http, feed(r#"{"s":"open"}"#, "")).await;
    let want: Vec<String> = (2..20).step_by(2).map(|i| format!("d{i:02}")).collect();
    assert_eq!(ids(&v), want, "{v}");
    assert_eq!(loaded().await, before, "judged from index entries");
    // `n` is not indexed: documents are loaded (a small collection allows it).
    let v = get_json(&http, feed(r#"{"n":5}"#, "")).await;
    assert_eq!(ids(&v), ["d05"]);
    assert!(loaded().await > before);
    let r = http
        .get(node.url("/v1/changes?selector=%7B%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a selector needs a collection");
    node.stop().await;
}

/// Index definitions are documents of the node's own `_indexes` collection: they replicate, but
/// clients never see them as documents, in the collection list or in the changes feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_collection_stays_the_nodes_own() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    assert_eq!(
        define(&http, &node, "own", "ix", json!({"fields": ["a"]})).await,
        201
    );
    let r = send_json(
        &http,
        Method::PUT,
        node.url("/v1/collections/own/docs/x"),
        &json!({"a": 1}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let feed = get_json(&http, node.url("/v1/changes?since=0")).await;
    let collections: Vec<&str> = feed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["collection"].as_str().unwrap())
        .collect();
    assert_eq!(collections, ["own"], "{feed}");
    let list = get_json(&http, node.url("/v1/collections")).await;
    assert_eq!(list["collections"].as_array().unwrap().len(), 1, "{list}");
    for url in [
        "/v1/changes?collection=_indexes",
        "/v1/collections/_indexes/docs",
        "/v1/collections/_indexes/docs/own:ix",
    ] {
        let r = http.get(node.url(url)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{url}");
    }
    node.stop().await;
}
