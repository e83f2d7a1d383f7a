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
//!
//! Dependencies point one way: `api` → `store` → `doc`. There are no globals except the memory
//! allocator: Automerge makes many small allocations, which fragment glibc's malloc badly, so the
//! whole process (tests and benchmarks included) uses jemalloc.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod api;
pub mod config;
pub mod doc;
pub mod metrics;
pub mod replication;
pub mod server;
pub mod store;
pub mod sync;

pub use config::Config;
pub use server::run;
