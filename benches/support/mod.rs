//! Helpers shared by the benchmark harnesses.

#![allow(dead_code)]

pub mod repo_client;

/// The value after `name` on the command line (`--docs 1000`), or `default` when it is absent
/// or does not parse.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `name` is on the command line (`--no-postgres`).
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// CPU time a process has used so far (user + system, in clock ticks; 0 if unknown).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Waits until a process is nearly idle (under 5% of a core over two seconds: a node done
/// compacting what a bulk load wrote), so its background work does not land in the samples of
/// whatever runs next on the same cores; gives up after `limit`.
pub async fn wait_idle(pid: u32, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    let ticks_per_s = 100; // USER_HZ on Linux
    while std::time::Instant::now() < deadline {
        let before = cpu_ticks(pid);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        if cpu_ticks(pid).saturating_sub(before) * 100 < 2 * ticks_per_s * 5 {
            return;
        }
    }
    println!("(node {pid} still busy after {} s)", limit.as_secs());
}

/// Resident memory of a process, in KiB (0 if unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A real `concord serve` process on loopback with its own data directory; SIGTERM on drop.
pub struct Process {
    pub child: std::process::Child,
    pub url: String,
    pub port: u16,
    /// The data directory, removed on drop unless the caller owns it (`start_in`).
    _dir: Option<tempfile::TempDir>,
}

impl Process {
    /// Starts a node on `port` (0: a free one) with extra `serve` flags, and waits until it serves.
    pub async fn start(port: u16, extra: &[String]) -> Process {
        Self::start_as(
            port,
            extra,
            "http",
            client_builder().build().expect("http client"),
        )
        .await
    }

    /// The same served over TLS (`extra` names the certificate): `https://` URLs, and readiness
    /// checked with `http`, a client that trusts the node's CA.
    pub async fn start_tls(port: u16, extra: &[String], http: reqwest::Client) -> Process {
        Self::start_as(port, extra, "https", http).await
    }

    /// Starts a node on a data directory the caller keeps, so a later process can reopen it.
    pub async fn start_in(port: u16, dir: &std::path::Path, extra: &[String]) -> Process {
        let http = client_builder().build().expect("http client");
        Self::spawn(port, dir, None, extra, "http", http).await
    }

    async fn start_as(port: u16, extra: &[String], scheme: &str, http: reqwest::Client) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        Self::spawn(port, &path, Some(dir), extra, scheme, http).await
    }

    async fn spawn(
        port: u16,
        dir: &std::path::Path,
        owned: Option<tempfile::TempDir>,
        extra: &[String],
        scheme: &str,
        http: reqwest::Client,
    ) -> Process {
        let port = if port == 0 { free_port() } else { port };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "warn",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn concord");
        let url = format!("{scheme}://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while http.get(format!("{url}/v1/health")).send().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "server did not start");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Process {
            child,
            url,
            port,
            _dir: owned,
        }
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Writes documents `t0000000`.. `t{n-1}` (bodies from `body(i)`) into `collection` with
/// `bulk-write` requests of 1,000, four at a time.
pub async fn bulk_load(
    http: &reqwest::Client,
    url: &str,
    collection: &str,
    n: usize,
    body: fn(usize) -> serde_json::Value,
) {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for start in (0..n).step_by(1000) {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (http, url) = (
            http.clone(),
            format!("{url}/v1/collections/{collection}/bulk-write"),
        );
        tasks.push(tokio::spawn(async move {
            let writes: Vec<serde_json::Value> = (start..(start + 1000).min(n))
                .map(
                    |i| serde_json::json!({"id": format!("t{i:07}"), "op": "put", "body": body(i)}),
                )
                .collect();
            let r = http
                .post(url)
                .json(&serde_json::json!({ "writes": writes }))
                .send()
                .await
                .expect("bulk");
            assert!(r.status().is_success(), "bulk-write {}", r.status());
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("bulk load");
    }
}

/// An HTTP client builder, with the process's TLS provider installed first (reqwest needs one
/// to build any client).
pub fn client_builder() -> reqwest::ClientBuilder {
    concord::tls::install_provider();
    reqwest::Client::builder()
}
