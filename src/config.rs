//! The node's configuration: one struct, filled from a TOML file, then `CONCORD_*` environment
//! variables, then command-line flags (each overriding the one before), and validated at start.
//! Every field's default is written next to it and in the README's reference table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::access::tokens::{Authenticator, KeySources, StaticToken, Verifier};
pub use crate::access::Access;
use crate::access::ScopeRule;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where RocksDB keeps the node's data. Default `./concord-data`.
    pub data_dir: PathBuf,
    /// Address the REST API listens on. Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Log line format. Default `human`.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax; `RUST_LOG` wins when set). Default `info`.
    pub log_level: String,
    /// Bound of the loaded-document cache, in bytes (estimated). Default 268435456 (256 MiB).
    pub cache_bytes: u64,
    /// Bound of the in-memory copies of documents' JSON, which answer reads of unchanged
    /// documents without RocksDB, in bytes (estimated; 0: none). Default 67108864 (64 MiB).
    pub json_cache_bytes: u64,
    /// Largest accepted request body, in bytes. Default 16777216 (16 MiB).
    pub max_body_bytes: usize,
    /// Time a request may take before it is answered 503. Default 30 s.
    pub request_timeout_secs: u64,
    /// Incremental changes are compacted into a snapshot once they outgrow it and exceed this many
    /// bytes. Default 16384.
    pub compact_min_bytes: u64,
    /// Most operations one `ops` or bulk request may carry. Default 1000.
    pub max_batch: usize,
    /// Seed peers (`host:port` of their API); the rest of the cluster is learned from them.
    /// Default: none (a single node, or a seed for others).
    pub peers: Vec<String>,
    /// The `host:port` other nodes reach this node's API at. Default: the listen address.
    pub advertise: Option<String>,
    /// Shared secret every node of the cluster presents on peer requests. Required with `peers`.
    /// Default: none (peer endpoints refuse every request).
    pub cluster_secret: Option<String>,
    /// Mean time between anti-entropy rounds with each peer, in ms (jittered ±50%). Default 2000.
    pub anti_entropy_interval_ms: u64,
    /// Changes waiting to be pushed to one peer; beyond it, pushes are dropped and anti-entropy
    /// repairs. Default 10000.
    pub push_queue: usize,
    /// Source IP for connections to peers (multi-homed hosts, tests). Default: chosen by the OS.
    pub peer_bind_ip: Option<std::net::IpAddr>,
    /// Client sync states unused for this many days are removed. Default 30.
    pub sync_state_ttl_days: u64,
    /// Persisted client sync states one principal (a token; everyone, without tokens) may own.
    /// Beyond it, that principal's new clients still sync, but their states are not kept (a
    /// reconnect resends a little more). Default 1000000.
    pub max_sync_states_per_principal: u64,
    /// The collection that holds automerge-repo documents (by DocumentId). Default `automerge`.
    pub automerge_collection: String,
    /// API tokens (`[[tokens]]` tables: name, token, access = "read" | "write" | "admin",
    /// collections, scopes). Default: none, and then (without JWT keys) only loopback clients
    /// are served.
    pub tokens: Vec<TokenConfig>,
    /// A TOML file with more `[[tokens]]` (kept out of the main config). Default: none.
    pub token_file: Option<PathBuf>,
    /// File holding the HS256 secret app backends sign tokens with (at least 32 bytes).
    /// Default: none (HS256 tokens are refused).
    pub jwt_secret_file: Option<PathBuf>,
    /// JWKS file of public keys (Ed25519 for EdDSA, RSA for RS256) that verify signed tokens;
    /// re-read when it changes and on SIGHUP. Default: none.
    pub jwks_file: Option<PathBuf>,
    /// Audience signed tokens must carry in `aud`. Default: none (not checked).
    pub jwt_audience: Option<String>,
    /// Issuer signed tokens must carry in `iss`. Default: none (not checked).
    pub jwt_issuer: Option<String>,
    /// Serve non-loopback clients even with no tokens configured. Default false.
    pub allow_unauthenticated_remote: bool,
    /// Requests handled at once; beyond it the node answers 503 with `Retry-After` at once instead
    /// of queueing. Long polls and SSE streams count while they wait. Default 4096.
    pub max_concurrent_requests: usize,
    /// Deepest JSON nesting accepted in a request body. Default 64.
    pub max_json_depth: usize,
    /// Largest stored size a local write may give a document (changes from peers are always
    /// accepted, so replicas converge). Default 67108864 (64 MiB).
    pub max_document_bytes: u64,
    /// Open automerge-repo WebSocket connections at once. Default 10000.
    pub max_websockets: usize,
    /// Documents one automerge-repo WebSocket connection may have open; naming one more gets an
    /// `error` frame and the connection is closed. Default 10000.
    pub max_ws_docs_per_connection: usize,
    /// Long-lived HTTP streams open at once (changes-feed SSE and long polls, per-document
    /// events); beyond it the node answers 503 with `Retry-After`. Default 1000.
    pub max_streams: usize,
    /// Where backups are written (`POST /v1/admin/backups`, `concord backup create`, the
    /// schedule): a directory on another disk than `data_dir`, ideally. Default: none (backups
    /// are refused until it is set).
    pub backup_dir: Option<PathBuf>,
    /// Backups kept: after each backup the oldest beyond this many are removed (0 keeps all).
    /// Default 7.
    pub backup_keep_last: usize,
    /// Take a backup this often (e.g. `"6h"`, `"30m"`, `"1day"`). Default: none (only on
    /// request).
    pub backup_interval: Option<String>,
    /// Serve the web console (`/ui/`) from this directory instead of the copy built into the
    /// binary, read on every request: for working on the console without rebuilding. Default:
    /// none (the built-in console).
    pub console_dir: Option<PathBuf>,
    /// PEM certificate chain (leaf first) the node serves its API over TLS with (HTTP/2 and
    /// HTTP/1.1), with `tls_key`; re-read when the files change or on SIGHUP, for new
    /// connections. Default: none (plain HTTP).
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1; not encrypted). Default: none.
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs every node's certificate: with it the node speaks TLS to its
    /// peers, verifies their certificates and presents its own. Needs `tls_cert`. Default: none
    /// (plain HTTP to peers).
    pub peer_tls_ca: Option<PathBuf>,
    /// Peer requests must come over a connection with a client certificate signed by
    /// `peer_tls_ca` (the cluster secret is still required). Default false.
    pub peer_mtls: bool,
    /// Reverse proxies (IP networks, e.g. `"127.0.0.1/32"`) whose `X-Forwarded-For` names the
    /// client for the loopback rule. Default: none (the header is never believed).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./concord-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            log_format: LogFormat::Human,
            log_level: "info".to_string(),
            cache_bytes: 256 << 20,
            json_cache_bytes: 64 << 20,
            max_body_bytes: 16 << 20,
            request_timeout_secs: 30,
            compact_min_bytes: 16 << 10,
            max_batch: 1000,
            peers: Vec::new(),
            advertise: None,
            cluster_secret: None,
            anti_entropy_interval_ms: 2000,
            push_queue: 10_000,
            peer_bind_ip: None,
            sync_state_ttl_days: 30,
            max_sync_states_per_principal: 1_000_000,
            automerge_collection: "automerge".to_string(),
            tokens: Vec::new(),
            token_file: None,
            jwt_secret_file: None,
            jwks_file: None,
            jwt_audience: None,
            jwt_issuer: None,
            allow_unauthenticated_remote: false,
            max_concurrent_requests: 4096,
            max_json_depth: 64,
            max_document_bytes: 64 << 20,
            max_websockets: 10_000,
            max_ws_docs_per_connection: 10_000,
            max_streams: 1000,
            backup_dir: None,
            backup_keep_last: 7,
            backup_interval: None,
            console_dir: None,
            tls_cert: None,
            tls_key: None,
            peer_tls_ca: None,
            peer_mtls: false,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a TOML config file; missing fields keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks values that would make the node misbehave rather than fail loudly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes must be at least 1024");
        }
        if self.request_timeout_secs == 0 {
            return invalid("request_timeout_secs must be at least 1");
        }
        if self.max_batch == 0 {
            return invalid("max_batch must be at least 1");
        }
        if self.cache_bytes < 1 << 20 {
            return invalid("cache_bytes must be at least 1048576 (1 MiB)");
        }
        if !self.peers.is_empty() && self.cluster_secret.as_deref().is_none_or(str::is_empty) {
            return invalid("cluster_secret is required when peers are configured");
        }
        if self.cluster_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return invalid("cluster_secret must be at least 16 characters");
        }
        if self.anti_entropy_interval_ms < 10 {
            return invalid("anti_entropy_interval_ms must be at least 10");
        }
        if crate::store::keys::validate_collection(&self.automerge_collection).is_err() {
            return invalid("automerge_collection must be a valid collection name");
        }
        for t in &self.tokens {
            if t.token.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "token `{}` must be at least 16 characters",
                    t.name
                )));
            }
            if self.cluster_secret.as_deref() == Some(t.token.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "token `{}` equals the cluster secret: client tokens and the peer secret must differ",
                    t.name
                )));
            }
        }
        if self.jwt_secret_file.is_none()
            && self.jwks_file.is_none()
            && (self.jwt_audience.is_some() || self.jwt_issuer.is_some())
        {
            return invalid("jwt_audience and jwt_issuer need jwt_secret_file or jwks_file");
        }
        if self.max_concurrent_requests == 0 || self.max_websockets == 0 {
            return invalid("max_concurrent_requests and max_websockets must be at least 1");
        }
        if self.max_ws_docs_per_connection == 0 {
            return invalid("max_ws_docs_per_connection must be at least 1");
        }
        // The stream slots are semaphore permits, which have a ceiling.
        if self.max_streams == 0 || self.max_streams > tokio::sync::Semaphore::MAX_PERMITS {
            return invalid("max_streams must be at least 1 (and below 2^61)");
        }
        if !(1..=128).contains(&self.max_json_depth) {
            return invalid("max_json_depth must be between 1 and 128");
        }
        if self.max_document_bytes < 1024 {
            return invalid("max_document_bytes must be at least 1024");
        }
        if self.push_queue == 0 {
            return invalid("push_queue must be at least 1");
        }
        if self.backup_interval.is_some() && self.backup_dir.is_none() {
            return invalid("backup_interval needs backup_dir");
        }
        self.backup_every()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert and tls_key go together");
        }
        if self.peer_tls_ca.is_some() && self.tls_cert.is_none() {
            return invalid(
                "peer_tls_ca needs tls_cert and tls_key (peers speak TLS to this node too)",
            );
        }
        if self.peer_mtls && self.peer_tls_ca.is_none() {
            return invalid(
                "peer_mtls needs peer_tls_ca (the CA peers' certificates must chain to)",
            );
        }
        Ok(())
    }

    /// The files the TLS listener is built from, when TLS is configured.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.peer_tls_ca.clone().filter(|_| self.peer_mtls),
            peer_ca: self.peer_tls_ca.clone(),
        })
    }

    /// `backup_interval`, parsed (at least a minute).
    pub fn backup_every(&self) -> Result<Option<std::time::Duration>, ConfigError> {
        let Some(text) = &self.backup_interval else {
            return Ok(None);
        };
        let d = humantime::parse_duration(text).map_err(|e| {
            ConfigError::Invalid(format!(
                "backup_interval `{text}`: {e} (write e.g. \"6h\", \"30m\" or \"1day\")"
            ))
        })?;
        if d < std::time::Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "backup_interval must be at least one minute".into(),
            ));
        }
        Ok(Some(d))
    }

    /// Adds the tokens of `token_file`, if any, to `tokens`.
    pub fn load_token_file(&mut self) -> Result<(), ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TokenFile {
            tokens: Vec<TokenConfig>,
        }
        let Some(path) = self.token_file.clone() else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: TokenFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        self.tokens.extend(file.tokens);
        Ok(())
    }

    /// Everything that authenticates clients: the static tokens (scopes bound to their names)
    /// and the signed-token verifier with its keys loaded. Fails on an unusable scope or key.
    pub fn authenticator(&self) -> Result<Authenticator, ConfigError> {
        let statics = self
            .tokens
            .iter()
            .map(|t| {
                StaticToken::new(
                    &t.name,
                    &t.token,
                    t.access,
                    t.collections.clone(),
                    t.scopes.as_deref(),
                )
                .map_err(|e| ConfigError::Invalid(format!("token `{}`: {e}", t.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sources = KeySources {
            secret_file: self.jwt_secret_file.clone(),
            jwks_file: self.jwks_file.clone(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        };
        let verifier = if sources.any() {
            Some(Verifier::new(&sources).map_err(|e| ConfigError::Invalid(e.to_string()))?)
        } else {
            None
        };
        Ok(Authenticator::new(statics, verifier))
    }

    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            cache_bytes: self.cache_bytes,
            json_cache_bytes: self.json_cache_bytes,
            compact_min_bytes: self.compact_min_bytes,
            sync_writes: true,
            max_document_bytes: self.max_document_bytes,
        }
    }
}

/// One API token, as configured.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and metrics (the token itself is never logged).
    pub name: String,
    /// The secret the client presents (at least 16 characters).
    pub token: String,
    #[serde(default)]
    pub access: Access,
    /// Collections the token may touch (absent: all).
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    /// Documents it may touch (`{collection, selector, id_prefix}`; `$sub` is the token's
    /// name). Absent: whole collections.
    #[serde(default)]
    pub scopes: Option<Vec<ScopeRule>>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("access", &self.access)
            .field("collections", &self.collections)
            .field("scopes", &self.scopes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "listen = \"0.0.0.0:9000\"\ncache_bytes = 2097152\n").unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.cache_bytes, 2 << 20);
        assert_eq!(c.max_batch, 1000);
        std::fs::write(&p, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&p),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn validation() {
        assert!(Config::default().validate().is_ok());
        let c = Config {
            max_body_bytes: 10,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
