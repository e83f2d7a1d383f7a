//! Query benchmark, one run, side by side (ratios are the stable figures on a noisy machine):
//! 1. a real `concord` process holding `--docs` small documents; the time to build an index on
//!    a field with 1,000 distinct values over all of them (documents/s);
//! 2. over HTTP with `--clients` concurrent clients for `--secs` each: an equality query
//!    returning 100 documents (index `by_owner`), and a range + sort + limit 100 query on a
//!    compound index (`project_due`); p50/p99 latency and throughput;
//! 3. the same equality query as a scan (`allow_scan`, no index), a few times: the ratio to the
//!    indexed query;
//! 4. durable single-field PATCH throughput on a collection with three indexes against one with
//!    none, in the same process;
//! 5. PostgreSQL (Debian's package, started here on a private data directory and port), the same
//!    rows as `jsonb` with expression B-tree indexes, the same two queries driven by `pgbench`
//!    with the same number of clients: latency percentiles from pgbench's per-transaction log.
//!
//! Run: `cargo bench --profile dev --bench query_load -- --docs 1000000 --clients 32 --secs 10`
//! (needs PostgreSQL: `apt-get install postgresql`; `--no-postgres` skips phase 5).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Opts {
    docs: usize,
    clients: usize,
    secs: u64,
    postgres: bool,
    /// Passed to the node when given (its default otherwise).
    json_cache_bytes: Option<u64>,
}

fn opts() -> Opts {
    Opts {
        docs: support::arg("--docs", 1_000_000),
        clients: support::arg("--clients", 32),
        secs: support::arg("--secs", 10),
        postgres: !support::flag("--no-postgres"),
        json_cache_bytes: support::flag("--json-cache-bytes")
            .then(|| support::arg("--json-cache-bytes", 0)),
    }
}

/// Document `i`: 1,000 owners, 100 projects, due dates over three years.
fn task(i: usize) -> Value {
    let day = (i * 7919) % 1095;
    json!({
        "owner": i % 1000,
        "shadow": i % 1000,
        "project": i % 100,
        "due": format!("2026-{:02}-{:02}T{:02}", 1 + day / 92 % 12, 1 + day % 28, day % 24),
        "title": format!("task {i}"),
    })
}

async fn define_and_wait(
    http: &reqwest::Client,
    url: &str,
    coll: &str,
    name: &str,
    fields: Value,
) -> Duration {
    let started = Instant::now();
    let r = http
        .put(format!("{url}/v1/collections/{coll}/indexes/{name}"))
        .json(&json!({ "fields": fields }))
        .send()
        .await
        .expect("define");
    assert!(r.status().is_success(), "define {name}: {}", r.status());
    loop {
        let v: Value = http
            .get(format!("{url}/v1/collections/{coll}/indexes/{name}"))
            .send()
            .await
            .expect("index")
            .json()
            .await
            .expect("json");
        if v["state"] == "ready" {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Report {
    name: String,
    lat_us: Vec<u32>,
    secs: f64,
    errors: u64,
}

impl Report {
    /// Adds another run of the same phase.
    fn absorb(&mut self, other: Report) {
        self.lat_us.extend(other.lat_us);
        self.lat_us.sort_unstable();
        self.secs += other.secs;
        self.errors += other.errors;
    }

    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
    fn rate(&self) -> f64 {
        self.lat_us.len() as f64 / self.secs
    }
    fn row(&self) {
        println!(
            "| {} | {:.0}/s | {:.2} ms | {:.2} ms | {} | {} |",
            self.name,
            self.rate(),
            self.pct(0.5),
            self.pct(0.99),
            self.lat_us.len(),
            self.errors
        );
    }
}

/// `clients` concurrent clients sending `body(i)` to `path` for `secs`.
/// One request of a load phase, given a client and a fresh random number: whether it succeeded.
type Request = Arc<
    dyn Fn(
            reqwest::Client,
            u64,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// `--clients` concurrent clients sending `request` for `--secs`: latencies of the successes.
async fn drive(name: String, o: &Opts, seed_base: u64, request: Request) -> Report {
    let http = support::client_builder()
        .pool_max_idle_per_host(o.clients)
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..o.clients {
        let (http, stop, request) = (http.clone(), stop.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            let mut seed = seed_base ^ (c as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let t = Instant::now();
                if request(http.clone(), seed).await {
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("client");
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    Report {
        name,
        lat_us: lat,
        secs: start.elapsed().as_secs_f64(),
        errors,
    }
}

/// Queries `path` with `body(seed)`, counting an answer that fails `check` as an error.
async fn load(
    name: &str,
    url: &str,
    path: &str,
    o: &Opts,
    body: fn(u64) -> Value,
    check: fn(&[u8]) -> bool,
) -> Report {
    let target = format!("{url}{path}");
    let request: Request = Arc::new(move |http, seed| {
        let target = target.clone();
        Box::pin(async move {
            match http.post(&target).json(&body(seed)).send().await {
                Ok(resp) if resp.status().is_success() => {
                    check(&resp.bytes().await.unwrap_or_default())
                }
                _ => false,
            }
        })
    });
    drive(name.into(), o, 0x9E37_79B9_7F4A_7C15, request).await
}

fn equality(seed: u64) -> Value {
    json!({"selector": {"owner": seed % 1000}, "limit": 100})
}

fn range_sort(seed: u64) -> Value {
    let day = seed % 300;
    json!({
        "selector": {"project": seed % 100, "due": {"$gte": format!("2026-{:02}", 1 + day % 12)}},
        "sort": [{"due": "asc"}], "limit": 100
    })
}

/// A find answer, counted without building its documents: the load generator shares the two
/// cores with the node, and a full parse of every answer would be charged to Concord's latency
/// (pgbench discards PostgreSQL's rows the same way).
#[derive(serde::Deserialize)]
struct Answer {
    docs: Vec<serde::de::IgnoredAny>,
}

fn count_docs(body: &[u8]) -> Option<usize> {
    serde_json::from_slice::<Answer>(body)
        .ok()
        .map(|a| a.docs.len())
}

fn hundred(body: &[u8]) -> bool {
    count_docs(body) == Some(100)
}

fn some(body: &[u8]) -> bool {
    count_docs(body).is_some_and(|n| n > 0)
}

/// Durable single-field PATCHes to random documents of `collection` for `secs`.
async fn patches(url: &str, collection: &str, docs: usize, o: &Opts) -> Report {
    let base = format!("{url}/v1/collections/{collection}/docs");
    let request: Request = Arc::new(move |http, seed| {
        let base = base.clone();
        Box::pin(async move {
            http.patch(format!("{base}/t{:07}", seed % docs as u64))
                .header("content-type", "application/merge-patch+json")
                .body(format!("{{\"owner\": {}}}", seed % 1000))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    });
    drive(
        format!("durable PATCH, {collection}"),
        o,
        0x2545_F491_4F6C_DD1D,
        request,
    )
    .await
}

/// PostgreSQL on a private data directory, as the `postgres` user; stopped on drop.
struct Postgres {
    dir: std::path::PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> String {
    let base = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(Result::ok).map(|e| e.path()).max())
        .expect("PostgreSQL is not installed: apt-get install postgresql (or pass --no-postgres)");
    base.join("bin").join(name).display().to_string()
}

fn as_postgres(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", cmd])
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Postgres {
    fn start() -> Postgres {
        let dir = std::env::temp_dir().join(format!("concord-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let port = support::free_port();
        let data = dir.join("data").display().to_string();
        as_postgres(
            &pg_bin("initdb"),
            &["-D", &data, "-A", "trust", "-U", "postgres"],
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses='' -c shared_buffers=256MB -c max_connections=100",
            dir.display()
        );
        as_postgres(
            &pg_bin("pg_ctl"),
            &[
                "-D",
                &data,
                "-o",
                &opts,
                "-l",
                &format!("{}/log", dir.display()),
                "-w",
                "start",
            ],
        );
        Postgres { dir, port }
    }

    fn psql(&self, sql: &str) -> String {
        let out = as_postgres(
            &pg_bin("psql"),
            &[
                "-h",
                &self.dir.display().to_string(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pgbench` with `clients` clients running `script` for `secs`; per-transaction latencies.
    fn pgbench(&self, name: &str, script: &str, clients: usize, secs: u64) -> Report {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let file = self.dir.join(format!("{slug}.sql"));
        std::fs::write(&file, script).expect("script");
        let logs = self.dir.join(format!("log-{slug}"));
        std::fs::create_dir_all(&logs).expect("log dir");
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&self.dir)
            .status();
        let started = Instant::now();
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c"])
            .arg(format!(
                "cd {} && {} -h {} -p {} -U postgres -n -c {clients} -j 2 -T {secs} -l -f {} postgres",
                logs.display(),
                pg_bin("pgbench"),
                self.dir.display(),
                self.port,
                file.display()
            ))
            .output()
            .expect("pgbench");
        assert!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lat = Vec::new();
        for entry in std::fs::read_dir(&logs)
            .expect("logs")
            .filter_map(Result::ok)
        {
            for line in std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .lines()
            {
                // client_id transaction_no time script_no time_epoch time_us
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<u32>().ok())
                {
                    lat.push(us);
                }
            }
        }
        lat.sort_unstable();
        Report {
            name: name.into(),
            lat_us: lat,
            secs: started.elapsed().as_secs_f64().min(secs as f64 + 1.0),
            errors: 0,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", &data, "-m", "fast", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_phase(o: &Opts) -> (Report, Report) {
    let pg = Postgres::start();
    pg.psql("CREATE TABLE docs (id text PRIMARY KEY, body jsonb NOT NULL)");
    let csv = pg.dir.join("docs.csv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
        for i in 0..o.docs {
            let body = task(i).to_string().replace('"', "\"\"");
            writeln!(f, "t{i:07},\"{body}\"").expect("csv row");
        }
    }
    let _ = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&pg.dir)
        .status();
    let started = Instant::now();
    pg.psql(&format!(
        "COPY docs FROM '{}' WITH (FORMAT csv)",
        csv.display()
    ));
    let loaded = started.elapsed();
    let started = Instant::now();
    pg.psql("CREATE INDEX by_owner ON docs ((body->'owner'))");
    pg.psql("CREATE INDEX project_due ON docs ((body->'project'), (body->>'due'))");
    pg.psql("ANALYZE docs");
    println!(
        "PostgreSQL: {} rows copied in {:.1} s; two expression indexes built in {:.1} s",
        o.docs,
        loaded.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let eq = pg.pgbench(
        "PostgreSQL equality, 100 rows",
        "\\set o random(0, 999)\nSELECT id, body FROM docs WHERE body->'owner' = to_jsonb(:o) LIMIT 100;\n",
        o.clients,
        o.secs,
    );
    let range = pg.pgbench(
        "PostgreSQL range + sort + limit 100",
        "\\set p random(0, 99)\n\\set m random(1, 12)\nSELECT id, body FROM docs WHERE body->'project' = to_jsonb(:p) AND body->>'due' >= '2026-' || lpad(:m::text, 2, '0') ORDER BY body->>'due' LIMIT 100;\n",
        o.clients,
        o.secs,
    );
    (eq, range)
}

#[tokio::main]
async fn main() {
    let o = opts();
    println!(
        "docs={} clients={} secs={} (machine: {} cores)",
        o.docs,
        o.clients,
        o.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let node_args: Vec<String> = o
        .json_cache_bytes
        .map(|b| vec!["--json-cache-bytes".to_string(), b.to_string()])
        .unwrap_or_default();
    println!(
        "node arguments: {}",
        if node_args.is_empty() {
            "defaults".to_string()
        } else {
            node_args.join(" ")
        }
    );
    let node = support::Process::start(0, &node_args).await;
    let http = support::client_builder().build().unwrap();
    let t = Instant::now();
    support::bulk_load(&http, &node.url, "tasks", o.docs, task).await;
    println!(
        "Concord: {} documents loaded in {:.1} s",
        o.docs,
        t.elapsed().as_secs_f64()
    );
    let build = define_and_wait(&http, &node.url, "tasks", "by_owner", json!(["owner"])).await;
    println!(
        "index build over {} documents: {:.1} s, {:.0} documents/s",
        o.docs,
        build.as_secs_f64(),
        o.docs as f64 / build.as_secs_f64()
    );
    define_and_wait(
        &http,
        &node.url,
        "tasks",
        "project_due",
        json!(["project", "due"]),
    )
    .await;
    // A bulk load and two index builds leave the node compacting for minutes on these two
    // cores: queried meanwhile, the latencies measure the compactions (p99 ten times p50 in a
    // run that did not wait). Measured once it is done, as PostgreSQL is after its own load.
    let t = Instant::now();
    support::wait_idle(node.child.id(), Duration::from_secs(900)).await;
    println!(
        "Concord idle (compactions done) after {:.0} s more",
        t.elapsed().as_secs_f64()
    );

    println!("| phase | throughput | p50 | p99 | ops | errors |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let eq = load(
        "Concord equality, 100 docs",
        &node.url,
        "/v1/collections/tasks/find",
        &o,
        equality,
        hundred,
    )
    .await;
    eq.row();
    let range = load(
        "Concord range + sort + limit 100",
        &node.url,
        "/v1/collections/tasks/find",
        &o,
        range_sort,
        some,
    )
    .await;
    range.row();

    // The same equality as a scan (a field with the same values and no index), and through the
    // index, each alone (one request at a time), so the two latencies compare like for like.
    let alone = |field: &'static str, scan: bool| {
        let (http, url) = (http.clone(), node.url.clone());
        async move {
            let mut ms = Vec::new();
            for k in 0..5u64 {
                let t = Instant::now();
                let r = http
                    .post(format!("{url}/v1/collections/tasks/find"))
                    .json(&json!({"selector": {field: k * 7}, "limit": 100, "allow_scan": scan}))
                    .timeout(Duration::from_secs(600))
                    .send()
                    .await
                    .expect("query");
                let body = r.bytes().await.expect("query answer");
                assert!(
                    hundred(&body),
                    "{field}: {}",
                    String::from_utf8_lossy(&body)
                );
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            ms.sort_by(|a, b| a.total_cmp(b));
            ms[2]
        }
    };
    let scan_ms = alone("shadow", true).await;
    let indexed_ms = alone("owner", false).await;
    println!(
        "one query at a time, median: scan (no index) {scan_ms:.1} ms, indexed {indexed_ms:.2} ms: the index is {:.0}x faster (under load, indexed p50 {:.1} ms)",
        scan_ms / indexed_ms.max(0.001),
        eq.pct(0.5)
    );

    // PATCH throughput with three indexes against none, same run.
    let few = o.docs.min(10_000);
    support::bulk_load(&http, &node.url, "plain", few, task).await;
    support::bulk_load(&http, &node.url, "indexed", few, task).await;
    for (name, fields) in [
        ("a", json!(["owner"])),
        ("b", json!(["project", "due"])),
        ("c", json!(["title"])),
    ] {
        define_and_wait(&http, &node.url, "indexed", name, fields).await;
    }
    // Interleaved (plain, indexed, plain, indexed; half the time each), so background work
    // (compactions after the bulk load) weighs on both alike; the figures are the sums.
    let half = Opts {
        secs: o.secs.div_ceil(2),
        ..o
    };
    let mut plain = patches(&node.url, "plain", few, &half).await;
    let mut indexed = patches(&node.url, "indexed", few, &half).await;
    plain.absorb(patches(&node.url, "plain", few, &half).await);
    indexed.absorb(patches(&node.url, "indexed", few, &half).await);
    plain.row();
    indexed.row();
    println!(
        "PATCH with three indexes / without = {:.0}%",
        100.0 * indexed.rate() / plain.rate().max(1.0)
    );
    drop(node);

    if o.postgres {
        let (pg_eq, pg_range) = postgres_phase(&o);
        pg_eq.row();
        pg_range.row();
        println!(
            "p99 Concord / PostgreSQL: equality {:.2}, range + sort {:.2}",
            eq.pct(0.99) / pg_eq.pct(0.99).max(0.001),
            range.pct(0.99) / pg_range.pct(0.99).max(0.001)
        );
    }
}
