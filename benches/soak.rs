//! Soak: a 3-node cluster of real `concord` processes under steady mixed load for a long time,
//! reporting RSS and latency per time window, so leaks and slow degradation show.
//!
//! 1. Calibrate: closed-loop mixed load over `--conns` connections for `--calibrate-secs`; the
//!    throughput reached is the measured maximum.
//! 2. Soak: open-loop load at `--load` (default 0.5) of that maximum for `--secs`, requests spread
//!    over the three nodes; one table row per `--window` seconds: achieved rate, p50/p99/max
//!    latency, errors, and each node's RSS.
//! 3. The cluster must converge afterwards (same versions on every node).
//!
//! The mix: 50% GET, 30% merge-patch PATCH, 15% counter increments (ops), 5% text splices (ops),
//! over `--docs` documents preloaded on one node and replicated.
//!
//! `--rate N` soaks at N requests/s instead of calibrating (to compare two settings at one load);
//! `--cache-bytes` and `--compact-min-bytes` are passed to the nodes.
//!
//! Run (about 11 minutes): `cargo bench --profile dev --bench soak -- --secs 600`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use serde_json::{json, Value};
use support::Process;

const SECRET: &str = "soak-cluster-secret-0123456789";

struct Opts {
    docs: usize,
    conns: usize,
    calibrate_secs: u64,
    secs: u64,
    window: u64,
    load: f64,
    /// Node settings passed through (`--cache-bytes`, `--compact-min-bytes`) when not their
    /// defaults: a small document cache reaches the full-cache regime of a long soak in minutes.
    node_args: Vec<String>,
    /// A fixed soak rate instead of `--load` × the calibrated maximum.
    rate: Option<f64>,
}

fn opts() -> Opts {
    let mut o = Opts {
        docs: 10_000,
        conns: 64,
        calibrate_secs: 15,
        secs: 600,
        window: 30,
        load: 0.5,
        node_args: Vec::new(),
        rate: None,
    };
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2) {
        let v = || w[1].parse::<f64>().ok();
        match w[0].as_str() {
            "--docs" => o.docs = v().map_or(o.docs, |v| v as usize),
            "--conns" => o.conns = v().map_or(o.conns, |v| v as usize),
            "--calibrate-secs" => o.calibrate_secs = v().map_or(o.calibrate_secs, |v| v as u64),
            "--secs" => o.secs = v().map_or(o.secs, |v| v as u64),
            "--window" => o.window = v().map_or(o.window, |v| v as u64),
            "--load" => o.load = v().unwrap_or(o.load),
            "--rate" => o.rate = v(),
            "--cache-bytes" | "--compact-min-bytes" => o.node_args.extend(w.iter().cloned()),
            _ => {}
        }
    }
    o
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// One request of the mix against `base` (a node's URL); true when it succeeded.
async fn one_request(http: &reqwest::Client, base: &str, docs: u64, r: u64) -> bool {
    let doc = (r >> 8) % docs;
    let url = format!("{base}/v1/collections/soak/docs/d{doc}");
    let resp = match r % 100 {
        0..50 => http.get(&url).send().await,
        50..80 => {
            http.patch(&url)
                .header("content-type", "application/merge-patch+json")
                .body(format!("{{\"n\":{},\"s\":\"v{}\"}}", r >> 20, r % 1000))
                .send()
                .await
        }
        80..95 => {
            http.post(format!("{url}/ops"))
                .json(&json!({"ops": [{"op": "increment", "path": "/hits"}]}))
                .send()
                .await
        }
        _ => {
            http.post(format!("{url}/ops"))
                .json(&json!({"ops": [{"op": "splice", "path": "/text", "index": 0, "delete": 1, "insert": "ab"}]}))
                .send()
                .await
        }
    };
    match resp {
        Ok(resp) => {
            let ok = resp.status().is_success();
            let _ = resp.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

async fn start_cluster(node_args: &[String]) -> Vec<Process> {
    let ports: Vec<u16> = (0..3).map(|_| support::free_port()).collect();
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        let mut args = [
            "--cluster-secret",
            SECRET,
            "--peers",
            &peers.join(","),
            "--max-concurrent-requests",
            "1024",
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(node_args);
        nodes.push(Process::start(*port, &args).await);
    }
    nodes
}

async fn preload(http: &reqwest::Client, nodes: &[Process], docs: usize) {
    for chunk in (0..docs).collect::<Vec<_>>().chunks(500) {
        let writes: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"id": format!("d{i}"), "op": "put",
                       "body": {"n": 0, "s": "", "name": format!("doc {i}"), "text": "hello"}})
            })
            .collect();
        let r = http
            .post(format!("{}/v1/collections/soak/bulk-write", nodes[0].url))
            .json(&json!({"writes": writes}))
            .send()
            .await
            .expect("bulk-write");
        assert!(r.status().is_success(), "preload: {}", r.status());
        // Counters need a counter to increment: create them with the documents.
        let ops = chunk.iter().map(|i| {
            http.post(format!(
                "{}/v1/collections/soak/docs/d{i}/ops",
                nodes[0].url
            ))
            .json(&json!({"ops": [{"op": "counter", "path": "/hits"}]}))
            .send()
        });
        for r in futures::future::join_all(ops).await {
            assert!(r.expect("counter").status().is_success());
        }
    }
    wait_converged("preload", http, nodes, docs, Duration::from_secs(300)).await;
}

/// The `soak` listings of every node, compared page by page.
async fn converged(http: &reqwest::Client, nodes: &[Process], docs: usize) -> bool {
    let mut first: Option<Vec<Value>> = None;
    for n in nodes {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/collections/soak/docs?limit=1000", n.url);
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let Ok(r) = http.get(&url).send().await else {
                return false;
            };
            let Ok(v) = r.json::<Value>().await else {
                return false;
            };
            let page = v["docs"].as_array().cloned().unwrap_or_default();
            let last = page.last().and_then(|d| d["id"].as_str()).map(String::from);
            all.extend(page.into_iter().map(|d| json!([d["id"], d["version"]])));
            match (last, v["next"].as_str()) {
                (Some(l), Some(_)) => after = Some(l),
                _ => break,
            }
        }
        if all.len() != docs {
            return false;
        }
        match &first {
            None => first = Some(all),
            Some(f) if *f != all => return false,
            Some(_) => {}
        }
    }
    true
}

async fn wait_converged(
    what: &str,
    http: &reqwest::Client,
    nodes: &[Process],
    docs: usize,
    within: Duration,
) {
    let start = Instant::now();
    while !converged(http, nodes, docs).await {
        assert!(start.elapsed() < within, "the cluster did not converge");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{what}: converged in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Closed loop: every connection sends its next request as soon as the last one is answered.
async fn calibrate(http: &reqwest::Client, nodes: &[Process], o: &Opts) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(o.calibrate_secs);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let tasks: Vec<_> = (0..o.conns)
        .map(|c| {
            let (http, done, urls, docs) =
                (http.clone(), done.clone(), urls.clone(), o.docs as u64);
            tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
                while Instant::now() < deadline {
                    let r = xorshift(&mut seed);
                    let base = &urls[(r >> 40) as usize % urls.len()];
                    if one_request(&http, base, docs, r).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[derive(Default)]
struct Window {
    lat_us: Vec<u32>,
    errors: u64,
}

/// Open loop at `rate` requests per second for `o.secs`, with one report row per window.
async fn soak(http: &reqwest::Client, nodes: &[Process], o: &Opts, rate: f64) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Option<u32>)>();
    let in_flight_cap = Arc::new(tokio::sync::Semaphore::new(4 * o.conns));
    let skipped = Arc::new(AtomicU64::new(0));
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let start = Instant::now();
    let windows = (o.secs / o.window).max(1) as usize;
    let dispatcher = {
        let (http, urls, skipped, cap) = (
            http.clone(),
            urls.clone(),
            skipped.clone(),
            in_flight_cap.clone(),
        );
        let (docs, secs, window) = (o.docs as u64, o.secs, o.window);
        tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seed = 0x2545_F491_4F6C_DD1Du64;
            let mut sent = 0f64;
            while start.elapsed() < Duration::from_secs(secs) {
                ticker.tick().await;
                // Catch up to where the schedule says we should be (open loop).
                let due = rate * start.elapsed().as_secs_f64();
                while sent < due {
                    sent += 1.0;
                    let Ok(permit) = cap.clone().try_acquire_owned() else {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let r = xorshift(&mut seed);
                    let base = urls[(r >> 40) as usize % urls.len()].clone();
                    let (http, tx) = (http.clone(), tx.clone());
                    let w = (start.elapsed().as_secs() / window) as usize;
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let ok = one_request(&http, &base, docs, r).await;
                        let lat = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        let _ = tx.send((w, ok.then_some(lat)));
                        drop(permit);
                    });
                }
            }
        })
    };

    println!(
        "| t (s) | rate | p50 | p99 | max | errors | RSS node 1 | RSS node 2 | RSS node 3 | node 1: heap | doc cache | memtables |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut acc: Vec<Window> = (0..=windows).map(|_| Window::default()).collect();
    let mut rss_rows = Vec::new();
    for w in 0..windows {
        let end = start + Duration::from_secs(o.window * (w as u64 + 1));
        while let Ok(Some((wi, lat))) = tokio::time::timeout_at(end.into(), rx.recv()).await {
            let slot = &mut acc[wi.min(windows)];
            match lat {
                Some(l) => slot.lat_us.push(l),
                None => slot.errors += 1,
            }
        }
        let rss: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
        let gauges = metrics(http, &nodes[0]).await;
        let gauge = |name: &str| gauges.get(name).copied().unwrap_or(0.0) / (1 << 20) as f64;
        // Requests still in flight finish into this window: the row is printed one window late
        // only in the sense that stragglers of the last moments may be missing.
        let slot = &mut acc[w];
        slot.lat_us.sort_unstable();
        let pct = |p: f64| {
            if slot.lat_us.is_empty() {
                return 0.0;
            }
            let i = ((slot.lat_us.len() - 1) as f64 * p).round() as usize;
            slot.lat_us[i] as f64 / 1000.0
        };
        println!(
            "| {} | {:.0}/s | {:.1} ms | {:.1} ms | {:.0} ms | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
            o.window * (w as u64 + 1),
            slot.lat_us.len() as f64 / o.window as f64,
            pct(0.5),
            pct(0.99),
            pct(1.0),
            slot.errors,
            rss[0] as f64 / 1024.0,
            rss[1] as f64 / 1024.0,
            rss[2] as f64 / 1024.0,
            gauge("concord_heap_allocated_bytes"),
            gauge("concord_cache_bytes"),
            gauge("concord_memtable_bytes"),
        );
        rss_rows.push(rss.iter().sum::<u64>());
    }
    let _ = dispatcher.await;
    println!(
        "requests not sent because {} were already in flight: {}",
        4 * o.conns,
        skipped.load(Ordering::Relaxed)
    );
    if rss_rows.len() >= 4 {
        let half = rss_rows[rss_rows.len() / 2] as f64;
        let last = *rss_rows.last().unwrap_or(&0) as f64;
        println!(
            "total RSS: {:.0} MiB at half time, {:.0} MiB at the end ({:+.1}%)",
            half / 1024.0,
            last / 1024.0,
            100.0 * (last - half) / half.max(1.0)
        );
    }
}

/// The node's gauges (`/metrics` lines without labels).
async fn metrics(http: &reqwest::Client, node: &Process) -> std::collections::HashMap<String, f64> {
    let text = match http.get(format!("{}/metrics", node.url)).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`
    }
    let o = opts();
    println!(
        "soak: 3 nodes, {} docs, {} s at {:.0}% of the calibrated maximum (machine: {} cores), node settings {:?}",
        o.docs,
        o.secs,
        o.load * 100.0,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        o.node_args
    );
    let http = support::client_builder()
        .pool_max_idle_per_host(4 * o.conns)
        .build()
        .expect("client");
    let nodes = start_cluster(&o.node_args).await;
    preload(&http, &nodes, o.docs).await;
    let rate = match o.rate {
        // Two runs compared side by side need the same load, not each its own calibration.
        Some(rate) => {
            println!("not calibrated: soaking at the fixed rate of {rate:.0}/s");
            rate
        }
        None => {
            let max = calibrate(&http, &nodes, &o).await;
            let rate = max * o.load;
            println!(
                "calibrated maximum: {max:.0} requests/s over {} connections; soaking at {rate:.0}/s",
                o.conns
            );
            rate
        }
    };
    let idle: Vec<f64> = nodes.iter().map(|n| n.rss_kib() as f64 / 1024.0).collect();
    println!("RSS before the soak: {idle:.0?} MiB");
    soak(&http, &nodes, &o, rate).await;
    wait_converged(
        "after the soak",
        &http,
        &nodes,
        o.docs,
        Duration::from_secs(300),
    )
    .await;
}
