//! Logical export and import through `concord export | concord import` and the HTTP endpoints:
//! the Automerge format carries every document whole (same JSON, same version, old versions
//! still readable with `?at=`) and importing it twice changes nothing; the JSON format recreates
//! the documents' content; a bad line is reported by number and the others are applied.

mod common;

use std::process::{Command, Stdio};

use common::{client, TestNode};
use serde_json::{json, Value};

/// Runs `concord ARGS` with `input` on stdin; its stdout, stderr and success.
async fn concord(args: Vec<String>, input: Vec<u8>) -> (Vec<u8>, String, bool) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn concord");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("concord");
        let _ = writer.join();
        (
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// PUT (`create`) or PATCH a document of `t`; its new version.
async fn write(
    http: &reqwest::Client,
    node: &TestNode,
    id: &str,
    body: Value,
    create: bool,
) -> String {
    let url = node.url(&format!("/v1/collections/t/docs/{id}"));
    let (req, ct) = if create {
        (http.put(url), "application/json")
    } else {
        (http.patch(url), "application/merge-patch+json")
    };
    let r = req
        .header("content-type", ct)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    v["version"].as_str().unwrap().to_string()
}

/// Every document of collection `t` with its version (`None` body when deleted).
async fn contents(http: &reqwest::Client, node: &TestNode) -> Vec<(String, String, Option<Value>)> {
    let text = http
        .get(node.url("/v1/collections/t/export"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let body = (!v["deleted"].as_bool().unwrap()).then(|| v["doc"].clone());
            (
                v["id"].as_str().unwrap().to_string(),
                v["version"].as_str().unwrap().to_string(),
                body,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_round_trips_documents_and_history() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = TestNode::start(dirs[0].path()).await;
    let b = TestNode::start(dirs[1].path()).await;
    let c = TestNode::start(dirs[2].path()).await;
    let http = client();
    // More than one export page of documents, some with a history of several versions, one
    // with a counter and text, one deleted.
    let mut old_versions = Vec::new();
    for i in 0..600 {
        let id = format!("d{i:04}");
        let v1 = write(&http, &a, &id, json!({"i": i, "tags": ["x", i % 7]}), true).await;
        if i % 50 == 0 {
            write(&http, &a, &id, json!({"i": -i, "nested": {"k": i}}), false).await;
            old_versions.push((id, v1, json!({"i": i, "tags": ["x", i % 7]})));
        }
    }
    let r = http
        .post(a.url("/v1/collections/t/docs/d0001/ops"))
        .json(&json!({"ops": [
            {"op": "set", "path": "/s", "value": "hello"},
            {"op": "splice", "path": "/s", "index": 5, "insert": " world"},
            {"op": "counter", "path": "/n"},
            {"op": "increment", "path": "/n", "by": 5}
        ]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = http
        .delete(a.url("/v1/collections/t/docs/d0002"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let source = contents(&http, &a).await;
    assert_eq!(source.len(), 600);

    // Automerge format, through the commands: a whole copy, versions included.
    let (am, err, ok) = concord(
        args(&[
            "export",
            "--url",
            &a.url,
            "--collection",
            "t",
            "--format",
            "automerge",
        ]),
        Vec::new(),
    )
    .await;
    assert!(ok, "export: {err}");
    assert_eq!(am.iter().filter(|&&b| b == b'\n').count(), 600);
    let import = |node: &TestNode, format: &str, extra: &[&str]| {
        let mut a = args(&[
            "import",
            "--url",
            &node.url,
            "--collection",
            "t",
            "--format",
            format,
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (out, err, ok) = concord(import(&b, "automerge", &[]), am.clone()).await;
    assert!(ok, "import: {err}");
    let summary: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(summary["created"], 600, "{summary}");
    assert_eq!(
        contents(&http, &b).await,
        source,
        "same documents, same versions"
    );
    for (id, v1, body) in &old_versions {
        let url = format!("/v1/collections/t/docs/{id}?at={v1}");
        let got = common::http::get_json(&http, b.url(&url)).await;
        assert_eq!(&got, body, "{id} at its first version");
    }
    let d1 = common::http::get_json(&http, b.url("/v1/collections/t/docs/d0001")).await;
    assert_eq!(d1["n"], 5);
    assert_eq!(d1["s"], "hello world");
    // Twice: a merge of what is already there changes nothing.
    let (out, err, ok) = concord(import(&b, "automerge", &[]), am).await;
    assert!(ok, "import again: {err}");
    let summary: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(summary["unchanged"], 600, "{summary}");
    assert_eq!(contents(&http, &b).await, source);

    // JSON format: the same content, written as new changes on the target.
    let (js, err, ok) = concord(
        args(&["export", "--url", &a.url, "--collection", "t"]),
        Vec::new(),
    )
    .await;
    assert!(ok, "export: {err}");
    let (_, err, ok) = concord(import(&c, "json", &[]), js.clone()).await;
    assert!(ok, "import json: {err}");
    let strip = |docs: Vec<(String, String, Option<Value>)>| -> Vec<(String, Option<Value>)> {
        docs.into_iter()
            .filter(|(_, _, b)| b.is_some())
            .map(|(i, _, b)| (i, b))
            .collect()
    };
    assert_eq!(strip(contents(&http, &c).await), strip(source.clone()));
    // --if-absent leaves every existing document alone.
    let (out, err, ok) = concord(import(&c, "json", &["--if-absent"]), js).await;
    assert!(ok, "import --if-absent: {err}");
    let summary: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(summary["skipped"], 599, "{summary}");
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_by_number_and_the_rest_applied() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let http = client();
    let body = [
        r#"{"id": "ok1", "doc": {"a": 1}}"#,
        r#"{"id": "ok2", "doc": {"a": 2}"#,
        r#"{"id": "no/slash", "doc": {"a": 3}}"#,
        r#"{"id": "ok3", "doc": [1, 2]}"#,
        "",
        r#"{"id": "ok4", "doc": {"a": 4}, "extra": true}"#,
        r#"{"id": "ok5", "automerge": "AAAA"}"#,
        r#"{"id": "ok6", "doc": {"a": 6}}"#,
    ]
    .join("\n");
    let r = http
        .post(node.url("/v1/collections/t/import"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = r.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<u64> = events
        .iter()
        .filter_map(|e| e.get("error").and(e["line"].as_u64()))
        .collect();
    assert_eq!(failed, vec![2, 3, 4, 6, 7], "{text}");
    let done = events.last().unwrap();
    assert_eq!(done["done"], true);
    assert_eq!(done["created"], 2);
    assert_eq!(done["failed"], 5);
    for (id, want) in [
        ("ok1", Some(1)),
        ("ok6", Some(6)),
        ("ok3", None),
        ("ok4", None),
    ] {
        let r = http
            .get(node.url(&format!("/v1/collections/t/docs/{id}")))
            .send()
            .await
            .unwrap();
        match want {
            Some(a) => assert_eq!(r.json::<Value>().await.unwrap(), json!({"a": a})),
            None => assert_eq!(r.status(), 404, "{id} was refused and must not exist"),
        }
    }
    // An Automerge line that is not an Automerge document.
    let r = http
        .post(node.url("/v1/collections/t/import?format=automerge"))
        .body(r#"{"id": "x", "automerge": "bm90IGF1dG9tZXJnZQ=="}"#)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"line\":1") && text.contains("Automerge"),
        "{text}"
    );
    // A valid document followed by what is not a chunk: refused whole, not loaded in part.
    let mut am = automerge::AutoCommit::new();
    automerge::transaction::Transactable::put(&mut am, automerge::ROOT, "a", 9).unwrap();
    let mut bytes = am.save();
    bytes.extend_from_slice(b"trailing garbage");
    use base64::Engine;
    let line = json!({
        "id": "partial",
        "automerge": base64::engine::general_purpose::STANDARD.encode(&bytes)
    });
    let r = http
        .post(node.url("/v1/collections/t/import?format=automerge"))
        .body(line.to_string())
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"failed\":1"), "{text}");
    let r = http
        .get(node.url("/v1/collections/t/docs/partial"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing of a refused line is kept");
    // A format the node does not know is refused before anything is read.
    let r = http
        .get(node.url("/v1/collections/t/export?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    node.stop().await;
}
