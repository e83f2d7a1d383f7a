//! Shared HTTP plumbing: the one mapping of errors to `application/problem+json` (`problem`),
//! extractors with limits (`extract`), client principals and token checks (`auth`), the
//! cluster-secret check of the peer endpoints (`peer_auth`), conditional requests
//! (`conditional`), and request observation (`observe`).
//!
//! The REST API, client sync and the peer endpoints all use it; no domain code (store, doc, the
//! sync step, the replication core) imports it.

pub mod auth;
pub mod conditional;
pub mod extract;
pub mod observe;
pub mod peer_auth;
pub mod problem;
