//! The Automerge domain: how JSON documents live inside Automerge, and nothing else.
//!
//! This module knows neither HTTP nor RocksDB. It owns the mapping between JSON and Automerge
//! (`json`), the write operations the API offers on top of it (`replace`, `merge_patch`, `ops`),
//! tombstones (`tombstone`), version identifiers (`heads`), change history (`history`) and the
//! containment of Automerge panics (`contain`).

pub mod contain;
pub mod error;
pub mod heads;
pub mod history;
pub mod json;
pub mod ops;
pub mod pointer;
pub mod tombstone;
pub mod write;

pub use error::DocError;
