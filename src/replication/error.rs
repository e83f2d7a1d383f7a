//! What can go wrong in replication, and whose fault it was.
//!
//! The fault decides what happens to the peer: only its own failures mark it down (which pauses
//! eager push to it and backs its rounds off); back-pressure asks again a little later; a refusal
//! keeps it up; and this node's own failures (its store, a worker) say nothing about the peer.

use thiserror::Error;

pub use super::transport::Blame;
use super::transport::PeerError;
use crate::blocking::WorkerFailed;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Worker(#[from] WorkerFailed),
}

impl ReplicationError {
    pub fn blame(&self) -> Blame {
        match self {
            ReplicationError::Peer(e) => e.blame(),
            ReplicationError::Store(_) | ReplicationError::Worker(_) => Blame::Local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ReplicationError {
        ReplicationError::Peer(PeerError::Status {
            status,
            body: String::new(),
        })
    }

    #[test]
    fn only_the_peers_own_failures_mark_it_down() {
        let unreachable = ReplicationError::Peer(PeerError::Unreachable("refused".into()));
        assert_eq!(unreachable.blame(), Blame::PeerDown);
        assert_eq!(status(500).blame(), Blame::PeerDown);
        assert_eq!(status(502).blame(), Blame::PeerDown);
        let garbage = ReplicationError::Peer(PeerError::Decode("garbage".into()));
        assert_eq!(garbage.blame(), Blame::PeerDown);
        // Back-pressure and refusals: alive.
        assert_eq!(status(503).blame(), Blame::PeerBusy);
        assert_eq!(status(507).blame(), Blame::PeerBusy);
        assert_eq!(status(413).blame(), Blame::PeerRefused);
        assert_eq!(status(401).blame(), Blame::PeerRefused);
        // This node's own failures say nothing about the peer.
        let local = ReplicationError::Store(StoreError::Corrupt("bad record".into()));
        assert_eq!(local.blame(), Blame::Local);
        let encode = ReplicationError::Peer(PeerError::Encode("too big".into()));
        assert_eq!(encode.blame(), Blame::Local);
    }
}
