//! Concord: a replicated JSON document database built on Automerge CRDTs and RocksDB.
//!
//! # Layout
//!
//! The house has floors; a module uses only modules on floors below its own (and, inside its
//! folder, files that do not use it back). `tests/layering.rs` checks both.
//!
//! ```text
//! 10  server        assembles the router, starts the background tasks, runs the node
//!  9  api/          every HTTP endpoint: REST, client sync (HTTP, WebSocket), peer endpoints
//!  8  http/         shared HTTP plumbing: problem+json errors, extractors, principals, tokens,
//!                   the cluster-secret check, conditional requests, request observation
//!  7  node/         the node's state (`Node`), the WebSocket hub, stream slots
//!  6  replication/  the replication core: membership, push lanes, anti-entropy rounds, the
//!                   responder, over a transport trait (HTTP client or in-process)
//!  5  sync/         the one Automerge sync step, clients' persisted sync states
//!     find/         running queries against the store: find, explain, index builds
//!     config        the one configuration struct (file, env, flags), validated at start
//!     backup/       physical backups (RocksDB's BackupEngine), restore, verify
//!     transfer/     logical export and import of a collection (NDJSON)
//!  4  store/        RocksDB: one WriteBatch per commit, document cache, feed, digest, migrations
//!  3  metrics       the node's Prometheus registry
//!  2  memory        the heap a document really holds (jemalloc)
//!     blocking      blocking work off the async workers, with the caller's error type
//!     access/       who may do what: access levels, scopes bound to claims, signed tokens
//!     tls/          TLS: the listener (certificates reloaded live), client certificates,
//!                   rustls as the one crypto provider, a throwaway CA for local clusters
//!  1  codec/        decoders of untrusted bytes (sync messages, changes, frames, cursors)
//!     query/        selectors, the order of JSON values and index keys, query planning
//!  0  doc/          the Automerge domain: JSON ⇄ Automerge, writes, ops, tombstones, history
//! ```
//!
//! `doc` and `codec` are pure and build without the default `server` feature (the fuzz targets
//! build only these). There are no globals except the memory allocator: Automerge makes many
//! small allocations, which fragment glibc's malloc badly, so the whole process (tests and
//! benchmarks included) uses jemalloc.

#[cfg(feature = "server")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Pure: no I/O and none of the server's dependencies (the fuzz targets build only these).
pub mod codec;
pub mod doc;
pub mod query;

#[cfg(feature = "server")]
pub mod access;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod backup;
#[cfg(feature = "server")]
pub mod blocking;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod find;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod memory;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod replication;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod sync;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod transfer;

#[cfg(feature = "server")]
pub use config::Config;
#[cfg(feature = "server")]
pub use server::run;
