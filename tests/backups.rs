//! Backups and restore: a backup taken under 16 concurrent writers holds every write acknowledged
//! before it began and passes the integrity check; a restored node is a new replica that joins
//! its original's cluster and converges with it (also on documents both edit afterwards, which
//! two nodes under one actor id could not); a damaged backup is refused by verify and restore;
//! retention, incremental size, and the admin-only API.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, poll_until, TestNode};
use concord::config::{Access, TokenConfig};
use serde_json::{json, Value};

const SECRET: &str = "backup-tests-cluster-secret";

async fn put(http: &reqwest::Client, node: &TestNode, path: &str, body: Value) -> u16 {
    http.put(node.url(path))
        .json(&body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Creates `r/d{i}` = `{"i": i}` on `node` for each `i`.
async fn create_numbered(http: &reqwest::Client, node: &TestNode, ids: std::ops::Range<usize>) {
    for i in ids {
        let path = format!("/v1/collections/r/docs/d{i}");
        assert_eq!(put(http, node, &path, json!({"i": i})).await, 201, "{path}");
    }
}

async fn backup_now(http: &reqwest::Client, node: &TestNode) -> Value {
    let r = http
        .post(node.url("/v1/admin/backups"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn node_id(http: &reqwest::Client, node: &TestNode) -> String {
    common::http::get_json(http, node.url("/v1/cluster")).await["node_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_16_writers_holds_every_write_acknowledged_before_it() {
    let (data, backups, restored) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let bdir = backups.path().to_path_buf();
    let node =
        Arc::new(TestNode::start_with(data.path(), move |c| c.backup_dir = Some(bdir)).await);
    let http = client();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    // Per writer: (the acknowledgement time, the doc created, the counter value PATCHed).
    let mut writers = Vec::new();
    for w in 0..16 {
        let (node, http, stop, acks) = (node.clone(), http.clone(), stop.clone(), acks.clone());
        writers.push(tokio::spawn(async move {
            let mut acked: Vec<(Instant, String, u64)> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("w{w}-{n}");
                let s = put(
                    &http,
                    &node,
                    &format!("/v1/collections/b/docs/{id}"),
                    json!({"w": w, "n": n}),
                )
                .await;
                if s != 201 {
                    continue;
                }
                // A document every writer keeps rewriting: its last acknowledged value must be
                // in the backup, not only the documents created.
                let s = put(
                    &http,
                    &node,
                    &format!("/v1/collections/b/docs/last-{w}"),
                    json!({"n": n}),
                )
                .await;
                if s == 200 || s == 201 {
                    acked.push((Instant::now(), id, n));
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        }));
    }
    let acked_by = |n: u64| {
        let acks = acks.clone();
        move || {
            let ok = acks.load(Ordering::Relaxed) >= n;
            async move { ok }
        }
    };
    poll_until("writes flowing", Duration::from_secs(60), acked_by(200)).await;
    let began = Instant::now();
    let created = backup_now(&http, &node).await;
    // Writes go on after the backup too (they may or may not be in it).
    let now = acks.load(Ordering::Relaxed);
    poll_until(
        "writes after the backup",
        Duration::from_secs(60),
        acked_by(now + 100),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut before: Vec<(String, u64, usize)> = Vec::new();
    let mut last: HashMap<usize, u64> = HashMap::new();
    for (w, t) in writers.into_iter().enumerate() {
        for (at, id, n) in t.await.unwrap() {
            if at < began {
                before.push((id, n, w));
                let e = last.entry(w).or_default();
                *e = (*e).max(n);
            }
        }
    }
    assert!(
        before.len() >= 200,
        "too few writes before the backup: {}",
        before.len()
    );
    let original = node_id(&http, &node).await;
    match Arc::try_unwrap(node) {
        Ok(n) => n.stop().await,
        Err(_) => panic!("node still shared"),
    }

    let id = created["id"].as_u64().unwrap() as u32;
    let (from, to) = (backups.path().to_path_buf(), restored.path().join("node"));
    let r =
        tokio::task::spawn_blocking(move || concord::backup::restore(&from, Some(id), &to, |_| {}))
            .await
            .unwrap()
            .expect("restore");
    assert!(r.integrity.ok(), "{:?}", r.integrity.problems);
    assert_ne!(r.node_id, original, "a restored node must be a new replica");

    let node = TestNode::start(&restored.path().join("node")).await;
    assert_eq!(node_id(&http, &node).await, r.node_id);
    for (id, n, w) in &before {
        let v =
            common::http::get_json(&http, node.url(&format!("/v1/collections/b/docs/{id}"))).await;
        assert_eq!(
            v,
            json!({"w": w, "n": n}),
            "{id} was acknowledged before the backup began"
        );
    }
    for (w, n) in &last {
        let v =
            common::http::get_json(&http, node.url(&format!("/v1/collections/b/docs/last-{w}")))
                .await;
        assert!(
            v["n"].as_u64().is_some_and(|got| got >= *n),
            "last-{w} is {v}, but {n} was acknowledged before the backup began"
        );
    }
    node.stop().await;
}

async fn body_of(http: &reqwest::Client, url: String) -> Option<Value> {
    match http.get(url).send().await {
        Ok(r) if r.status() == 200 => r.json().await.ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_node_joins_its_original_cluster_as_a_new_replica_and_converges() {
    let (da, db, dr, bk) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let bdir = bk.path().to_path_buf();
    let b = TestNode::start_with(db.path(), |c| {
        c.cluster_secret = Some(SECRET.into());
        c.anti_entropy_interval_ms = 200;
    })
    .await;
    let b_addr = b.url.trim_start_matches("http://").to_string();
    let peers = vec![b_addr.clone()];
    let a = TestNode::start_with(da.path(), move |c| {
        c.cluster_secret = Some(SECRET.into());
        c.peers = peers;
        c.anti_entropy_interval_ms = 200;
        c.backup_dir = Some(bdir);
    })
    .await;
    let a_addr = a.url.trim_start_matches("http://").to_string();
    let http = client();
    create_numbered(&http, &a, 0..20).await;
    let created = backup_now(&http, &a).await;
    assert_eq!(created["documents"], 20);
    // Made after the backup: they must reach the restored node through replication.
    create_numbered(&http, &a, 20..30).await;
    create_numbered(&http, &b, 30..40).await;

    let (from, to) = (bk.path().to_path_buf(), dr.path().join("node"));
    let restored =
        tokio::task::spawn_blocking(move || concord::backup::restore(&from, None, &to, |_| {}))
            .await
            .unwrap()
            .expect("restore");
    let seeds = vec![a_addr, b_addr];
    let r = TestNode::start_with(&dr.path().join("node"), move |c| {
        c.cluster_secret = Some(SECRET.into());
        c.peers = seeds;
        c.anti_entropy_interval_ms = 200;
    })
    .await;
    let (ida, idr) = (node_id(&http, &a).await, node_id(&http, &r).await);
    assert_ne!(ida, idr);
    assert_eq!(idr, restored.node_id);

    for i in 0..40 {
        let url = r.url(&format!("/v1/collections/r/docs/d{i}"));
        poll_until(
            &format!("d{i} on the restored node"),
            Duration::from_secs(30),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move { body_of(&http, url).await == Some(json!({"i": i})) }
            },
        )
        .await;
    }
    // The original and the restored node both edit a document they share from the backup. Under
    // one actor id these two changes would carry the same actor and sequence number, and no
    // replica could take both.
    let patch = |node: &TestNode, body: Value| {
        http.patch(node.url("/v1/collections/r/docs/d5"))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(patch(&a, json!({"from_a": 1})).await.unwrap().status(), 200);
    assert_eq!(patch(&r, json!({"from_r": 1})).await.unwrap().status(), 200);
    let want = json!({"i": 5, "from_a": 1, "from_r": 1});
    for node in [&a, &b, &r] {
        let url = node.url("/v1/collections/r/docs/d5");
        poll_until("both edits everywhere", Duration::from_secs(30), || {
            let (http, url, want) = (http.clone(), url.clone(), want.clone());
            async move { body_of(&http, url).await == Some(want) }
        })
        .await;
    }
    for n in [r, a, b] {
        n.stop().await;
    }
}

/// The largest file of a backup directory's shared table files.
fn largest_table_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut best: Option<(u64, std::path::PathBuf)> = None;
    for sub in ["shared_checksum", "shared", "private"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                for f in std::fs::read_dir(&p).unwrap().flatten() {
                    let len = f.metadata().unwrap().len();
                    if best.as_ref().is_none_or(|(l, _)| len > *l) {
                        best = Some((len, f.path()));
                    }
                }
            } else if p.extension().is_some_and(|x| x == "sst") {
                let len = e.metadata().unwrap().len();
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, p));
                }
            }
        }
    }
    best.expect("a table file").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_by_verify_and_by_restore() {
    let (data, bk, target) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let bdir = bk.path().to_path_buf();
    let node = TestNode::start_with(data.path(), move |c| c.backup_dir = Some(bdir)).await;
    let http = client();
    for i in 0..300 {
        put(
            &http,
            &node,
            &format!("/v1/collections/x/docs/d{i}"),
            json!({"i": i, "pad": "p".repeat(200)}),
        )
        .await;
    }
    backup_now(&http, &node).await;
    node.stop().await;
    let from = bk.path().to_path_buf();
    let f = from.clone();
    let sound =
        tokio::task::spawn_blocking(move || concord::backup::verify(&f, None, None, |_| {}))
            .await
            .unwrap()
            .expect("an intact backup verifies");
    assert_eq!(sound.integrity.live.get("x"), Some(&300));

    // One byte flipped in the middle of a table file: sizes still match, checksums do not.
    let victim = largest_table_file(&from);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&victim, bytes).unwrap();

    let f = from.clone();
    let v = tokio::task::spawn_blocking(move || concord::backup::verify(&f, None, None, |_| {}))
        .await
        .unwrap();
    assert!(v.is_err(), "verify passed a damaged backup");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["backup", "verify", "--from"])
        .arg(&from)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "`concord backup verify` passed a damaged backup"
    );
    let to = target.path().join("node");
    let t = to.clone();
    let r = tokio::task::spawn_blocking(move || concord::backup::restore(&from, None, &t, |_| {}))
        .await
        .unwrap();
    assert!(r.is_err(), "restore took a damaged backup");
    let left = std::fs::read_dir(&to).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "a failed restore left files behind");
}

/// `len` hex digits that do not compress (so backup sizes are those of real data).
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_incremental_size_and_admin_only() {
    let (data, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bdir = bk.path().to_path_buf();
    let token = |name: &str, access| TokenConfig {
        name: name.into(),
        token: format!("{name}-token-0123456789"),
        access,
        collections: None,
        scopes: None,
    };
    let tokens = vec![
        token("admin", Access::Admin),
        token("writer", Access::Write),
    ];
    let node = TestNode::start_with(data.path(), move |c| {
        c.backup_dir = Some(bdir);
        c.backup_keep_last = 2;
        c.tokens = tokens;
    })
    .await;
    let http = client();
    let as_ = |who: &str, req: reqwest::RequestBuilder| {
        req.bearer_auth(format!("{who}-token-0123456789"))
    };
    for i in 0..2000 {
        let r = as_(
            "writer",
            http.put(node.url(&format!("/v1/collections/k/docs/d{i}"))),
        )
        .json(&json!({"i": i, "pad": noise(i, 600)}))
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
    }
    for (method, path) in [
        (reqwest::Method::POST, "/v1/admin/backups"),
        (reqwest::Method::GET, "/v1/admin/backups"),
        (reqwest::Method::GET, "/v1/collections/k/export"),
        (reqwest::Method::POST, "/v1/collections/k/import"),
    ] {
        let r = as_("writer", http.request(method, node.url(path)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} without admin");
    }
    let create = || async {
        let r = as_("admin", http.post(node.url("/v1/admin/backups")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()
    };
    let first = create().await;
    // 1% of the documents change: the next backup copies little more than that.
    for i in 0..20 {
        as_(
            "writer",
            http.put(node.url(&format!("/v1/collections/k/docs/d{i}"))),
        )
        .json(&json!({"i": -i}))
        .send()
        .await
        .unwrap();
    }
    let second = create().await;
    let (full, incr) = (
        first["new_bytes"].as_u64().unwrap(),
        second["new_bytes"].as_u64().unwrap(),
    );
    assert!(
        incr * 4 < full,
        "an incremental backup copied {incr} bytes, the first {full}"
    );
    let third = create().await;
    assert_eq!(third["pruned"], json!([first["id"]]));
    let list: Value = as_("admin", http.get(node.url("/v1/admin/backups")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["id"])
        .collect();
    assert_eq!(ids, vec![&second["id"], &third["id"]]);
    assert_eq!(list["backups"][1]["documents"], 2000);
    node.stop().await;

    // A node without a backup directory says how to get one.
    let other = tempfile::tempdir().unwrap();
    let node = TestNode::start(other.path()).await;
    let r = http
        .post(node.url("/v1/admin/backups"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("backup_dir"), "{p}");
    node.stop().await;
}
