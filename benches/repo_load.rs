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

use support::arg;

use support::repo_client::{connect, drive, fetch, frame, new_document_id, text, Tracked};

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT};
use ciborium::Value;
use futures::SinkExt;

/// One client connection: creates and syncs `docs` documents; returns (id, heads, latency) each.
async fn client(
    url: String,
    c: usize,
    docs: usize,
    edits: usize,
) -> Vec<(String, Vec<ChangeHash>, Duration)> {
    let me = format!("load-{c}-{}", uuid::Uuid::new_v4().simple());
    let (mut ws, server) = connect(&url, &me, None).await;
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
        let targets: Vec<(String, Vec<ChangeHash>)> = all
            .iter()
            .map(|(id, heads, _)| (id.clone(), heads.clone()))
            .collect();
        let load = fetch(&server.ws, None, &targets).await;
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
