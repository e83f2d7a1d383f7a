//! Replication benchmarks (one run, side by side):
//! 1. anti-entropy cost when in sync, at 1k and 100k documents: bytes and time of one round;
//! 2. convergence after a partition heals: 3 nodes, `--docs` documents, `--changed` documents
//!    changed on each side: time from heal to identical digests, and bytes exchanged relative to
//!    the size of the changes that had to move;
//! 3. replication lag under load: two `concord` processes, durable PATCH load on one, p50/p99
//!    time until a write made on the first is readable on the second.
//!
//! Run: `cargo bench --profile dev --bench replication -- --docs 100000 --changed 1000,10000`

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord::config::Config;
use concord::node::Node;
use concord::replication::anti_entropy::round;
use concord::server::open_node;
use concord::store::{DocKey, Origin, StoreError};
use serde_json::json;

const SECRET: &str = "bench-cluster-secret-0123456789";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// An in-process node serving its API (peer endpoints included) with no background replication:
/// the benchmark runs anti-entropy rounds itself, so partitions are simply "no rounds".
async fn node(dir: &std::path::Path) -> (Arc<Node>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let config = Config {
        data_dir: dir.to_path_buf(),
        cluster_secret: Some(SECRET.into()),
        ..Config::default()
    };
    let n = open_node(config, addr.clone()).await.expect("node");
    let app = concord::server::router(n.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    (n, addr)
}

/// Writes `count` small documents on `nodes[0]` and copies their changes to the others, so all
/// start identical.
async fn preload(nodes: &[Arc<Node>], count: usize) {
    let first = nodes[0].clone();
    let others: Vec<Arc<Node>> = nodes[1..].to_vec();
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for t in 0..8 {
                let first = &first;
                let others = &others;
                s.spawn(move || {
                    for i in (t..count).step_by(8) {
                        let key = DocKey::new("bench", &format!("d{i}")).expect("key");
                        let body = json!({"n": i, "name": format!("document {i}")})
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        first
                            .store
                            .write::<_, StoreError>(&key, |doc, _| {
                                concord::doc::write::apply(
                                    doc,
                                    &concord::doc::write::Write::Replace(body),
                                    1,
                                )?;
                                Ok(())
                            })
                            .expect("write");
                        let changes = first
                            .store
                            .read(&key, |doc, _| doc.get_changes(&[]))
                            .expect("read")
                            .unwrap_or_default();
                        for o in others {
                            let c = changes.clone();
                            o.store
                                .write_from::<_, StoreError>(Origin::Peer, &key, |doc, _| {
                                    doc.apply_changes(c)
                                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                                })
                                .expect("copy");
                        }
                    }
                });
            }
        });
    })
    .await
    .expect("preload");
}

/// Changes `count` documents starting at `from` on `node`; returns the bytes of the new changes.
async fn change(node: &Arc<Node>, from: usize, count: usize, tag: &str) -> u64 {
    let n = node.clone();
    let tag = tag.to_string();
    tokio::task::spawn_blocking(move || {
        let total = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (n, tag, total) = (&n, &tag, &total);
                s.spawn(move || {
                    for i in (from + t..from + count).step_by(8) {
                        let key = DocKey::new("bench", &format!("d{i}")).expect("key");
                        let patch = json!({ "edited_by": tag })
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        let before = n
                            .store
                            .meta(&key)
                            .ok()
                            .flatten()
                            .map(|m| m.heads())
                            .unwrap_or_default();
                        n.store
                            .write::<_, StoreError>(&key, |doc, _| {
                                concord::doc::write::apply(
                                    doc,
                                    &concord::doc::write::Write::MergePatch(patch),
                                    2,
                                )?;
                                Ok(())
                            })
                            .expect("edit");
                        let bytes: usize = n
                            .store
                            .read(&key, |doc, _| {
                                doc.get_changes(&before)
                                    .iter()
                                    .map(|c| c.raw_bytes().len())
                                    .sum()
                            })
                            .expect("read")
                            .unwrap_or(0);
                        total.fetch_add(bytes as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        total.load(Ordering::Relaxed)
    })
    .await
    .expect("change")
}

async fn roots(nodes: &[Arc<Node>]) -> Vec<u64> {
    nodes.iter().map(|n| n.store.digest_root()).collect()
}

async fn in_sync_cost(docs: usize) {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, _) = node(dirs[0].path()).await;
    let (b, b_addr) = node(dirs[1].path()).await;
    a.membership.learn([b_addr.clone()]);
    preload(&[a.clone(), b.clone()], docs).await;
    assert_eq!(a.store.digest_root(), b.store.digest_root());
    let mut bytes = 0;
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = round(&a.replica, &a.peer_client, &b_addr)
            .await
            .expect("round");
        times.push(t.elapsed());
        bytes = r.bytes_sent + r.bytes_received;
        assert_eq!(r.docs, 0);
    }
    times.sort();
    println!(
        "| {docs} documents, in sync | {bytes} B per round | {:.2} ms (median of 20) |",
        times[10].as_secs_f64() * 1e3
    );
}

async fn heal(docs: usize, changed: usize) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for d in &dirs {
        let (n, a) = node(d.path()).await;
        nodes.push(n);
        addrs.push(a);
    }
    for n in &nodes {
        n.membership.learn(addrs.iter().cloned());
    }
    preload(&nodes, docs).await;
    // Partition {0} | {1, 2}: side A edits documents [0, changed), side B [changed, 2*changed).
    let a_bytes = change(&nodes[0], 0, changed, "a").await;
    let b_bytes = change(&nodes[1], changed, changed, "b").await;
    round(&nodes[1].replica, &nodes[1].peer_client, &addrs[2])
        .await
        .expect("side B converges internally");
    // What must move at the heal: A's changes to two nodes, B's changes to one.
    let must_move = 2 * a_bytes + b_bytes;
    let t = Instant::now();
    let mut moved = 0;
    let mut rounds = 0;
    while roots(&nodes).await.windows(2).any(|w| w[0] != w[1]) {
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            let r = round(&nodes[i].replica, &nodes[i].peer_client, &addrs[j])
                .await
                .expect("round");
            moved += r.bytes_sent + r.bytes_received;
            rounds += 1;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "no convergence");
    }
    println!(
        "| {docs} documents, {changed} changed per side | {:.2} s to identical digests ({rounds} rounds) | {moved} B exchanged for {must_move} B of changes = {:.2}x |",
        t.elapsed().as_secs_f64(),
        moved as f64 / must_move.max(1) as f64
    );
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

async fn lag(secs: u64) {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let ports: Vec<u16> = (0..2).map(|_| support::free_port()).collect();
    let mut procs = Vec::new();
    for i in 0..2 {
        let child = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args([
                "serve",
                "--log-level",
                "warn",
                "--listen",
                &format!("127.0.0.1:{}", ports[i]),
            ])
            .args([
                "--peers",
                &format!("127.0.0.1:{}", ports[1 - i]),
                "--cluster-secret",
                SECRET,
                "--data-dir",
            ])
            .arg(dirs[i].path())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        procs.push(Proc(child));
    }
    let http = support::client_builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let url = |i: usize, p: &str| format!("http://127.0.0.1:{}{}", ports[i], p);
    for i in 0..2 {
        while http.get(url(i, "/v1/health")).send().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Documents for the load, created on node 0.
    for chunk in (0..10_000).collect::<Vec<_>>().chunks(1000) {
        let writes: Vec<_> = chunk
            .iter()
            .map(|i| json!({"id": format!("d{i}"), "op": "put", "body": {"n": 0}}))
            .collect();
        http.post(url(0, "/v1/collections/load/bulk-write"))
            .json(&json!({"writes": writes}))
            .send()
            .await
            .expect("bulk");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for c in 0..32u64 {
        let (http, stop, base) = (
            http.clone(),
            stop.clone(),
            url(0, "/v1/collections/load/docs"),
        );
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut x = c + 1;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                n += 1;
                let _ = http
                    .patch(format!("{base}/d{}", (x >> 33) % 10_000))
                    .header("content-type", "application/json")
                    .body(format!("{{\"n\":{n}}}"))
                    .send()
                    .await;
            }
            n
        }));
    }
    let mut lags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut probe = 0;
    while Instant::now() < deadline {
        probe += 1;
        let r = http
            .put(url(0, &format!("/v1/collections/probe/docs/p{probe}")))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("probe write");
        assert!(r.status().is_success());
        let t = Instant::now();
        loop {
            let r = http
                .get(url(1, &format!("/v1/collections/probe/docs/p{probe}")))
                .send()
                .await;
            if matches!(r, Ok(ref r) if r.status().is_success()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        lags.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for l in load {
        writes += l.await.unwrap_or(0);
    }
    lags.sort();
    let pct = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "| replication lag under load ({:.0} PATCH/s on node 0) | p50 {:.1} ms | p99 {:.1} ms | {} probes |",
        writes as f64 / secs as f64,
        pct(0.5),
        pct(0.99),
        lags.len()
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let docs: usize = arg("--docs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let changed: Vec<usize> = arg("--changed")
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10_000]);
    let secs: u64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(10);
    println!("| scenario | figure | figure | figure |");
    println!("| --- | --- | --- | --- |");
    for d in [1000, docs] {
        in_sync_cost(d).await;
    }
    for c in changed {
        heal(docs, c).await;
    }
    lag(secs).await;
}
