//! Every REST endpoint and every documented error, over real HTTP against a real RocksDB.

mod common;

use common::{client, metric, scrape, TestNode};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Api {
    node: TestNode,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = TestNode::start_with(dir.path(), |c| {
            c.max_body_bytes = 64 * 1024;
            c.max_batch = 50;
        })
        .await;
        Api {
            node,
            http: client(),
            _dir: dir,
        }
    }

    async fn req(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut r = self.http.request(method, self.node.url(path));
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, v)
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, String) {
        let (s, h, _) = self.req(Method::PUT, path, Some(body), &[]).await;
        (s, etag(&h))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.req(Method::GET, path, None, &[]).await;
        (s, v)
    }
}

fn etag(h: &reqwest::header::HeaderMap) -> String {
    h.get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn assert_problem(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want: StatusCode,
    detail_has: &str,
) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert_eq!(body["status"], want.as_u16());
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(detail_has),
        "detail {detail:?} should mention {detail_has:?}"
    );
}

const D: &str = "/v1/collections/users/docs";

#[tokio::test]
async fn health_and_metrics() {
    let a = Api::new().await;
    let (s, v) = a.get("/v1/health").await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["node_id"].as_str().unwrap().len(), 36);
    a.put(&format!("{D}/m"), json!({"a": 1})).await;
    let text = scrape(&a.http, &a.node.url).await;
    for name in [
        "concord_http_requests_total",
        "concord_http_request_duration_seconds_bucket",
        "concord_commits_total",
        "concord_wal_syncs_total",
        "concord_cache_bytes",
        "concord_store_bytes",
        "concord_cache_hits_total",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }

    // The figures move with the work done, by exactly as much.
    let doc_route = "route=\"/v1/collections/{collection}/docs/{id}\"";
    let created =
        format!("concord_http_requests_total{{method=\"PUT\",{doc_route},status=\"201\"}}");
    let replaced =
        format!("concord_http_requests_total{{method=\"PUT\",{doc_route},status=\"200\"}}");
    let read = format!("concord_http_requests_total{{method=\"GET\",{doc_route},status=\"200\"}}");
    let missing =
        format!("concord_http_requests_total{{method=\"GET\",{doc_route},status=\"404\"}}");
    let value = |text: &str, series: &str| metric(text, series).unwrap_or(0.0);
    let before = scrape(&a.http, &a.node.url).await;
    assert_eq!(value(&before, &created), 1.0, "{before}");
    for i in 0..5 {
        let (s, _) = a.put(&format!("{D}/n{i}"), json!({"i": i})).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    for i in 0..3 {
        let (s, _) = a
            .put(&format!("{D}/n{i}"), json!({"i": i, "again": true}))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    // An identical PUT changes nothing and commits nothing.
    let (s, _) = a.put(&format!("{D}/n4"), json!({"i": 4})).await;
    assert_eq!(s, StatusCode::OK);
    for i in 0..4 {
        assert_eq!(a.get(&format!("{D}/n{i}")).await.0, 200);
    }
    assert_eq!(a.get(&format!("{D}/absent")).await.0, 404);
    let after = scrape(&a.http, &a.node.url).await;
    let rise = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(rise(&created), 5.0, "{after}");
    assert_eq!(rise(&replaced), 4.0, "{after}");
    assert_eq!(rise(&read), 4.0, "{after}");
    assert_eq!(rise(&missing), 1.0, "{after}");
    assert_eq!(
        rise("concord_commits_total"),
        8.0,
        "five creates, three replaces:\n{after}"
    );
    assert!(rise("concord_wal_syncs_total") >= 8.0, "{after}");
    let latency = format!(
        "concord_http_request_duration_seconds_count{{method=\"PUT\",{doc_route},status=\"201\"}}"
    );
    assert_eq!(rise(&latency), 5.0, "{after}");
    assert!(value(&after, "concord_cache_documents") >= 6.0, "{after}");
    assert!(value(&after, "concord_cache_bytes") > 0.0, "{after}");
    // Each commit left its document's JSON in memory: the four reads were answered from there,
    // and the absent document is one miss (its read looks in memory twice, counted once).
    assert_eq!(rise("concord_json_cache_hits_total"), 4.0, "{after}");
    assert_eq!(
        rise("concord_json_cache_misses_total"),
        1.0,
        "the absent one:\n{after}"
    );
    assert!(
        value(&after, "concord_json_cache_documents") >= 6.0,
        "{after}"
    );
    assert!(value(&after, "concord_json_cache_bytes") > 0.0, "{after}");
}

#[tokio::test]
async fn put_get_replace_and_etags() {
    let a = Api::new().await;
    let (s, tag1) = a
        .put(
            &format!("{D}/alice"),
            json!({"name": "Alice", "age": 30, "tags": ["a"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(tag1.starts_with('"') && tag1.len() == 66);
    let (s, v) = a.get(&format!("{D}/alice")).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"name": "Alice", "age": 30, "tags": ["a"]}));

    let (s, tag2) = a
        .put(
            &format!("{D}/alice"),
            json!({"name": "Alice B", "tags": ["a", "b"]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_ne!(tag1, tag2);
    assert_eq!(
        a.get(&format!("{D}/alice")).await.1,
        json!({"name": "Alice B", "tags": ["a", "b"]})
    );

    // Same body again: no change, same version.
    let (s, h, v) = a
        .req(
            Method::PUT,
            &format!("{D}/alice"),
            Some(json!({"name": "Alice B", "tags": ["a", "b"]})),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["changed"], false);
    assert_eq!(etag(&h), tag2);

    // If-None-Match
    let (s, _, _) = a
        .req(
            Method::GET,
            &format!("{D}/alice"),
            None,
            &[("if-none-match", &tag2)],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, _, _) = a
        .req(
            Method::GET,
            &format!("{D}/alice"),
            None,
            &[("if-none-match", &tag1)],
        )
        .await;
    assert_eq!(s, 200);

    // Read at a past version.
    let at = tag1.trim_matches('"');
    let (s, v) = a.get(&format!("{D}/alice?at={at}")).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"name": "Alice", "age": 30, "tags": ["a"]}));
}

#[tokio::test]
async fn if_match_guards_writes() {
    let a = Api::new().await;
    let (_, tag1) = a.put(&format!("{D}/x"), json!({"v": 1})).await;
    let (_, tag2) = a.put(&format!("{D}/x"), json!({"v": 2})).await;
    let (s, h, v) = a
        .req(
            Method::PUT,
            &format!("{D}/x"),
            Some(json!({"v": 3})),
            &[("if-match", &tag1)],
        )
        .await;
    assert_problem(
        s,
        &h,
        &v,
        StatusCode::PRECONDITION_FAILED,
        "current version",
    );
    assert_eq!(etag(&h), tag2);
    let (s, _, _) = a
        .req(
            Method::PATCH,
            &format!("{D}/x"),
            Some(json!({"v": 3})),
            &[("if-match", &tag2)],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = a
        .req(
            Method::DELETE,
            &format!("{D}/x"),
            None,
            &[("if-match", &tag2)],
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, _, _) = a
        .req(
            Method::PUT,
            &format!("{D}/new"),
            Some(json!({})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(
        s,
        StatusCode::PRECONDITION_FAILED,
        "If-Match: * needs an existing document"
    );
    let (s, h, v) = a
        .req(
            Method::PUT,
            &format!("{D}/x"),
            Some(json!({})),
            &[("if-match", "garbage")],
        )
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "If-Match");
}

#[tokio::test]
async fn post_creates_automerge_repo_ids() {
    let a = Api::new().await;
    let (s, h, v) = a.req(Method::POST, D, Some(json!({"k": "v"})), &[]).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["id"].as_str().unwrap();
    let raw = bs58::decode(id).with_check(None).into_vec().unwrap();
    assert_eq!(raw.len(), 16, "a DocumentId is base58check of 16 bytes");
    assert_eq!(
        h.get("location").unwrap().to_str().unwrap(),
        format!("{D}/{id}")
    );
    assert_eq!(a.get(&format!("{D}/{id}")).await.1, json!({"k": "v"}));
}

#[tokio::test]
async fn merge_patch() {
    let a = Api::new().await;
    a.put(
        &format!("{D}/p"),
        json!({"a": 1, "b": {"c": 2, "d": 3}, "s": "hello"}),
    )
    .await;
    let r = a
        .http
        .patch(a.node.url(&format!("{D}/p")))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"a": null, "b": {"c": 20}, "s": "hello world", "n": [1]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        a.get(&format!("{D}/p")).await.1,
        json!({"b": {"c": 20, "d": 3}, "s": "hello world", "n": [1]})
    );
    let (s, h, v) = a
        .req(
            Method::PATCH,
            &format!("{D}/missing"),
            Some(json!({"a": 1})),
            &[],
        )
        .await;
    assert_problem(s, &h, &v, StatusCode::NOT_FOUND, "does not exist");
    let (s, h, v) = a
        .req(Method::PATCH, &format!("{D}/p"), Some(json!([1])), &[])
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "must be a JSON object");
}

#[tokio::test]
async fn crdt_ops() {
    let a = Api::new().await;
    a.put(
        &format!("{D}/o"),
        json!({"title": "helo", "items": ["a", "c"]}),
    )
    .await;
    let ops = json!({"ops": [
        {"op": "splice", "path": "/title", "index": 3, "insert": "l"},
        {"op": "insert", "path": "/items", "index": 1, "value": "b"},
        {"op": "counter", "path": "/views"},
        {"op": "increment", "path": "/views", "by": 2},
        {"op": "set", "path": "/meta", "value": {"x": 1}},
        {"op": "remove", "path": "/items/0"}
    ]});
    let (s, _, v) = a
        .req(Method::POST, &format!("{D}/o/ops"), Some(ops), &[])
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        a.get(&format!("{D}/o")).await.1,
        json!({"title": "hello", "items": ["b", "c"], "views": 2, "meta": {"x": 1}})
    );

    // One bad op: nothing is applied.
    let bad = json!({"ops": [{"op": "set", "path": "/ok", "value": 1}, {"op": "increment", "path": "/title"}]});
    let (s, h, v) = a
        .req(Method::POST, &format!("{D}/o/ops"), Some(bad), &[])
        .await;
    assert_problem(s, &h, &v, StatusCode::UNPROCESSABLE_ENTITY, "not a counter");
    assert!(a.get(&format!("{D}/o")).await.1.get("ok").is_none());

    for (body, want, msg) in [
        (
            json!({"ops": [{"op": "fly", "path": "/a"}]}),
            StatusCode::BAD_REQUEST,
            "unknown variant",
        ),
        (
            json!({"ops": [{"op": "set", "path": "a", "value": 1}]}),
            StatusCode::BAD_REQUEST,
            "JSON Pointer",
        ),
        (
            json!({"ops": [{"op": "remove", "path": "/nope"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "does not exist",
        ),
        (
            json!({"ops": [{"op": "splice", "path": "/title", "index": 99}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "length",
        ),
        (json!({"ops": []}), StatusCode::BAD_REQUEST, "at least one"),
        (
            json!({"ops": vec![json!({"op": "set", "path": "/a", "value": 1}); 51]}),
            StatusCode::BAD_REQUEST,
            "limit is 50",
        ),
    ] {
        let (s, h, v) = a
            .req(Method::POST, &format!("{D}/o/ops"), Some(body.clone()), &[])
            .await;
        assert_problem(s, &h, &v, want, msg);
    }
}

#[tokio::test]
async fn delete_is_a_tombstone() {
    let a = Api::new().await;
    let (_, _) = a.put(&format!("{D}/d"), json!({"a": 1})).await;
    let (s, h, v) = a.req(Method::DELETE, &format!("{D}/d"), None, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(v["deleted"], true);
    let tomb = etag(&h);
    let (s, h, v) = a.req(Method::GET, &format!("{D}/d"), None, &[]).await;
    assert_problem(s, &h, &v, StatusCode::NOT_FOUND, "deleted");
    let (s, _, _) = a.req(Method::DELETE, &format!("{D}/d"), None, &[]).await;
    assert_eq!(s, 404);
    // History survives the delete.
    let (s, v) = a.get(&format!("{D}/d/history")).await;
    assert_eq!(s, 200);
    assert_eq!(v["changes"][0]["message"], "concord:delete");
    // Listing hides tombstones unless asked.
    let (_, v) = a.get(D).await;
    assert!(v["docs"].as_array().unwrap().is_empty());
    let (_, v) = a.get(&format!("{D}?include_deleted=true")).await;
    assert_eq!(v["docs"][0]["deleted"], true);
    assert_eq!(
        format!("\"{}\"", v["docs"][0]["version"].as_str().unwrap()),
        tomb
    );
    // Re-create, even empty.
    let (s, _) = a.put(&format!("{D}/d"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a.get(&format!("{D}/d")).await, (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn collections_listing_and_paging() {
    let a = Api::new().await;
    for i in 0..25 {
        a.put(&format!("/v1/collections/c1/docs/d{i:02}"), json!({"i": i}))
            .await;
    }
    a.put("/v1/collections/c2/docs/x", json!({})).await;
    a.req(Method::DELETE, "/v1/collections/c1/docs/d00", None, &[])
        .await;
    let (_, v) = a.get("/v1/collections").await;
    assert_eq!(
        v["collections"],
        json!([{"name": "c1", "docs": 24}, {"name": "c2", "docs": 1}])
    );

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("?limit=10&include_docs=true&after={a}"),
            None => "?limit=10&include_docs=true".into(),
        };
        let (s, v) = a.get(&format!("/v1/collections/c1/docs{q}")).await;
        assert_eq!(s, 200);
        for d in v["docs"].as_array().unwrap() {
            assert_eq!(
                d["body"]["i"],
                d["id"].as_str().unwrap()[1..].parse::<i64>().unwrap()
            );
            seen.push(d["id"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (1..25).map(|i| format!("d{i:02}")).collect::<Vec<_>>()
    );
    let (s, h, v) = a
        .req(
            Method::GET,
            "/v1/collections/c1/docs?after=%2F%2F",
            None,
            &[],
        )
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "after");
    let (s, h, v) = a
        .req(Method::GET, "/v1/collections/c1/docs?limit=abc", None, &[])
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "limit");

    // Id-prefix search, paged: `d1` is d10..d19 (d1 alone does not exist), never d2x or d0x.
    let ids = |v: &Value| -> Vec<String> {
        v["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = a.get("/v1/collections/c1/docs?prefix=d1&limit=6").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&v), ["d10", "d11", "d12", "d13", "d14", "d15"]);
    let (_, v) = a
        .get("/v1/collections/c1/docs?prefix=d1&limit=6&after=d15")
        .await;
    assert_eq!(ids(&v), ["d16", "d17", "d18", "d19"]);
    assert_eq!(v["next"], Value::Null);
    // `after` before the prefix starts at the prefix; after it, nothing.
    let (_, v) = a
        .get("/v1/collections/c1/docs?prefix=d2&after=d05&limit=100")
        .await;
    assert_eq!(ids(&v), ["d20", "d21", "d22", "d23", "d24"]);
    let (_, v) = a.get("/v1/collections/c1/docs?prefix=d2&after=d3").await;
    assert_eq!(ids(&v), Vec::<String>::new());
    let (_, v) = a.get("/v1/collections/c1/docs?prefix=zz").await;
    assert_eq!(ids(&v), Vec::<String>::new());
    // The deleted d00 is a tombstone: listed only when asked for.
    let (_, v) = a.get("/v1/collections/c1/docs?prefix=d0").await;
    assert_eq!(ids(&v)[0], "d01");
    let (_, v) = a
        .get("/v1/collections/c1/docs?prefix=d0&include_deleted=true")
        .await;
    assert_eq!(ids(&v)[0], "d00");
    let (s, h, v) = a
        .req(Method::GET, "/v1/collections/c1/docs?prefix=%2F", None, &[])
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "prefix");
}

/// Who the caller is, for clients that show only what their token allows; and the node's uptime.
#[tokio::test]
async fn me_and_uptime() {
    let a = Api::new().await;
    let (s, v) = a.get("/v1/me").await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"name": "anonymous", "access": "admin", "collections": null, "scoped": false,
               "tokens_required": false})
    );
    let (_, v) = a.get("/v1/health").await;
    assert!(v["uptime_seconds"].as_u64().is_some(), "{v}");
    let text = scrape(&a.http, &a.node.url).await;
    assert!(metric(&text, "concord_uptime_seconds").is_some());
}

/// The console's files: served with a strict CSP, gzip for clients that take it, and `304` for a
/// matching ETag; nothing outside the console's files.
#[tokio::test]
async fn the_console_is_served_with_csp_gzip_and_etags() {
    let a = Api::new().await;
    let plain = client();
    let r = plain
        .get(a.node.url("/ui/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    assert!(!csp.contains("unsafe"), "{csp}");
    let zipped = r.bytes().await.unwrap();
    let mut html = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut html)
        .unwrap();
    assert!(html.contains("<html"), "{html}");
    let r = plain
        .get(a.node.url("/ui/"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", h["etag"].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // The identity body has its own tag and is the same page.
    let r = plain
        .get(a.node.url("/ui/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"], h["etag"]);
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.text().await.unwrap(), html);
    let r = plain.get(a.node.url("/ui")).send().await.unwrap();
    assert_eq!(r.status(), 200, "/ui redirects to /ui/");
    for missing in [
        "/ui/nope.js",
        "/ui/..%2FCargo.toml",
        "/ui/%2e%2e/Cargo.toml",
    ] {
        let r = plain.get(a.node.url(missing)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }
}

#[tokio::test]
async fn bulk_write_and_read() {
    let a = Api::new().await;
    a.put("/v1/collections/b/docs/exists", json!({"v": 1}))
        .await;
    let (s, _, v) = a
        .req(
            Method::POST,
            "/v1/collections/b/bulk-write",
            Some(json!({"writes": [
                {"id": "one", "op": "put", "body": {"n": 1}},
                {"op": "put", "body": {"n": 2}},
                {"id": "exists", "op": "patch", "body": {"w": 2}},
                {"id": "missing", "op": "patch", "body": {"w": 2}},
                {"id": "bad id!", "op": "put", "body": {}},
                {"id": "exists2", "op": "put", "body": [1]},
                {"id": "guarded", "op": "put", "body": {}, "if_match": "*"},
            ]})),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let statuses: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 201, 200, 404, 400, 400, 412]);
    let generated = v["results"][1]["id"].as_str().unwrap().to_string();
    let (s, _, v) = a
        .req(
            Method::POST,
            "/v1/collections/b/bulk-read",
            Some(json!({"ids": ["one", generated, "exists", "nope"]})),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["body"], json!({"n": 1}));
    assert_eq!(r[1]["body"], json!({"n": 2}));
    assert_eq!(r[2]["body"], json!({"v": 1, "w": 2}));
    assert_eq!(r[3]["status"], 404);
    let (s, h, v) = a
        .req(
            Method::POST,
            "/v1/collections/b/bulk-write",
            Some(json!({"writes": [
        {"id": "a", "op": "put", "body": {}}, {"id": "a", "op": "delete"}]})),
            &[],
        )
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "twice");
}

#[tokio::test]
async fn history_is_paged_newest_first() {
    let a = Api::new().await;
    for i in 0..7 {
        a.put(&format!("{D}/h"), json!({"i": i})).await;
    }
    let mut hashes = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let q = before
            .as_ref()
            .map(|b| format!("&before={b}"))
            .unwrap_or_default();
        let (s, v) = a.get(&format!("{D}/h/history?limit=3{q}")).await;
        assert_eq!(s, 200);
        for c in v["changes"].as_array().unwrap() {
            assert!(c["time"].as_i64().unwrap() > 1_600_000_000_000);
            hashes.push(c["hash"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(n) => before = Some(n.into()),
            None => break,
        }
    }
    assert_eq!(hashes.len(), 7);
    let (_, h, _) = a.req(Method::GET, &format!("{D}/h"), None, &[]).await;
    assert_eq!(etag(&h).trim_matches('"'), hashes[0], "newest first");
    let (s, h, v) = a
        .req(Method::GET, &format!("{D}/h/history?before=zz"), None, &[])
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "change hash");
}

#[tokio::test]
async fn changes_feed_pages_longpolls_and_streams() {
    let a = Api::new().await;
    for i in 0..5 {
        a.put(
            &format!("/v1/collections/f{}/docs/d{i}", i % 2),
            json!({"i": i}),
        )
        .await;
    }
    a.put("/v1/collections/f0/docs/d0", json!({"i": 100})).await; // d0 moves to the end
    let (_, v) = a.get("/v1/changes?limit=3").await;
    let first: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, vec!["d1", "d2", "d3"]);
    let cursor = v["last_cursor"].as_str().unwrap().to_string();
    let (_, v) = a.get(&format!("/v1/changes?since={cursor}")).await;
    let rest: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rest, vec!["d4", "d0"]);
    let (_, v) = a.get("/v1/changes?collection=f1").await;
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    let end = v["last_cursor"].as_str().unwrap().to_string();

    // Long poll: returns when a write lands.
    let url = a.node.url(&format!(
        "/v1/changes?feed=longpoll&since={end}&timeout=20000"
    ));
    let http = a.http.clone();
    let poll = tokio::spawn(async move {
        http.get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    a.put("/v1/collections/f1/docs/late", json!({})).await;
    let v = poll.await.unwrap();
    assert_eq!(v["results"][0]["id"], "late");
    // Long poll with nothing new times out empty.
    let (s, v) = a
        .get("/v1/changes?feed=longpoll&since=now&timeout=50")
        .await;
    assert_eq!(s, 200);
    assert!(v["results"].as_array().unwrap().is_empty());

    // SSE
    let mut resp = a
        .http
        .get(a.node.url("/v1/changes?feed=sse&since=now"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    a.put("/v1/collections/f1/docs/streamed", json!({"x": 1}))
        .await;
    let mut buf = String::new();
    while !buf.contains("streamed") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(buf.contains("event: change"));

    for bad in [
        "since=abc",
        "since=-1",
        "feed=carrier-pigeon",
        "collection=%2F",
    ] {
        let (s, h, v) = a
            .req(Method::GET, &format!("/v1/changes?{bad}"), None, &[])
            .await;
        assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "");
    }
}

#[tokio::test]
async fn bad_input_gets_clear_4xx() {
    let a = Api::new().await;
    let url = a.node.url(&format!("{D}/e"));
    // Malformed JSON
    let r = a
        .http
        .put(&url)
        .header("content-type", "application/json")
        .body("{\"a\": ")
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    let v: Value = r.json().await.unwrap();
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "not valid JSON");
    // Not an object
    for body in ["[1,2]", "42", "\"s\"", "null"] {
        let r = a
            .http
            .put(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        let v: Value = r.json().await.unwrap();
        assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "must be a JSON object");
    }
    // Wrong / missing content type
    let r = a
        .http
        .put(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = a.http.put(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Too large
    let big = json!({"s": "x".repeat(70 * 1024)}).to_string();
    let r = a
        .http
        .put(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    let v: Value = r.json().await.unwrap();
    assert_problem(s, &h, &v, StatusCode::PAYLOAD_TOO_LARGE, "65536");
    // Too deep
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let r = a
        .http
        .put(&url)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Invalid names
    let (s, h, v) = a
        .req(
            Method::PUT,
            "/v1/collections/bad%20name/docs/x",
            Some(json!({})),
            &[],
        )
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "collection name");
    let (s, h, v) = a
        .req(
            Method::PUT,
            &format!("{D}/has%2Fslash"),
            Some(json!({})),
            &[],
        )
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "document id");
    let long = "x".repeat(300);
    let (s, h, v) = a.req(Method::GET, &format!("{D}/{long}"), None, &[]).await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "1-256 characters");
    // Unknown route and wrong method
    let (s, h, v) = a.req(Method::GET, "/v2/nothing", None, &[]).await;
    assert_problem(s, &h, &v, StatusCode::NOT_FOUND, "no route");
    let (s, h, v) = a
        .req(Method::POST, &format!("{D}/e"), Some(json!({})), &[])
        .await;
    assert_problem(s, &h, &v, StatusCode::METHOD_NOT_ALLOWED, "POST");
    // Bad heads
    a.put(&format!("{D}/e"), json!({"a": 1})).await;
    for (q, msg) in [
        ("at=xyz", "invalid version"),
        (&format!("at={}", "ab".repeat(32)) as &str, "not known"),
    ] {
        let (s, h, v) = a.req(Method::GET, &format!("{D}/e?{q}"), None, &[]).await;
        assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, msg);
    }
    // Unknown query parameter
    let (s, h, v) = a
        .req(Method::GET, &format!("{D}/e?nope=1"), None, &[])
        .await;
    assert_problem(s, &h, &v, StatusCode::BAD_REQUEST, "nope");
    // Missing document
    let (s, h, v) = a.req(Method::GET, &format!("{D}/ghost"), None, &[]).await;
    assert_problem(s, &h, &v, StatusCode::NOT_FOUND, "does not exist");
}
