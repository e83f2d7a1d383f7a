//! The `concord` binary: command-line parsing, logging set-up and signal handling. Everything
//! else lives in the library.

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
    Serve(ServeArgs),
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
            max_body_bytes,
            request_timeout_secs,
            compact_min_bytes,
            max_batch
        );
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
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
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config()?;
            init_logging(&config);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            concord::run(listener, config, shutdown_signal()).await?;
        }
    }
    Ok(())
}
