//! How this node talks to a peer: one typed call per peer endpoint, behind a trait so the
//! replication core runs over HTTP in production ([`super::client::PeerClient`]) and in-process
//! in tests and benchmarks ([`super::in_process::InProcess`]).

use std::future::Future;

use thiserror::Error;

use super::wire::*;

/// Whose fault a failed exchange was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Transport failures, the peer's own faults (5xx) and answers that make no sense: the peer
    /// is down (pushes pause, rounds back off).
    PeerDown,
    /// The peer is pushing back (503 overloaded, 507 disk full): alive; ask again a little later.
    PeerBusy,
    /// The peer answered and refused (4xx): alive.
    PeerRefused,
    /// This node failed (its own store, a worker): says nothing about the peer.
    Local,
}

/// A failed exchange with a peer (this node's own failures are [`super::ReplicationError`]'s
/// other variants).
#[derive(Debug, Error)]
pub enum PeerError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot decode the peer's answer: {0}")]
    Decode(String),
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

impl PeerError {
    pub fn blame(&self) -> Blame {
        match self {
            PeerError::Encode(_) => Blame::Local,
            PeerError::Status {
                status: 503 | 507, ..
            } => Blame::PeerBusy,
            PeerError::Status { status, .. } if (400..500).contains(status) => Blame::PeerRefused,
            PeerError::Status { .. } | PeerError::Unreachable(_) | PeerError::Decode(_) => {
                Blame::PeerDown
            }
        }
    }
}

/// A peer's answer with the traffic it cost.
pub struct Exchange<T> {
    pub value: T,
    pub sent: u64,
    pub received: u64,
}

/// The peer endpoints, as calls. `peer` is the peer's advertised address.
pub trait PeerTransport: Send + Sync + 'static {
    /// Gossip, and the peer's digest root.
    fn hello(
        &self,
        peer: &str,
        req: &HelloV1,
    ) -> impl Future<Output = Result<Exchange<RootV1>, PeerError>> + Send;
    /// Salted hashes of the children of digest tree nodes.
    fn digest(
        &self,
        peer: &str,
        req: &DigestRequestV1,
    ) -> impl Future<Output = Result<Exchange<DigestV1>, PeerError>> + Send;
    /// The documents (and leaves) of digest buckets.
    fn bucket_docs(
        &self,
        peer: &str,
        req: &BucketsRequestV1,
    ) -> impl Future<Output = Result<Exchange<BucketsV1>, PeerError>> + Send;
    /// Changes after our heads, per document.
    fn pull(
        &self,
        peer: &str,
        req: &PullV1,
    ) -> impl Future<Output = Result<Exchange<PullResponseV1>, PeerError>> + Send;
    /// Changes for the peer to apply; what it took, and per document what it did not.
    fn push_changes(
        &self,
        peer: &str,
        req: &ChangesV1,
    ) -> impl Future<Output = Result<Exchange<ChangesResultV1>, PeerError>> + Send;
    /// One Automerge sync step per document, in a session we drive.
    fn sync(
        &self,
        peer: &str,
        req: &SyncV1,
    ) -> impl Future<Output = Result<Exchange<SyncV1>, PeerError>> + Send;
}
