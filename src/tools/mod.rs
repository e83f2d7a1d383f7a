//! The binary's operator commands: backups (`concord backup ...`) and logical export / import
//! (`concord export`, `concord import`). Those that talk to a running node are thin HTTP clients
//! of its admin API; restore and verify work offline on a backup directory. Progress goes to
//! stderr when it is a terminal; data goes to stdout.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

/// Where a node is and how to talk to it.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's URL.
    #[arg(long, env = "CONCORD_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// An API token with the `admin` access level [default: none, for a loopback node without
    /// tokens]
    #[arg(long, env = "CONCORD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl NodeArgs {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let client = reqwest::Client::new();
        let mut req = client.request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }
}

/// Sends `req`; the response when it succeeded, the node's problem as an error otherwise.
async fn send_ok(req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
    let resp = req.send().await.context("cannot reach the node")?;
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(failed(resp).await)
    }
}

/// The node's problem answer as an error.
async fn failed(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or(body);
    anyhow::anyhow!("the node answered {status}: {detail}")
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Take a backup of a running node now (into its `backup_dir`).
    Create(NodeArgs),
    /// List the backups of a running node, or of a backup directory (`--from`).
    List {
        #[command(flatten)]
        node: NodeArgs,
        /// A backup directory to read instead of asking a node.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Restore a backup into a new, empty data directory (offline), checked end to end; the
    /// restored node gets a new node id.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The backup to restore [default: the latest]
        #[arg(long)]
        id: Option<u32>,
        /// Where to restore (must be empty or absent).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Check a backup (checksums and an end-to-end integrity check) without restoring it where
    /// a node would use it.
    Verify {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The backup to check [default: the latest]
        #[arg(long)]
        id: Option<u32>,
        /// Scratch space for the check, as large as the backup [default: inside --from]
        #[arg(long)]
        scratch: Option<PathBuf>,
    },
}

fn progress_printer(what: &'static str) -> impl FnMut(u64) {
    let tty = std::io::stderr().is_terminal();
    move |n| {
        if tty {
            eprint!("\r{what}: {n} documents");
        }
    }
}

pub async fn backup(cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Create(node) => {
            let resp = send_ok(node.request(reqwest::Method::POST, "/v1/admin/backups")).await?;
            println!("{}", resp.text().await?);
        }
        BackupCommand::List { node, from } => {
            let text = match from {
                Some(dir) => {
                    let list =
                        tokio::task::spawn_blocking(move || concord::backup::list(&dir)).await??;
                    serde_json::to_string_pretty(&list)?
                }
                None => {
                    let resp =
                        send_ok(node.request(reqwest::Method::GET, "/v1/admin/backups")).await?;
                    resp.text().await?
                }
            };
            println!("{text}");
        }
        BackupCommand::Restore { from, id, data_dir } => {
            let r = tokio::task::spawn_blocking(move || {
                concord::backup::restore(&from, id, &data_dir, progress_printer("checked"))
            })
            .await??;
            eprintln!();
            println!("{}", serde_json::to_string_pretty(&r)?);
            eprintln!(
                "restored backup {} as a new replica (node id {}): {} documents checked, no problem found",
                r.backup, r.node_id, r.integrity.documents
            );
        }
        BackupCommand::Verify { from, id, scratch } => {
            let r = tokio::task::spawn_blocking(move || {
                concord::backup::verify(&from, id, scratch.as_deref(), progress_printer("checked"))
            })
            .await??;
            eprintln!();
            println!("{}", serde_json::to_string_pretty(&r.integrity)?);
            eprintln!(
                "backup {} is sound: checksums match and {} documents passed the integrity check",
                r.backup, r.integrity.documents
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The collection to export.
    #[arg(long)]
    collection: String,
    /// `json` (documents as GET returns them) or `automerge` (whole documents with history,
    /// which an import merges)
    #[arg(long, default_value = "json")]
    format: String,
}

/// Prints "N documents, M MB" over itself on a terminal, at most a few times a second.
struct Progress {
    tty: bool,
    last: Instant,
    what: &'static str,
}

impl Progress {
    fn new(what: &'static str) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: Instant::now(),
            what,
        }
    }

    fn show(&mut self, lines: Option<u64>, bytes: u64, force: bool) {
        if self.tty && (force || self.last.elapsed() > Duration::from_millis(200)) {
            self.last = Instant::now();
            let docs = lines
                .map(|n| format!("{n} documents, "))
                .unwrap_or_default();
            eprint!("\r{}: {docs}{:.1} MB", self.what, bytes as f64 / 1e6);
        }
    }
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let resp = send_ok(args.node.request(
        reqwest::Method::GET,
        &format!(
            "/v1/collections/{}/export?format={}",
            args.collection, args.format
        ),
    ))
    .await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut progress = Progress::new("exported");
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.context("the export broke off before its end: the output is incomplete")?;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        bytes += chunk.len() as u64;
        out.write_all(&chunk)?;
        progress.show(Some(lines), bytes, false);
    }
    out.flush()?;
    progress.show(Some(lines), bytes, true);
    if progress.tty {
        eprintln!();
    }
    Ok(())
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The collection to import into.
    #[arg(long)]
    collection: String,
    /// The format of the lines (as exported).
    #[arg(long, default_value = "json")]
    format: String,
    /// `json`: leave documents that already exist as they are.
    #[arg(long)]
    if_absent: bool,
}

/// Reads stdin into the request body, counting what was sent.
fn stdin_body(sent: std::sync::Arc<std::sync::atomic::AtomicU64>) -> reqwest::Body {
    let stream = futures::stream::unfold(tokio::io::stdin(), move |mut input| {
        let sent = sent.clone();
        async move {
            let mut buf = vec![0u8; 256 << 10];
            match input.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    Some((Ok::<_, std::io::Error>(buf), input))
                }
                Err(e) => Some((Err(e), input)),
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let resp = send_ok(
        args.node
            .request(
                reqwest::Method::POST,
                &format!(
                    "/v1/collections/{}/import?format={}&if_absent={}",
                    args.collection, args.format, args.if_absent
                ),
            )
            .header("content-type", "application/x-ndjson")
            .body(stdin_body(sent.clone())),
    )
    .await?;
    let mut progress = Progress::new("sent");
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut summary: Option<serde_json::Value> = None;
    let mut failures = 0u64;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.context("the node's answer broke off")?);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let ev: serde_json::Value = serde_json::from_slice(&line)?;
            if ev.get("done").is_some() {
                summary = Some(ev);
            } else {
                failures += 1;
                if progress.tty {
                    eprintln!();
                }
                eprintln!(
                    "line {}{}: {}",
                    ev["line"],
                    ev.get("id")
                        .and_then(|i| i.as_str())
                        .map(|i| format!(" (id {i})"))
                        .unwrap_or_default(),
                    ev["error"].as_str().unwrap_or("")
                );
            }
        }
        progress.show(None, sent.load(std::sync::atomic::Ordering::Relaxed), false);
    }
    if progress.tty {
        eprintln!();
    }
    let Some(summary) = summary else {
        bail!("the import ended without its summary: the connection broke; lines before the break may be applied (importing again is safe)");
    };
    println!("{summary}");
    if summary["done"] != serde_json::Value::Bool(true) {
        bail!(
            "the import stopped early: {}",
            summary["error"].as_str().unwrap_or("unknown")
        );
    }
    if failures > 0 {
        bail!("{failures} line(s) were not imported (listed above)");
    }
    Ok(())
}
