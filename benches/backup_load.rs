//! Backup, restore, export and import at scale, one run, against real `concord` processes and
//! the real commands:
//! 1. a node holding `--docs` small documents (`{"n", "name", "tags"}`) takes a full backup
//!    (`POST /v1/admin/backups`): time and bytes;
//! 2. `--changed-pct` of the documents change, and the next backup copies only what is new:
//!    time and bytes added, against the full one;
//! 3. `concord backup verify` and `concord backup restore` (each restores every file with its
//!    checksum checked, then loads and checks every document): time and bytes;
//! 4. export in both formats (`GET .../export`): documents/s and bytes; import of each into an
//!    empty node (`POST .../import`): documents/s, and the imported node holds every document.
//!
//! Run: `cargo bench --profile dev --bench backup_load -- --docs 1000000`

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

struct Opts {
    docs: usize,
    changed_pct: usize,
}

fn opts() -> Opts {
    Opts {
        docs: support::arg("--docs", 1_000_000),
        changed_pct: support::arg("--changed-pct", 1),
    }
}

fn item(i: usize) -> Value {
    json!({"n": i, "name": format!("item {i}"), "tags": ["a", format!("t{}", i % 97)]})
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

async fn backup(http: &reqwest::Client, url: &str) -> (f64, Value) {
    let t = Instant::now();
    let r = http
        .post(format!("{url}/v1/admin/backups"))
        .send()
        .await
        .expect("backup");
    assert_eq!(r.status(), 201, "backup");
    let v: Value = r.json().await.expect("backup answer");
    (t.elapsed().as_secs_f64(), v)
}

/// Runs `concord ARGS`, failing the benchmark if it fails; its wall time.
fn command(args: &[&str]) -> f64 {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(args)
        .output()
        .expect("concord");
    assert!(
        out.status.success(),
        "concord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

async fn export(http: &reqwest::Client, url: &str, format: &str) -> (f64, Vec<u8>) {
    let t = Instant::now();
    let body = http
        .get(format!("{url}/v1/collections/items/export?format={format}"))
        .send()
        .await
        .expect("export")
        .bytes()
        .await
        .expect("export body");
    (t.elapsed().as_secs_f64(), body.to_vec())
}

async fn import(http: &reqwest::Client, url: &str, format: &str, body: Vec<u8>) -> (f64, Value) {
    let t = Instant::now();
    let text = http
        .post(format!("{url}/v1/collections/items/import?format={format}"))
        .body(body)
        .send()
        .await
        .expect("import")
        .text()
        .await
        .expect("import answer");
    let secs = t.elapsed().as_secs_f64();
    let last = text.lines().last().unwrap_or_default();
    (secs, serde_json::from_str(last).expect("import summary"))
}

async fn count(http: &reqwest::Client, url: &str) -> i64 {
    let v: Value = http
        .get(format!("{url}/v1/collections"))
        .send()
        .await
        .expect("collections")
        .json()
        .await
        .expect("collections body");
    v["collections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "items"))
        .and_then(|c| c["docs"].as_i64())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let o = opts();
    println!(
        "docs={} changed={}% (machine: {} cores)",
        o.docs,
        o.changed_pct,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let bk = tempfile::tempdir().expect("tempdir");
    let bk_path = bk.path().to_str().expect("utf-8 path").to_string();
    let long = ["--request-timeout-secs".to_string(), "3600".to_string()];
    let mut args = vec!["--backup-dir".to_string(), bk_path.clone()];
    args.extend(long.iter().cloned());
    let node = support::Process::start(0, &args).await;
    let http = support::client_builder().build().unwrap();
    let t = Instant::now();
    support::bulk_load(&http, &node.url, "items", o.docs, item).await;
    println!("loaded in {:.1} s", t.elapsed().as_secs_f64());

    let (full_s, full) = backup(&http, &node.url).await;
    let changed = o.docs * o.changed_pct / 100;
    let step = (o.docs / changed.max(1)).max(1);
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in (0..o.docs).step_by(step).take(changed) {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (http, url) = (
            http.clone(),
            format!("{}/v1/collections/items/docs/t{i:07}", node.url),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .patch(url)
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"name": "changed"}"#)
                .send()
                .await
                .expect("patch");
            assert!(r.status().is_success());
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("patch task");
    }
    let (incr_s, incr) = backup(&http, &node.url).await;

    let verify_s = command(&["backup", "verify", "--from", &bk_path]);
    let target = tempfile::tempdir().expect("tempdir");
    let restored = target.path().join("node");
    let restored_str = restored.to_str().expect("utf-8 path").to_string();
    let restore_s = command(&[
        "backup",
        "restore",
        "--from",
        &bk_path,
        "--data-dir",
        &restored_str,
    ]);
    let restored_bytes = dir_bytes(&restored);

    let (ej_s, json_lines) = export(&http, &node.url, "json").await;
    let (ea_s, am_lines) = export(&http, &node.url, "automerge").await;
    let (jb, ab) = (json_lines.len() as u64, am_lines.len() as u64);
    let b = support::Process::start(0, &long).await;
    let (ia_s, ia) = import(&http, &b.url, "automerge", am_lines).await;
    let c = support::Process::start(0, &long).await;
    let (ij_s, ij) = import(&http, &c.url, "json", json_lines).await;
    let n = o.docs as f64;
    for (name, url, summary) in [("automerge", &b.url, &ia), ("json", &c.url, &ij)] {
        assert_eq!(summary["failed"], 0, "{name} import: {summary}");
        assert_eq!(
            count(&http, url).await,
            o.docs as i64,
            "{name} import count"
        );
    }

    println!("| step | time | bytes | rate |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| full backup | {full_s:.1} s | {} | {:.0} documents/s |",
        mb(full["new_bytes"].as_u64().unwrap_or(0)),
        n / full_s
    );
    println!(
        "| incremental backup after {}% changed | {incr_s:.2} s | {} ({:.1}% of the full) | |",
        o.changed_pct,
        mb(incr["new_bytes"].as_u64().unwrap_or(0)),
        100.0 * incr["new_bytes"].as_f64().unwrap_or(0.0)
            / full["new_bytes"].as_f64().unwrap_or(1.0)
    );
    println!(
        "| verify (restore to scratch + integrity check) | {verify_s:.1} s | | {:.0} documents/s |",
        n / verify_s
    );
    println!(
        "| restore (+ integrity check) | {restore_s:.1} s | {} | {:.0} documents/s |",
        mb(restored_bytes),
        n / restore_s
    );
    println!(
        "| export json | {ej_s:.1} s | {} | {:.0} documents/s |",
        mb(jb),
        n / ej_s
    );
    println!(
        "| export automerge | {ea_s:.1} s | {} | {:.0} documents/s |",
        mb(ab),
        n / ea_s
    );
    println!(
        "| import automerge (empty node) | {ia_s:.1} s | | {:.0} documents/s |",
        n / ia_s
    );
    println!(
        "| import json (empty node) | {ij_s:.1} s | | {:.0} documents/s |",
        n / ij_s
    );
}
