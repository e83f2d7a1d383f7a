//! Concord: a replicated JSON document database built on Automerge CRDTs and RocksDB.
//!
//! # Layout
//!
//! ```text
//!  HTTP clients
//!       │
//!       ▼
//!   api/      routes, extractors, conditional requests, problem+json errors, observability
//!       │
//!       ▼
//!   store/    RocksDB: one WriteBatch per commit, document cache, feed, migrations
//!       │
//!       ▼
//!   doc/      the Automerge domain: JSON ⇄ Automerge, writes, ops, tombstones, history
//!
//!   replication/  membership, eager push and anti-entropy between nodes; uses store and doc
//! ```
//!
//! - [`config`]: the one configuration struct (file, env, flags), validated at start.
//! - [`server`]: `run(listener, config, shutdown)` builds the [`server::Node`] and serves it.
//! - [`api`]: the REST API (contract: `openapi.yaml`).
//! - [`store`]: durable storage of documents, the changes feed and collection counts.
//! - [`doc`]: pure document logic; knows neither HTTP nor RocksDB.
//! - [`replication`]: peers, eager push, anti-entropy (digest tree + Automerge sync).
//! - [`sync`]: offline-first clients syncing with Automerge's protocol over HTTP.
//! - [`metrics`]: the node's Prometheus registry.
//! - [`codec`]: decoders of untrusted bytes (sync messages, changes, WebSocket frames, cursors),
//!   pure like `doc`; with `doc`, all that builds without the default `server` feature.
//!
//! Dependencies point one way: `api` → `store` → `doc`. There are no globals except the memory
//! allocator: Automerge makes many small allocations, which fragment glibc's malloc badly, so the
//! whole process (tests and benchmarks included) uses jemalloc.

#[cfg(feature = "server")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Pure: no I/O and none of the server's dependencies (the fuzz targets build only these).
pub mod codec;
pub mod doc;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod replication;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod sync;

#[cfg(feature = "server")]
pub use config::Config;
#[cfg(feature = "server")]
pub use server::run;
