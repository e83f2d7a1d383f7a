//! Concord against the reference automerge-repo sync server (`benches/repo_sync/reference_server.mjs`:
//! `@automerge/automerge-repo` with its Node filesystem storage and WebSocket server adapters),
//! side by side in one run, with the same protocol-level client workload.
//!
//! The clients speak the automerge-repo network protocol directly (Rust Automerge, no repo
//! machinery), so the servers, not the clients, are what is measured: `--clients` connections each
//! create `--docs` documents with `--edits` changes and sync them (a document is synced when the
//! server's sync message reports our heads); then one fresh connection requests every document.
//! Reported: documents synced per second, per-document sync latency (p50/p99), fresh-client load
//! rate, and the server's RSS.
//!
//! Run: `cargo bench --profile dev --bench repo_load -- --clients 50 --docs 40 --edits 5`
//! (needs Node.js and `npm install --prefix tests/js`).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT};
use ciborium::Value;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn frame(pairs: Vec<(&str, Value)>) -> Message {
    let mut out = Vec::new();
    let _ = ciborium::into_writer(
        &Value::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect()),
        &mut out,
    );
    Message::Binary(out.into())
}

fn field(m: &Value, key: &str) -> Option<Value> {
    match m {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

fn new_document_id() -> String {
    bs58::encode(uuid::Uuid::new_v4().as_bytes())
        .with_check()
        .into_string()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, peer: &str) -> (Socket, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws.send(frame(vec![
        ("type", text("join")),
        ("senderId", text(peer)),
        ("supportedProtocolVersions", Value::Array(vec![text("1")])),
        (
            "peerMetadata",
            Value::Map(vec![(text("isEphemeral"), Value::Bool(true))]),
        ),
    ]))
    .await
    .expect("join");
    loop {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            continue;
        };
        let v: Value = ciborium::from_reader(&b[..]).expect("cbor");
        if field(&v, "type")
            .and_then(|t| t.as_text().map(str::to_string))
            .as_deref()
            == Some("peer")
        {
            let server = field(&v, "senderId")
                .and_then(|s| s.as_text().map(str::to_string))
                .unwrap_or_default();
            return (ws, server);
        }
    }
}

struct Tracked {
    doc: Automerge,
    state: sync::State,
    target: Vec<ChangeHash>,
    started: Instant,
    done: Option<Duration>,
}

/// Drives sync messages for `docs` on one connection until every document reaches its target heads
/// on the other side (`towards_server`) or here (loading).
async fn drive(
    ws: &mut Socket,
    me: &str,
    server: &str,
    docs: &mut HashMap<String, Tracked>,
    towards_server: bool,
) {
    let mut pending = docs.len();
    let deadline = Instant::now() + Duration::from_secs(300);
    while pending > 0 {
        assert!(Instant::now() < deadline, "sync did not finish");
        let Some(Ok(msg)) = ws.next().await else {
            panic!("connection lost")
        };
        let Message::Binary(b) = msg else { continue };
        let v: Value = ciborium::from_reader(&b[..]).expect("cbor");
        let kind = field(&v, "type")
            .and_then(|t| t.as_text().map(str::to_string))
            .unwrap_or_default();
        if kind != "sync" {
            assert_ne!(kind, "error", "server error: {v:?}");
            continue;
        }
        let id = field(&v, "documentId")
            .and_then(|t| t.as_text().map(str::to_string))
            .unwrap_or_default();
        let data = field(&v, "data")
            .and_then(|d| d.as_bytes().cloned())
            .unwrap_or_default();
        let Some(t) = docs.get_mut(&id) else { continue };
        let m = sync::Message::decode(&data).expect("sync message");
        let their_heads = m.heads.clone();
        t.doc
            .receive_sync_message(&mut t.state, m)
            .expect("receive");
        let reached = if towards_server {
            their_heads == t.target
        } else {
            t.doc.get_heads() == t.target
        };
        if reached && t.done.is_none() {
            t.done = Some(t.started.elapsed());
            pending -= 1;
        }
        if let Some(reply) = t.doc.generate_sync_message(&mut t.state) {
            ws.send(frame(vec![
                ("type", text("sync")),
                ("senderId", text(me)),
                ("targetId", text(server)),
                ("documentId", text(&id)),
                ("data", Value::Bytes(reply.encode())),
            ]))
            .await
            .expect("send");
        }
    }
}

/// One client connection: creates and syncs `docs` documents; returns (id, heads, latency) each.
async fn client(
    url: String,
    c: usize,
    docs: usize,
    edits: usize,
) -> Vec<(String, Vec<ChangeHash>, Duration)> {
    let me = format!("load-{c}-{}", uuid::Uuid::new_v4().simple());
    let (mut ws, server) = connect(&url, &me).await;
    let mut tracked = HashMap::new();
    for d in 0..docs {
        let mut doc = Automerge::new();
        for e in 0..edits {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(ROOT, "client", c as i64)?;
                tx.put(ROOT, "doc", d as i64)?;
                tx.put(ROOT, "edit", e as i64)?;
                tx.put(ROOT, "text", format!("client {c} doc {d} edit {e}"))?;
                Ok(())
            })
            .expect("edit");
        }
        let id = new_document_id();
        let mut state = sync::State::new();
        let msg = doc
            .generate_sync_message(&mut state)
            .expect("first message");
        let target = doc.get_heads();
        let started = Instant::now();
        ws.send(frame(vec![
            ("type", text("sync")),
            ("senderId", text(&me)),
            ("targetId", text(&server)),
            ("documentId", text(&id)),
            ("data", Value::Bytes(msg.encode())),
        ]))
        .await
        .expect("send");
        tracked.insert(
            id,
            Tracked {
                doc,
                state,
                target,
                started,
                done: None,
            },
        );
    }
    drive(&mut ws, &me, &server, &mut tracked, true).await;
    let _ = ws.close(None).await;
    tracked
        .into_iter()
        .map(|(id, t)| (id, t.target, t.done.unwrap_or_default()))
        .collect()
}

/// A fresh connection requests every document and waits until it has each at its final heads.
async fn load_all(url: &str, docs: &[(String, Vec<ChangeHash>, Duration)]) -> Duration {
    let me = format!("loader-{}", uuid::Uuid::new_v4().simple());
    let (mut ws, server) = connect(url, &me).await;
    let started = Instant::now();
    let mut tracked = HashMap::new();
    for (id, heads, _) in docs {
        let doc = Automerge::new();
        let mut state = sync::State::new();
        let msg = doc
            .generate_sync_message(&mut state)
            .expect("request message");
        ws.send(frame(vec![
            ("type", text("request")),
            ("senderId", text(&me)),
            ("targetId", text(&server)),
            ("documentId", text(id)),
            ("data", Value::Bytes(msg.encode())),
        ]))
        .await
        .expect("send");
        tracked.insert(
            id.clone(),
            Tracked {
                doc,
                state,
                target: heads.clone(),
                started,
                done: None,
            },
        );
    }
    drive(&mut ws, &me, &server, &mut tracked, false).await;
    started.elapsed()
}

struct Server {
    child: Child,
    ws: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(which: &str) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let port = support::free_port();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (child, ws) = if which == "concord" {
        let child = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args([
                "serve",
                "--log-level",
                "warn",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("concord");
        (child, format!("ws://127.0.0.1:{port}/v1/automerge-repo"))
    } else {
        // The reference server's imports resolve from its own folder.
        let link = root.join("benches/repo_sync/node_modules");
        if !link.exists() {
            let _ = std::os::unix::fs::symlink(root.join("tests/js/node_modules"), &link);
        }
        let child = Command::new("node")
            .arg(root.join("benches/repo_sync/reference_server.mjs"))
            .arg(port.to_string())
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("node (run `npm install --prefix tests/js` first)");
        (child, format!("ws://127.0.0.1:{port}"))
    };
    wait_port(port).await;
    Server {
        child,
        ws,
        _dir: dir,
    }
}

fn rss_mib(pid: u32) -> f64 {
    support::rss_kib(pid) as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (clients, docs, edits) = (arg("--clients", 50), arg("--docs", 40), arg("--edits", 5));
    println!("workload: {clients} connections x {docs} documents x {edits} edits (protocol-level clients)");
    println!("| server | docs synced/s | sync p50 | sync p99 | fresh-client load docs/s | server RSS after |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut rates = Vec::new();
    for which in ["concord", "reference"] {
        let server = start(which).await;
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| tokio::spawn(client(server.ws.clone(), c, docs, edits)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client"));
        }
        let secs = started.elapsed().as_secs_f64();
        let load = load_all(&server.ws, &all).await;
        let mut lat: Vec<Duration> = all.iter().map(|(_, _, l)| *l).collect();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        let rate = all.len() as f64 / secs;
        rates.push(rate);
        println!(
            "| {which} | {rate:.0} | {:.1} ms | {:.1} ms | {:.0} | {:.1} MiB |",
            pct(0.5),
            pct(0.99),
            all.len() as f64 / load.as_secs_f64(),
            rss_mib(server.child.id())
        );
    }
    println!(
        "Concord / reference throughput = {:.1}x",
        rates[0] / rates[1].max(1e-9)
    );
}
