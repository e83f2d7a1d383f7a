//! Running out of disk: writes fail with a clear 507 problem while reads keep working, nothing
//! acknowledged is lost, and the node takes writes again on its own once space returns.
//!
//! The test mounts a small tmpfs of its own for the node's data directory, so it needs root (as CI
//! and the development machines have). Under CI (`CI` set) it fails when it cannot mount; elsewhere
//! it says why it cannot run and passes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{client, poll_until, NodeProcess};
use serde_json::{json, Value};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then(|| SmallDisk {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn available(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// Fills the file system with `path` until only about `leave` bytes are free.
fn fill(path: &Path, leave: u64) -> u64 {
    let dir = path.parent().expect("parent");
    let target = available(dir).saturating_sub(leave);
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5au8; 64 << 10];
    let mut written = 0;
    while written < target && f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    f.sync_all().expect("sync filler");
    written
}

async fn put(http: &reqwest::Client, url: &str, body: &Value) -> (u16, String) {
    let r = http.put(url).json(body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

async fn check_all(http: &reqwest::Client, node: &NodeProcess, acked: &[(String, Value)]) {
    for (id, body) in acked {
        let r = http
            .get(node.url(&format!("/v1/collections/d/docs/{id}")))
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{id}: {}", r.status());
        let v: Value = r.json().await.expect("json");
        assert_eq!(&v, body, "{id}");
    }
}

#[tokio::test]
async fn full_disk_refuses_writes_keeps_reads_and_recovers() {
    if !is_root() {
        // CI runs as root: there a skip would hide the test, so it fails instead.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root (it mounts a tmpfs)"
        );
        eprintln!("skipped: mounting a tmpfs needs root (outside CI only)");
        return;
    }
    // RocksDB resumes once a memtable's worth (16 MiB) is free again: room for that once the
    // filler goes. The disk is nearly full from the start: RocksDB preallocates its WAL for a
    // whole memtable (about 18 MiB) when space allows, and filling that through the API is
    // slow; the path to a refused write is the same.
    let disk = SmallDisk::mount(128 << 20).expect("mount a tmpfs (root can)");
    let filler = disk.path.join("filler");
    let filled = fill(&filler, 4 << 20);
    eprintln!("filled the disk with {filled} bytes");
    let data = disk.path.join("data");
    let http = client();
    // A 1 MiB cache: most reads below come from RocksDB, not memory.
    let args = ["--cache-bytes".to_string(), (1u64 << 20).to_string()];
    let node = NodeProcess::start_with(&data, common::free_port(), &args).await;

    let mut acked: Vec<(String, Value)> = Vec::new();
    for i in 0..100 {
        let id = format!("a{i}");
        let body = json!({"i": i, "text": format!("{i:>5000}")});
        let (status, text) = put(
            &http,
            &node.url(&format!("/v1/collections/d/docs/{id}")),
            &body,
        )
        .await;
        assert!((200..300).contains(&status), "{status} {text}");
        acked.push((id, body));
    }

    // Writes fail, clearly, and nothing is half-written.
    let mut refused = None;
    for i in 0..2000 {
        let id = format!("b{i}");
        let body = json!({"i": i, "text": format!("{i:>8000}")});
        let (status, text) = put(
            &http,
            &node.url(&format!("/v1/collections/d/docs/{id}")),
            &body,
        )
        .await;
        if (200..300).contains(&status) {
            acked.push((id, body)); // what was already allocated still fits
            continue;
        }
        refused = Some((status, text));
        break;
    }
    let (status, text) = refused.expect("a write on a full disk was refused");
    assert_eq!(status, 507, "{text}");
    let problem: Value = serde_json::from_str(&text).expect("problem json");
    assert_eq!(problem["type"], "urn:concord:problem:insufficient-storage");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("disk is full"),
        "{problem}"
    );
    // Edits of existing documents are refused too, and leave them as they were.
    let (status, _) = put(
        &http,
        &node.url("/v1/collections/d/docs/a0"),
        &json!({"lost": true}),
    )
    .await;
    assert_eq!(status, 507);

    // Reads keep working, from the cache and from disk; so do health and metrics.
    check_all(&http, &node, &acked).await;
    let health = http
        .get(node.url("/v1/health"))
        .send()
        .await
        .expect("health");
    assert!(health.status().is_success());
    let metrics = http
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("concord_writes_refused_no_space_total ") && !l.ends_with(" 0")),
        "refused writes are counted"
    );

    // Space returns: the node takes writes again by itself.
    std::fs::remove_file(&filler).expect("remove filler");
    let url = node.url("/v1/collections/d/docs/after");
    poll_until("writes accepted again", Duration::from_secs(60), || {
        let http = http.clone();
        let url = url.clone();
        async move { (200..300).contains(&put(&http, &url, &json!({"after": true})).await.0) }
    })
    .await;
    acked.push(("after".into(), json!({"after": true})));
    let body = json!({"edited": "after recovery"});
    let (status, text) = put(&http, &node.url("/v1/collections/d/docs/a0"), &body).await;
    assert!((200..300).contains(&status), "{status} {text}");
    acked[0].1 = body;
    check_all(&http, &node, &acked).await;

    // And everything acknowledged survives a restart.
    assert!(node.terminate().success(), "clean shutdown");
    let node = NodeProcess::start_with(&data, common::free_port(), &args).await;
    check_all(&http, &node, &acked).await;
    drop(node);
}
