//! Per-user scopes at scale, side by side in one run (ratios are the stable figures):
//! 1. a real `concord` process holding `--users` × `--docs-per-user` small documents (`owner`
//!    = the user, index `by_owner`), and a second one holding only one user's documents,
//!    measured once the big node has finished compacting what the load wrote (its CPU idle);
//! 2. for random users, with their own signed token (scope `{"owner": "$sub"}`): the user's
//!    changes feed from zero (all of it, 1,000 per page), the first page of `find` (100), the
//!    first page of the listing (100), and a fresh automerge-repo client (the protocol spoken
//!    directly, [`support::repo_client`]) fetching all the user's documents over the WebSocket,
//!    p50/p99 over `--samples` sequential samples, against the same on the small node (the
//!    collection is the nodes' automerge-repo collection, so document ids are repo ids);
//! 3. token verification: `GET` of one document with a signed token and with a static token,
//!    `--clients` concurrent clients for `--secs` each, interleaved: the throughput ratio.
//!
//! Run: `cargo bench --profile dev --bench scope_load -- --users 10000 --docs-per-user 100`

mod support;

use support::arg;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord::access::tokens::{claims, mint_hs256};
use concord::access::{Access, ScopeRule};
use serde_json::{json, Value};

const SECRET: &str = "scope-load-secret-0123456789abcdef0123456789";
const STATIC: &str = "static-bench-token-0123456789";

fn user_token(user: u64) -> String {
    let rules = [ScopeRule::parse_arg(r#"c:{"owner":"$sub"}"#).expect("scope")];
    let c = claims(
        &format!("user{user}"),
        Access::Write,
        Some(&rules),
        Duration::from_secs(3600),
        None,
        None,
    );
    mint_hs256(SECRET.as_bytes(), &c).expect("token")
}

async fn node(dir: &std::path::Path) -> support::Process {
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[tokens]]\nname = \"ops\"\ntoken = \"{STATIC}\"\naccess = \"admin\"\n"),
    )
    .expect("tokens");
    support::Process::start(
        0,
        &[
            "--jwt-secret-file".into(),
            secret.display().to_string(),
            "--token-file".into(),
            tokens.display().to_string(),
            "--automerge-collection".into(),
            "c".into(),
        ],
    )
    .await
}

/// The id of user `u`'s document `i`: an automerge-repo document id, so clients can fetch it.
fn doc_id(u: u64, i: u64) -> String {
    bs58::encode(uuid::Uuid::from_u64_pair(u + 1, i).as_bytes())
        .with_check()
        .into_string()
}

/// Writes `users` users' documents ([`doc_id`]), 1,000 per request, then the index.
async fn load(http: &reqwest::Client, url: &str, users: std::ops::Range<u64>, per_user: u64) {
    let all: Vec<(u64, u64)> = users
        .flat_map(|u| (0..per_user).map(move |i| (u, i)))
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for chunk in all.chunks(1000) {
        let writes: Vec<Value> = chunk
            .iter()
            .map(|(u, i)| {
                json!({"id": doc_id(*u, *i), "op": "put",
                       "body": {"owner": format!("user{u}"), "title": format!("note {i}"), "n": i}})
            })
            .collect();
        let permit = sem.clone().acquire_owned().await.expect("permit");
        let (http, url) = (http.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/collections/c/bulk-write"))
                .bearer_auth(STATIC)
                .json(&json!({ "writes": writes }))
                .send()
                .await
                .expect("bulk-write");
            assert!(r.status().is_success(), "bulk-write {}", r.status());
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("load");
    }
    let r = http
        .put(format!("{url}/v1/collections/c/indexes/by_owner"))
        .bearer_auth(STATIC)
        .json(&json!({"fields": ["owner"]}))
        .send()
        .await
        .expect("index");
    assert!(r.status().is_success(), "index {}", r.status());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v: Value = http
            .get(format!("{url}/v1/collections/c/indexes/by_owner"))
            .bearer_auth(STATIC)
            .send()
            .await
            .expect("index state")
            .json()
            .await
            .expect("json");
        if v["state"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "index never ready: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The user's whole changes feed from zero; the number of entries.
async fn feed(http: &reqwest::Client, url: &str, token: &str) -> usize {
    let mut since = "0".to_string();
    let mut n = 0;
    loop {
        let v: Value = http
            .get(format!(
                "{url}/v1/changes?collection=c&limit=1000&since={since}"
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("feed")
            .json()
            .await
            .expect("json");
        let got = v["results"].as_array().map_or(0, Vec::len);
        n += got;
        since = v["last_cursor"].as_str().unwrap_or("0").to_string();
        if got < 1000 {
            return n;
        }
    }
}

async fn first_page(http: &reqwest::Client, url: &str, token: &str) -> usize {
    let v: Value = http
        .post(format!("{url}/v1/collections/c/find"))
        .bearer_auth(token)
        .json(&json!({"selector": {}, "limit": 100}))
        .send()
        .await
        .expect("find")
        .json()
        .await
        .expect("json");
    v["docs"].as_array().map_or(0, Vec::len)
}

/// The user's first listing page (100 documents).
async fn first_listing(http: &reqwest::Client, url: &str, token: &str) -> usize {
    let v: Value = http
        .get(format!("{url}/v1/collections/c/docs?limit=100"))
        .bearer_auth(token)
        .send()
        .await
        .expect("listing")
        .json()
        .await
        .expect("json");
    v["docs"].as_array().map_or(0, Vec::len)
}

/// Every document the user sees, with its heads (what a client should end up holding).
async fn user_docs(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Vec<(String, Vec<automerge::ChangeHash>)> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let v: Value = http
            .get(format!("{url}/v1/collections/c/docs?limit=1000{after}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("listing")
            .json()
            .await
            .expect("json");
        for d in v["docs"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().unwrap_or_default().to_string();
            let heads = concord::doc::heads::parse(d["version"].as_str().unwrap_or_default())
                .expect("version");
            out.push((id, heads));
        }
        match v["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return out,
        }
    }
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `clients` clients GETting one document for `secs` with `token`: requests per second.
async fn get_rate(url: &str, token: &str, clients: u64, secs: u64) -> f64 {
    let http = support::client_builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, stop, done) = (http.clone(), stop.clone(), done.clone());
        let (url, token) = (url.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .get(format!("{url}/v1/collections/c/docs/{}", doc_id(0, 0)))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("get");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn timed(f: impl std::future::Future<Output = usize>) -> (usize, Duration) {
    let t = Instant::now();
    let n = f.await;
    (n, t.elapsed())
}

#[tokio::main]
async fn main() {
    let users = arg("--users", 10_000);
    let per_user = arg("--docs-per-user", 100);
    let samples = arg("--samples", 200) as usize;
    let clients = arg("--clients", 32);
    let secs = arg("--secs", 5);
    let http = support::client_builder().build().unwrap();
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let big = node(d1.path()).await;
    let small = node(d2.path()).await;
    let t = Instant::now();
    load(&http, &big.url, 0..users, per_user).await;
    println!(
        "loaded {} documents ({users} users) in {:.0} s",
        users * per_user,
        t.elapsed().as_secs_f64()
    );
    load(&http, &small.url, 0..1, per_user).await;
    // A bulk load leaves the big node compacting for a while: measured once it is done.
    let t = Instant::now();
    support::wait_idle(big.child.id(), Duration::from_secs(600)).await;
    println!(
        "big node idle after {:.0} s more",
        t.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    let ops = [
        "feed from zero",
        "find, first page",
        "listing, first page",
        "client fetches all",
    ];
    // `--only OP` runs one operation (by the start of its name), e.g. while profiling a node.
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    println!(
        "big node pid {}, small node pid {}",
        big.child.id(),
        small.child.id()
    );
    for what in ops {
        if only.as_deref().is_some_and(|o| !what.starts_with(o)) {
            continue;
        }
        let (mut on_big, mut on_small) = (Vec::new(), Vec::new());
        for s in 0..samples {
            // A random user on the big node; user 0 (the only one) on the small one.
            let user = (s as u64 * 7919) % users;
            let (tb, ts) = (user_token(user), user_token(0));
            for (url, token, out) in [
                (&big.url, &tb, &mut on_big),
                (&small.url, &ts, &mut on_small),
            ] {
                let (n, took) = match what {
                    "feed from zero" => timed(feed(&http, url, token)).await,
                    "find, first page" => timed(first_page(&http, url, token)).await,
                    "listing, first page" => timed(first_listing(&http, url, token)).await,
                    _ => {
                        // What the client must end up with is read first, untimed.
                        let docs = user_docs(&http, url, token).await;
                        let ws = format!("{}/v1/automerge-repo", url.replace("http", "ws"));
                        let took = support::repo_client::fetch(&ws, Some(token), &docs).await;
                        (docs.len(), took)
                    }
                };
                out.push(took.as_secs_f64() * 1000.0);
                let want = match what {
                    "feed from zero" | "client fetches all" => per_user,
                    _ => per_user.min(100),
                };
                assert_eq!(n as u64, want, "{what}");
            }
        }
        rows.push((
            what,
            pct(on_big.clone(), 0.5),
            pct(on_big, 0.99),
            pct(on_small.clone(), 0.5),
            pct(on_small, 0.99),
        ));
    }
    println!(
        "| operation | {} docs: p50 / p99 ms | one user's {per_user}: p50 / p99 ms | p99 ratio |",
        users * per_user
    );
    println!("| --- | --- | --- | --- |");
    for (what, b50, b99, s50, s99) in rows {
        println!(
            "| {what} | {b50:.2} / {b99:.2} | {s50:.2} / {s99:.2} | {:.2} |",
            b99 / s99
        );
    }

    // Token verification: a signed token (verified once, then cached) against a static one,
    // both seeing the whole collection; and the cost of a scope judged on each read.
    let whole = mint_hs256(
        SECRET.as_bytes(),
        &claims(
            "reader",
            Access::Read,
            None,
            Duration::from_secs(3600),
            None,
            None,
        ),
    )
    .expect("token");
    let scoped = user_token(0);
    let (mut rs, mut rt, mut rsc) = (0.0, 0.0, 0.0);
    for _ in 0..2 {
        rs += get_rate(&small.url, &whole, clients, secs).await / 2.0;
        rt += get_rate(&small.url, STATIC, clients, secs).await / 2.0;
        rsc += get_rate(&small.url, &scoped, clients, secs).await / 2.0;
    }
    println!(
        "GET /s: static token {rt:.0}; signed token {rs:.0} (verification costs {:.1}%); \
         signed token with a scope {rsc:.0} (scope judged on each read costs {:.1}%)",
        (1.0 - rs / rt) * 100.0,
        (1.0 - rsc / rt) * 100.0
    );
}
