//! The `concord` binary: command-line parsing, logging set-up and signal handling. Everything
//! else lives in the library.

mod tools;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use concord::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "concord",
    version,
    about = "A replicated JSON document database built on Automerge CRDTs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Run a local N-node cluster (one process per node) until Ctrl-C.
    Cluster(ClusterArgs),
    /// Print a signed token (HS256) for testing; apps mint their own (see the README).
    Token(TokenArgs),
    /// Take, list, restore and verify backups.
    #[command(subcommand)]
    Backup(tools::BackupCommand),
    /// Write a collection's documents to stdout as NDJSON.
    Export(tools::ExportArgs),
    /// Read NDJSON documents (as exported) from stdin into a collection.
    Import(tools::ImportArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The HS256 secret file the node verifies with (`--jwt-secret-file`).
    #[arg(long)]
    secret_file: PathBuf,
    /// The user (`sub`).
    #[arg(long)]
    sub: String,
    /// read, write or admin.
    #[arg(long, default_value = "read")]
    access: String,
    /// A scope, repeatable: `COLLECTION`, `COLLECTION:SELECTOR_JSON` (claims as `"$sub"`) or
    /// `COLLECTION/ID_PREFIX` [default: none, every collection]
    #[arg(long)]
    scope: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    /// `aud` claim [default: none]
    #[arg(long)]
    audience: Option<String>,
    /// `iss` claim [default: none]
    #[arg(long)]
    issuer: Option<String>,
}

#[derive(Args)]
struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Folder for the nodes' data directories.
    #[arg(long, default_value = "./concord-cluster")]
    dir: PathBuf,
    /// Port of the first node; the others follow.
    #[arg(long, default_value_t = 7070)]
    base_port: u16,
    /// Cluster secret [default: generated, kept in DIR/cluster-secret]
    #[arg(long, env = "CONCORD_CLUSTER_SECRET")]
    cluster_secret: Option<String>,
    /// Serve over TLS with mutual TLS between the nodes: a throwaway CA and one certificate per
    /// node are made at start in DIR/tls (trust DIR/tls/ca.pem to connect)
    #[arg(long)]
    tls: bool,
}

/// Flags override `CONCORD_*` environment variables, which override the config file.
#[derive(Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "CONCORD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./concord-data]
    #[arg(long, env = "CONCORD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:7070]
    #[arg(long, env = "CONCORD_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Log format [default: human]
    #[arg(long, env = "CONCORD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `concord=debug` [default: info; RUST_LOG wins]
    #[arg(long, env = "CONCORD_LOG_LEVEL")]
    log_level: Option<String>,
    /// Document cache bound in bytes [default: 268435456]
    #[arg(long, env = "CONCORD_CACHE_BYTES")]
    cache_bytes: Option<u64>,
    /// Bound of the in-memory JSON of documents in bytes, 0 for none [default: 67108864]
    #[arg(long, env = "CONCORD_JSON_CACHE_BYTES")]
    json_cache_bytes: Option<u64>,
    /// Largest request body in bytes [default: 16777216]
    #[arg(long, env = "CONCORD_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Request timeout in seconds [default: 30]
    #[arg(long, env = "CONCORD_REQUEST_TIMEOUT_SECS")]
    request_timeout_secs: Option<u64>,
    /// Minimum incremental bytes before snapshot compaction [default: 16384]
    #[arg(long, env = "CONCORD_COMPACT_MIN_BYTES")]
    compact_min_bytes: Option<u64>,
    /// Most operations or documents per ops/bulk request [default: 1000]
    #[arg(long, env = "CONCORD_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Seed peers, comma-separated host:port [default: none]
    #[arg(long, env = "CONCORD_PEERS", value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Address peers reach this node at [default: the listen address]
    #[arg(long, env = "CONCORD_ADVERTISE")]
    advertise: Option<String>,
    /// Shared cluster secret, at least 16 characters [required with --peers]
    #[arg(long, env = "CONCORD_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Mean anti-entropy interval in ms [default: 2000]
    #[arg(long, env = "CONCORD_ANTI_ENTROPY_INTERVAL_MS")]
    anti_entropy_interval_ms: Option<u64>,
    /// Per-peer push queue length [default: 10000]
    #[arg(long, env = "CONCORD_PUSH_QUEUE")]
    push_queue: Option<usize>,
    /// Days after which unused client sync states are removed [default: 30]
    #[arg(long, env = "CONCORD_SYNC_STATE_TTL_DAYS")]
    sync_state_ttl_days: Option<u64>,
    /// Persisted client sync states per principal (token) [default: 1000000]
    #[arg(long, env = "CONCORD_MAX_SYNC_STATES_PER_PRINCIPAL")]
    max_sync_states_per_principal: Option<u64>,
    /// Requests handled at once before answering 503 [default: 4096]
    #[arg(long, env = "CONCORD_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: Option<usize>,
    /// Deepest JSON nesting accepted [default: 64]
    #[arg(long, env = "CONCORD_MAX_JSON_DEPTH")]
    max_json_depth: Option<usize>,
    /// Largest stored size a local write may give a document [default: 67108864]
    #[arg(long, env = "CONCORD_MAX_DOCUMENT_BYTES")]
    max_document_bytes: Option<u64>,
    /// Open automerge-repo WebSocket connections at once [default: 10000]
    #[arg(long, env = "CONCORD_MAX_WEBSOCKETS")]
    max_websockets: Option<usize>,
    /// Documents open on one automerge-repo WebSocket connection [default: 10000]
    #[arg(long, env = "CONCORD_MAX_WS_DOCS_PER_CONNECTION")]
    max_ws_docs_per_connection: Option<usize>,
    /// Long-lived HTTP streams (SSE, long polls) open at once [default: 1000]
    #[arg(long, env = "CONCORD_MAX_STREAMS")]
    max_streams: Option<usize>,
    /// TOML file with `[[tokens]]` API tokens [default: none]
    #[arg(long, env = "CONCORD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve non-loopback clients even without API tokens [default: false]
    #[arg(long, env = "CONCORD_ALLOW_UNAUTHENTICATED_REMOTE")]
    allow_unauthenticated_remote: bool,
    /// HS256 secret file for signed tokens (JWT) [default: none]
    #[arg(long, env = "CONCORD_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// JWKS file of public keys for signed tokens (EdDSA, RS256) [default: none]
    #[arg(long, env = "CONCORD_JWKS_FILE")]
    jwks_file: Option<PathBuf>,
    /// Required `aud` of signed tokens [default: not checked]
    #[arg(long, env = "CONCORD_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Required `iss` of signed tokens [default: not checked]
    #[arg(long, env = "CONCORD_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Collection of automerge-repo documents [default: automerge]
    #[arg(long, env = "CONCORD_AUTOMERGE_COLLECTION")]
    automerge_collection: Option<String>,
    /// Directory backups are written to [default: none, backups refused]
    #[arg(long, env = "CONCORD_BACKUP_DIR")]
    backup_dir: Option<PathBuf>,
    /// Backups kept after each backup, 0 for all [default: 7]
    #[arg(long, env = "CONCORD_BACKUP_KEEP_LAST")]
    backup_keep_last: Option<usize>,
    /// Take a backup this often, e.g. 6h or 30m [default: none, only on request]
    #[arg(long, env = "CONCORD_BACKUP_INTERVAL")]
    backup_interval: Option<String>,
    /// Serve the console (/ui/) from this directory, for console development [default: built in]
    #[arg(long, env = "CONCORD_CONSOLE_DIR")]
    console_dir: Option<PathBuf>,
    /// PEM certificate (chain) to serve the API over TLS with [default: none, plain HTTP]
    #[arg(long, env = "CONCORD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [default: none]
    #[arg(long, env = "CONCORD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that signs every node's certificate: TLS to and from peers [default: none]
    #[arg(long, env = "CONCORD_PEER_TLS_CA")]
    peer_tls_ca: Option<PathBuf>,
    /// Require peers to present a client certificate signed by --peer-tls-ca
    #[arg(long, env = "CONCORD_PEER_MTLS")]
    peer_mtls: bool,
    /// Reverse proxies whose X-Forwarded-For is believed, comma-separated networks [default: none]
    #[arg(long, env = "CONCORD_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<ipnet::IpNet>>,
    /// Source IP for connections to peers [default: chosen by the OS]
    #[arg(long, env = "CONCORD_PEER_BIND_IP")]
    peer_bind_ip: Option<std::net::IpAddr>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.$f = v; })* };
        }
        set!(
            data_dir,
            listen,
            log_format,
            log_level,
            cache_bytes,
            json_cache_bytes,
            max_body_bytes,
            request_timeout_secs,
            compact_min_bytes,
            max_batch,
            peers,
            anti_entropy_interval_ms,
            push_queue,
            sync_state_ttl_days,
            max_sync_states_per_principal,
            automerge_collection,
            max_concurrent_requests,
            max_json_depth,
            max_document_bytes,
            max_websockets,
            max_ws_docs_per_connection,
            max_streams,
            backup_keep_last
        );
        if self.backup_dir.is_some() {
            c.backup_dir = self.backup_dir;
        }
        if self.backup_interval.is_some() {
            c.backup_interval = self.backup_interval;
        }
        if self.advertise.is_some() {
            c.advertise = self.advertise;
        }
        if self.cluster_secret.is_some() {
            c.cluster_secret = self.cluster_secret;
        }
        if self.console_dir.is_some() {
            c.console_dir = self.console_dir;
        }
        for (field, value) in [
            (&mut c.tls_cert, self.tls_cert),
            (&mut c.tls_key, self.tls_key),
            (&mut c.peer_tls_ca, self.peer_tls_ca),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if self.peer_mtls {
            c.peer_mtls = true;
        }
        if let Some(p) = self.trusted_proxies {
            c.trusted_proxies = p;
        }
        if self.peer_bind_ip.is_some() {
            c.peer_bind_ip = self.peer_bind_ip;
        }
        if self.token_file.is_some() {
            c.token_file = self.token_file;
        }
        if self.jwt_secret_file.is_some() {
            c.jwt_secret_file = self.jwt_secret_file;
        }
        if self.jwks_file.is_some() {
            c.jwks_file = self.jwks_file;
        }
        if self.jwt_audience.is_some() {
            c.jwt_audience = self.jwt_audience;
        }
        if self.jwt_issuer.is_some() {
            c.jwt_issuer = self.jwt_issuer;
        }
        if self.allow_unauthenticated_remote {
            c.allow_unauthenticated_remote = true;
        }
        c.load_token_file()?;
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before any HTTP client or TLS listener is built.
    concord::tls::install_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = (*args).into_config()?;
            init_logging(&config);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            concord::run(listener, config, shutdown_signal()).await?;
        }
        Command::Cluster(args) => cluster(args).await?,
        Command::Token(args) => println!("{}", token(args)?),
        Command::Backup(cmd) => tools::backup(cmd).await?,
        Command::Export(args) => tools::export(args).await?,
        Command::Import(args) => tools::import(args).await?,
    }
    Ok(())
}

/// `concord token`: a signed token with the given claims.
fn token(args: TokenArgs) -> anyhow::Result<String> {
    use concord::access::{tokens, Access, ScopeRule};
    let secret = tokens::read_secret(&args.secret_file)?;
    let access: Access = serde_json::from_value(serde_json::Value::String(args.access.clone()))
        .map_err(|_| anyhow::anyhow!("--access must be read, write or admin"))?;
    let scopes = args
        .scope
        .iter()
        .map(|s| ScopeRule::parse_arg(s))
        .collect::<Result<Vec<_>, _>>()?;
    let claims = tokens::claims(
        &args.sub,
        access,
        (!scopes.is_empty()).then_some(scopes.as_slice()),
        std::time::Duration::from_secs(args.ttl_secs),
        args.audience.as_deref(),
        args.issuer.as_deref(),
    );
    Ok(tokens::mint_hs256(&secret, &claims)?)
}

/// `concord cluster`: N `concord serve` processes on consecutive ports, each seeded with the
/// others, sharing one secret; all stopped cleanly (SIGTERM, then wait) on Ctrl-C.
async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let secret_file = args.dir.join("cluster-secret");
    let secret = match args.cluster_secret {
        Some(s) => s,
        None => match std::fs::read_to_string(&secret_file) {
            Ok(s) => s.trim().to_string(),
            Err(_) => {
                let s = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                std::fs::write(&secret_file, &s).context("cannot write the cluster secret")?;
                s
            }
        },
    };
    let exe = std::env::current_exe().context("cannot find the concord executable")?;
    let addrs: Vec<String> = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", args.base_port + i))
        .collect();
    let tls_dir = args.dir.join("tls");
    let mut tls_args: Vec<Vec<std::ffi::OsString>> = Vec::new();
    if args.tls {
        use concord::tls::local_ca::{write_node, LocalCa, Validity};
        // Made afresh at every start: nothing outlives the local cluster.
        let ca = LocalCa::new("Concord local cluster CA")?;
        std::fs::create_dir_all(&tls_dir)
            .with_context(|| format!("cannot create {}", tls_dir.display()))?;
        let ca_path = tls_dir.join("ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).context("cannot write the CA certificate")?;
        for i in 0..args.nodes {
            let pem = ca.node(
                &format!("node{i}"),
                &["127.0.0.1", "localhost", "::1"],
                Validity::Lasting,
            )?;
            let f = write_node(&tls_dir, &format!("node{i}"), &pem)
                .context("cannot write a node certificate")?;
            tls_args.push(vec![
                "--tls-cert".into(),
                f.cert.into(),
                "--tls-key".into(),
                f.key.into(),
                "--peer-tls-ca".into(),
                ca_path.clone().into(),
                "--peer-mtls".into(),
            ]);
        }
    }
    let scheme = if args.tls { "https" } else { "http" };
    let mut children = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let data = args.dir.join(format!("node{i}"));
        let peers: Vec<&str> = addrs
            .iter()
            .filter(|a| *a != addr)
            .map(String::as_str)
            .collect();
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr)
            .arg("--data-dir")
            .arg(&data);
        if !peers.is_empty() {
            cmd.arg("--peers").arg(peers.join(","));
        }
        if let Some(t) = tls_args.get(i) {
            cmd.args(t);
        }
        cmd.env("CONCORD_CLUSTER_SECRET", &secret)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        println!("node{i}: {scheme}://{addr}  (data: {})", data.display());
        children.push(child);
    }
    if args.tls {
        let ca = tls_dir.join("ca.pem");
        println!(
            "TLS, with mutual TLS between the nodes; trust {} (e.g. curl --cacert {} {scheme}://{}/v1/health)",
            ca.display(),
            ca.display(),
            addrs[0]
        );
    }
    println!("cluster of {} running; Ctrl-C stops every node", args.nodes);
    shutdown_signal().await;
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for (i, mut c) in children.into_iter().enumerate() {
        let status = c.wait().await?;
        println!("node{i} stopped: {status}");
    }
    Ok(())
}
