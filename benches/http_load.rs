//! HTTP load harness: a real `concord` process on loopback, driven by this process.
//!
//! Phases (one run, side by side, so ratios are meaningful on a noisy machine):
//! 1. durable single-field PATCHes to `--docs` documents over `--conns` connections;
//! 2. GETs of the same documents, then `/v1/health` (the HTTP ceiling for a read), and both again
//!    from `wrk` when it is installed (an external load generator), then PATCHes from `wrk`;
//! 3. the same PATCH commit path in-process against the store (no HTTP): the ceiling;
//! 4. RSS of a node holding `--rss-docs` small documents with the cache full.
//!
//! Run: `cargo bench --bench http_load -- --docs 10000 --conns 64 --secs 10 --rss-docs 100000`
//!
//! With `--only ceiling` or `--only wrk-patch`, just that phase (after its preload): what
//! `benches/profile_patch.sh` profiles to show where a durable PATCH's time goes.
//!
//! With `--tls`, instead: the same PATCH and GET phases against two processes, one over plain
//! HTTP and one over TLS (a throwaway CA; connections reused, `--conns` of them), alternating
//! plain and TLS twice so drift on a noisy machine falls on both; then `wrk` GETs of both.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use concord::metrics::Metrics;
use concord::store::{DocKey, Store, StoreError, StoreOptions};
use serde_json::json;

struct Opts {
    docs: usize,
    conns: usize,
    secs: u64,
    rss_docs: usize,
    /// `--only <phase>`: run one phase alone (for a profiler).
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        docs: 10_000,
        conns: 64,
        secs: 10,
        rss_docs: 100_000,
        only: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let val = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--docs" => o.docs = val().unwrap_or(o.docs as u64) as usize,
            "--conns" => o.conns = val().unwrap_or(o.conns as u64) as usize,
            "--secs" => o.secs = val().unwrap_or(o.secs),
            "--rss-docs" => o.rss_docs = val().unwrap_or(o.rss_docs as u64) as usize,
            "--only" => o.only = args.get(i + 1).cloned(),
            _ => {}
        }
        i += 1;
    }
    o
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

struct Report {
    name: String,
    ops: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u32>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
    fn print(&self) {
        println!(
            "| {} | {:.0}/s | {:.2} ms | {:.2} ms | {} | {} |",
            self.name,
            self.rate(),
            self.pct(0.50),
            self.pct(0.99),
            self.ops,
            self.errors
        );
    }
}

async fn preload(url: &str, collection: &str, n: usize, parallel: usize) {
    preload_with(
        &support::client_builder().build().unwrap(),
        url,
        collection,
        n,
        parallel,
    )
    .await
}

async fn preload_with(
    http: &reqwest::Client,
    url: &str,
    collection: &str,
    n: usize,
    parallel: usize,
) {
    let chunks: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| c.to_vec())
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for chunk in chunks {
        let http = http.clone();
        let url = format!("{url}/v1/collections/{collection}/bulk-write");
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let writes: Vec<_> = chunk
                .iter()
                .map(|i| json!({"id": format!("d{i}"), "op": "put", "body": {"n": 0, "name": format!("doc {i}"), "a": i, "b": true}}))
                .collect();
            let r = http.post(url).json(&json!({"writes": writes})).send().await.expect("bulk");
            assert!(r.status().is_success());
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
}

/// What one HTTP phase requests.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Patch,
    Get,
    Health,
}

async fn http_phase(name: &str, url: &str, o: &Opts, kind: Kind) -> Report {
    let http = support::client_builder()
        .pool_max_idle_per_host(o.conns)
        .build()
        .expect("client");
    http_phase_with(&http, name, url, o, kind).await
}

async fn http_phase_with(
    http: &reqwest::Client,
    name: &str,
    url: &str,
    o: &Opts,
    kind: Kind,
) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..o.conns {
        let (http, stop, errors) = (http.clone(), stop.clone(), errors.clone());
        let base = format!("{url}/v1/collections/load/docs");
        let health = format!("{url}/v1/health");
        let docs = o.docs as u64;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut seed = 0x9E3779B97F4A7C15u64 ^ (c as u64 + 1);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let doc = xorshift(&mut seed) % docs;
                let t = Instant::now();
                let r = match kind {
                    Kind::Patch => {
                        n += 1;
                        http.patch(format!("{base}/d{doc}"))
                            .header("content-type", "application/merge-patch+json")
                            .body(format!("{{\"n\":{n}}}"))
                            .send()
                            .await
                    }
                    Kind::Get => http.get(format!("{base}/d{doc}")).send().await,
                    Kind::Health => http.get(&health).send().await,
                };
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("load task"));
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Report {
        name: name.into(),
        ops: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        lat_us: lat,
    }
}

/// The PATCH commit path without HTTP: same store, same merge patch, same durable batch.
fn in_process_phase(o: &Opts) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(Store::open(dir.path(), StoreOptions::default(), Metrics::new()).expect("store"));
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = store.clone();
            let docs = o.docs;
            s.spawn(move || {
                for i in (t..docs).step_by(4) {
                    let key = DocKey::new("load", &format!("d{i}")).expect("key");
                    let body = json!({"n": 0, "name": format!("doc {i}"), "a": i, "b": true})
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    store
                        .write::<_, StoreError>(&key, |doc, _| {
                            concord::doc::write::apply(
                                doc,
                                &concord::doc::write::Write::Replace(body),
                                1,
                            )?;
                            Ok(())
                        })
                        .expect("preload");
                }
            });
        }
    });
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let lat = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.conns)
            .map(|c| {
                let store = &store;
                let stop = &stop;
                let docs = o.docs as u64;
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut seed = 0x9E3779B97F4A7C15u64 ^ (c as u64 + 1);
                    let mut n = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        let doc = xorshift(&mut seed) % docs;
                        n += 1;
                        let key = DocKey::new("load", &format!("d{doc}")).expect("key");
                        let patch = json!({"n": n}).as_object().cloned().unwrap_or_default();
                        let t = Instant::now();
                        store
                            .write::<_, StoreError>(&key, |d, _| {
                                concord::doc::write::apply(
                                    d,
                                    &concord::doc::write::Write::MergePatch(patch),
                                    n,
                                )?;
                                Ok(())
                            })
                            .expect("commit");
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(o.secs));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect::<Vec<u32>>()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat = lat;
    lat.sort_unstable();
    Report {
        name: "in-process PATCH commit (ceiling)".into(),
        ops: lat.len() as u64,
        errors: 0,
        secs,
        lat_us: lat,
    }
}

async fn rss_phase(o: &Opts) {
    let server = support::Process::start(0, &[]).await;
    let idle = server.rss_kib();
    preload(&server.url, "rss", o.rss_docs, 2).await;
    let http = support::client_builder().build().unwrap();
    // Read every document back (twice): the first pass warms what can be warmed, the second
    // shows what the node then answers from memory alone.
    let read_all = || async {
        for chunk in (0..o.rss_docs).collect::<Vec<_>>().chunks(1000) {
            let ids: Vec<String> = chunk.iter().map(|i| format!("d{i}")).collect();
            let r = http
                .post(format!("{}/v1/collections/rss/bulk-read", server.url))
                .json(&json!({"ids": ids}))
                .send()
                .await
                .expect("bulk-read");
            assert!(r.status().is_success());
        }
    };
    let scrape = || async {
        http.get(format!("{}/metrics", server.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    };
    let value = |metrics: &str, name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    read_all().await;
    let warm = scrape().await;
    read_all().await;
    let metrics = scrape().await;
    let delta = |name: &str| {
        let n = |m: &str| value(m, name).parse::<f64>().unwrap_or(f64::NAN);
        n(&metrics) - n(&warm)
    };
    println!(
        "RSS: idle {:.1} MiB; with {} small documents stored and read back: {:.1} MiB (document cache: {} documents, {} estimated bytes; block cache {} bytes; store {} bytes)",
        idle as f64 / 1024.0,
        o.rss_docs,
        server.rss_kib() as f64 / 1024.0,
        value(&metrics, "concord_cache_documents"),
        value(&metrics, "concord_cache_bytes"),
        value(&metrics, "concord_block_cache_bytes"),
        value(&metrics, "concord_store_bytes"),
    );
    println!(
        "Second read of all {} documents: {} data blocks read from disk, {} documents loaded, {} answered from the JSON in memory, {} not",
        o.rss_docs,
        delta("concord_block_reads_total"),
        delta("concord_cache_misses_total"),
        delta("concord_json_cache_hits_total"),
        delta("concord_json_cache_misses_total"),
    );
    let per = |bytes: &str, docs: &str| {
        let n = |name: &str| value(&metrics, name).parse::<f64>().unwrap_or(f64::NAN);
        n(bytes) / n(docs)
    };
    println!(
        "Bytes per cached document: JSON {:.0} ({} documents, {} bytes), live Automerge {:.0} ({} documents)",
        per("concord_json_cache_bytes", "concord_json_cache_documents"),
        value(&metrics, "concord_json_cache_documents"),
        value(&metrics, "concord_json_cache_bytes"),
        per("concord_cache_bytes", "concord_cache_documents"),
        value(&metrics, "concord_cache_documents"),
    );
}

/// The same reads from an external load generator (`wrk`, when installed: `apt-get install wrk`),
/// two threads, `--conns` connections: a random document per request (a Lua script), then
/// `/v1/health`, side by side.
fn wrk_phase(url: &str, o: &Opts) {
    let (doc, health) = wrk_rates(url, o);
    if let (Some(d), Some(h)) = (doc, health) {
        println!(
            "wrk: GET a document / GET /v1/health = {:.2}",
            d / h.max(1.0)
        );
    }
}

fn wrk_installed() -> bool {
    let found = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        println!("wrk: not installed (apt-get install wrk); external load generator phase skipped");
    }
    found
}

/// One `wrk` run (two threads, `--conns` connections, `--secs`), its row printed; the rate, or
/// `None` when wrk failed. `script`: Lua that makes each request.
fn wrk_run(url: &str, o: &Opts, name: &str, path: &str, script: Option<&str>) -> Option<f64> {
    let dir = std::env::temp_dir().join(format!("concord-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join("requests.lua");
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{}", o.conns),
        &format!("-d{}s", o.secs),
        "--latency",
    ]);
    if let Some(s) = script {
        std::fs::write(&file, s).ok()?;
        cmd.arg("-s").arg(&file);
    }
    let out = cmd.arg(format!("{url}{path}")).output().ok();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out?.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    let rate = field("Requests/sec:")?.parse::<f64>().ok()?;
    let non2xx = text
        .lines()
        .find(|l| l.trim().starts_with("Non-2xx"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("0")
        .to_string();
    println!(
        "| wrk {name} ({url}) | {rate:.0}/s | {} | {} | | {non2xx} |",
        field("50%").unwrap_or_default(),
        field("99%").unwrap_or_default(),
    );
    Some(rate)
}

/// `wrk` rates of GET a document and GET `/v1/health` (`None` when wrk is missing or failed).
fn wrk_rates(url: &str, o: &Opts) -> (Option<f64>, Option<f64>) {
    if !wrk_installed() {
        return (None, None);
    }
    let script = format!(
        "math.randomseed(7)\nrequest = function()\n  return wrk.format(\"GET\", \"/v1/collections/load/docs/d\" .. math.random(0, {}))\nend\n",
        o.docs - 1
    );
    let doc = wrk_run(url, o, "GET a document", "/", Some(&script));
    let health = wrk_run(url, o, "GET /v1/health", "/v1/health", None);
    (doc, health)
}

/// Durable single-field merge-patch PATCHes to random documents from `wrk`: the same request as
/// the in-process generator's PATCH phase, from a client that costs the server's two cores far
/// less than this process's HTTP client does.
fn wrk_patch(url: &str, o: &Opts) -> Option<f64> {
    if !wrk_installed() {
        return None;
    }
    // Each of wrk's threads has its own Lua state, seeded apart (`setup` numbers them), so no
    // two patches of a document are the same: an identical patch commits nothing.
    let script = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads * 7919)
end
function init(args)
  math.randomseed(seed)
end
local headers = {["Content-Type"] = "application/merge-patch+json"}
request = function()
  local path = "/v1/collections/load/docs/d" .. math.random(0, DOCS_MINUS_ONE)
  return wrk.format("PATCH", path, headers, '{"n":' .. math.random(1, 2000000000) .. '}')
end
"#
    .replace("DOCS_MINUS_ONE", &(o.docs - 1).to_string());
    wrk_run(url, o, "PATCH (durable, 1 field)", "/", Some(&script))
}

/// `--tls`: plain HTTP and TLS side by side (two processes, the same documents), PATCH and GET
/// over reused connections, then `wrk` GETs; TLS's cost as a share of plain throughput.
async fn tls_comparison(o: &Opts) {
    use concord::tls::local_ca::{write_node, LocalCa, Validity};
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = LocalCa::new("bench CA").expect("CA");
    let pem = ca
        .node("bench", &["127.0.0.1"], Validity::Lasting)
        .expect("certificate");
    let files = write_node(pki.path(), "node", &pem).expect("certificate files");
    let tls_http = support::client_builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.cert_pem.as_bytes()).expect("CA"))
        .pool_max_idle_per_host(o.conns)
        .build()
        .expect("client");
    let plain_http = support::client_builder()
        .pool_max_idle_per_host(o.conns)
        .build()
        .expect("client");
    let plain = support::Process::start(0, &[]).await;
    let tls_args = [
        "--tls-cert".to_string(),
        files.cert.display().to_string(),
        "--tls-key".to_string(),
        files.key.display().to_string(),
    ];
    let tls = support::Process::start_tls(0, &tls_args, tls_http.clone()).await;
    preload_with(&plain_http, &plain.url, "load", o.docs, 2).await;
    preload_with(&tls_http, &tls.url, "load", o.docs, 2).await;
    for (kind, what) in [
        (Kind::Patch, "PATCH (durable, 1 field)"),
        (Kind::Get, "GET"),
    ] {
        let (mut p_ops, mut t_ops, mut p_secs, mut t_secs) = (0u64, 0u64, 0f64, 0f64);
        for round in 0..2 {
            let p = http_phase_with(
                &plain_http,
                &format!("plain {what} #{round}"),
                &plain.url,
                o,
                kind,
            )
            .await;
            p.print();
            let t = http_phase_with(
                &tls_http,
                &format!("TLS {what} #{round}"),
                &tls.url,
                o,
                kind,
            )
            .await;
            t.print();
            (p_ops, p_secs, t_ops, t_secs) = (
                p_ops + p.ops,
                p_secs + p.secs,
                t_ops + t.ops,
                t_secs + t.secs,
            );
        }
        let ratio = (t_ops as f64 / t_secs) / (p_ops as f64 / p_secs).max(1.0);
        println!(
            "{what}: TLS / plain throughput = {ratio:.2} (TLS costs {:.0}%)",
            100.0 * (1.0 - ratio)
        );
    }
    // Alternated too: plain, TLS, plain, TLS.
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        p.push(wrk_rates(&plain.url, o).0);
        t.push(wrk_rates(&tls.url, o).0);
    }
    let sum = |v: &[Option<f64>]| {
        v.iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .map(|r| r.iter().sum::<f64>())
    };
    if let (Some(p), Some(t)) = (sum(&p), sum(&t)) {
        println!(
            "wrk GET a document: TLS / plain throughput = {:.2} (TLS costs {:.0}%)",
            t / p.max(1.0),
            100.0 * (1.0 - t / p.max(1.0))
        );
    }
}

#[tokio::main]
async fn main() {
    let o = opts();
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`
    }
    println!(
        "docs={} conns={} secs={} (machine: {} cores)",
        o.docs,
        o.conns,
        o.secs,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| phase | throughput | p50 | p99 | ops | errors |");
    println!("| --- | --- | --- | --- | --- | --- |");
    if support::flag("--tls") {
        tls_comparison(&o).await;
        return;
    }
    match o.only.as_deref() {
        None => {}
        Some("ceiling") => {
            let ceiling = tokio::task::spawn_blocking(move || in_process_phase(&opts()))
                .await
                .expect("ceiling");
            ceiling.print();
            return;
        }
        Some("wrk-patch") => {
            let server = support::Process::start(0, &[]).await;
            preload(&server.url, "load", o.docs, 2).await;
            println!("node pid {}", server.child.id());
            wrk_patch(&server.url, &o);
            return;
        }
        Some(other) => {
            eprintln!("--only takes `ceiling` or `wrk-patch`, not `{other}`");
            std::process::exit(2);
        }
    }
    let server = support::Process::start(0, &[]).await;
    preload(&server.url, "load", o.docs, 2).await;
    let patch = http_phase(
        "HTTP PATCH (durable, 1 field)",
        &server.url,
        &o,
        Kind::Patch,
    )
    .await;
    patch.print();
    let get = http_phase("HTTP GET", &server.url, &o, Kind::Get).await;
    get.print();
    let health = http_phase("HTTP GET /v1/health", &server.url, &o, Kind::Health).await;
    health.print();
    println!(
        "GET a document / GET /v1/health = {:.2}",
        get.rate() / health.rate().max(1.0)
    );
    wrk_phase(&server.url, &o);
    let wrk_patch = wrk_patch(&server.url, &o);
    drop(server);
    let ceiling = tokio::task::spawn_blocking(move || {
        let o2 = opts();
        in_process_phase(&o2)
    })
    .await
    .expect("ceiling");
    ceiling.print();
    println!(
        "HTTP PATCH / in-process ceiling = {:.0}%",
        100.0 * patch.rate() / ceiling.rate().max(1.0)
    );
    if let Some(w) = wrk_patch {
        println!(
            "wrk PATCH / in-process ceiling = {:.0}%",
            100.0 * w / ceiling.rate().max(1.0)
        );
    }
    if o.rss_docs > 0 {
        rss_phase(&o).await;
    }
}
