//! Test harness: nodes on port 0 in this process, real `concord` processes, an HTTP client, and
//! polling with a deadline (never sleeps as synchronisation).

#![allow(dead_code)]

pub mod http;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concord::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn client() -> reqwest::Client {
    concord::tls::install_provider();
    reqwest::Client::builder()
        // No system roots: plain HTTP here; TLS tests build their own (`tls_client`).
        .tls_certs_only(Vec::new())
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// A node served by this process on 127.0.0.1:0 (over TLS when the configuration says so; `url`
/// is then `https://...`).
pub struct TestNode {
    pub url: String,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), concord::server::ServerError>>>,
}

impl TestNode {
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, |_| {}).await
    }

    pub async fn start_with(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            listen: addr,
            ..Config::default()
        };
        tweak(&mut config);
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(concord::run(listener, config, async move {
            let _ = rx.await;
        }));
        let node = TestNode {
            url: format!("{scheme}://{addr}"),
            data_dir: data_dir.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        // Only "is it up": the tests check certificates themselves.
        concord::tls::install_provider();
        let c = reqwest::Client::builder()
            .tls_certs_only(Vec::new())
            .tls_danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let url = format!("{}/v1/health", self.url);
        poll_until("node ready", Duration::from_secs(30), || {
            let c = c.clone();
            let url = url.clone();
            async move {
                c.get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Graceful shutdown; returns once the store is flushed and closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("node exited cleanly");
        }
    }
}

/// The seed of a randomized test: `CONCORD_TEST_SEED` when set (to replay a run), else fresh;
/// printed either way so a failure can be replayed.
pub fn test_seed(what: &str) -> u64 {
    let seed = std::env::var("CONCORD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("{what} seed: {seed} (rerun with CONCORD_TEST_SEED={seed})");
    seed
}

/// Polls `check` until it is true, failing the test after `within`.
pub async fn poll_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A real `concord serve` process.
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
}

impl NodeProcess {
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, free_port(), &[]).await
    }

    pub async fn start_with(data_dir: &Path, port: u16, extra: &[String]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("CONCORD_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn concord");
        let p = NodeProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let c = client();
        let url = format!("{}/v1/health", p.url);
        poll_until("process ready", Duration::from_secs(60), || {
            let c = c.clone();
            let url = url.clone();
            async move {
                c.get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET /metrics` of the node at `base` (`http://host:port`).
pub async fn scrape(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one series in a Prometheus text exposition: `series` is the metric name with its
/// labels exactly as exposed (`concord_commits_total`, or
/// `concord_http_requests_total{method="PUT",route="...",status="201"}`). `None` when absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Garbles document `collection/id` on a stopped node's disk, as a disk fault might: its first
/// stored change becomes bytes Automerge cannot load, and its materialised JSON (if a read kept
/// one) is dropped, so nothing on the node can read it (otherwise reads would use that copy).
pub fn corrupt_document(dir: &Path, collection: &str, id: &str) {
    let cfs = concord::store::cfs::ALL;
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, cfs).unwrap();
    let key = concord::store::DocKey::new(collection, id).unwrap();
    let changes = db.cf_handle(concord::store::cfs::CHANGES).unwrap();
    assert!(db.get_cf(changes, key.change_key(0)).unwrap().is_some());
    db.put_cf(
        changes,
        key.change_key(0),
        b"\x85\x6f\x4a\x83garbage-not-automerge",
    )
    .unwrap();
    let json = db.cf_handle(concord::store::cfs::DOC_JSON).unwrap();
    db.delete_cf(json, key.encode()).unwrap();
}

/// A client that trusts only the CA in `ca_pem` (PEM), like a client of a TLS node would.
pub fn tls_client(ca_pem: &[u8]) -> reqwest::ClientBuilder {
    concord::tls::install_provider();
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem).expect("CA certificate"))
}
