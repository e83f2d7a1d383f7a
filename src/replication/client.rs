//! The HTTP client for peer requests: postcard bodies, the cluster secret, timeouts, an optional
//! source address, and byte counts for the anti-entropy metrics.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use super::{auth, wire};

/// What an error says about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Transport failures, the peer's own faults (5xx) and answers that make no sense: the peer
    /// is down (pushes pause, rounds back off).
    PeerDown,
    /// The peer answered and refused (4xx), or is pushing back (503 overloaded, 507 disk full):
    /// it is alive; try again later.
    PeerAlive,
    /// This node failed (its own store): says nothing about the peer.
    Local,
}

impl PeerError {
    pub fn blame(&self) -> Blame {
        match self {
            PeerError::Local(_) | PeerError::Encode(_) => Blame::Local,
            PeerError::Status { status, .. } if (400..500).contains(status) => Blame::PeerAlive,
            PeerError::Status {
                status: 503 | 507, ..
            } => Blame::PeerAlive,
            PeerError::Status { .. } | PeerError::Unreachable(_) | PeerError::Decode(_) => {
                Blame::PeerDown
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("local: {0}")]
    Local(String),
    #[error("peer answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot decode the peer's answer: {0}")]
    Decode(String),
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: String,
}

/// A peer answer with the traffic it cost.
pub struct Exchange<T> {
    pub value: T,
    pub sent: u64,
    pub received: u64,
}

impl PeerClient {
    pub fn new(secret: Option<String>, bind: Option<std::net::IpAddr>) -> Result<Self, PeerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(30))
            .local_address(bind)
            .build()
            .map_err(|e| PeerError::Unreachable(e.to_string()))?;
        Ok(PeerClient {
            http,
            secret: secret.unwrap_or_default(),
        })
    }

    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: &str,
        path: &str,
        req: &Req,
    ) -> Result<Exchange<Resp>, PeerError> {
        let x = self.call_raw(peer, path, req).await?;
        let value = postcard::from_bytes(&x.value).map_err(|e| PeerError::Decode(e.to_string()))?;
        Ok(Exchange {
            value,
            sent: x.sent,
            received: x.received,
        })
    }

    /// `POST /v1/peer/changes`: what the peer took, and per document what it did not.
    pub async fn push_changes(
        &self,
        peer: &str,
        req: &wire::ChangesV1,
    ) -> Result<Exchange<wire::ChangesResultV1>, PeerError> {
        let x = self.call_raw(peer, "/v1/peer/changes", req).await?;
        let value = wire::ChangesResultV1::decode(&x.value)
            .map_err(|e| PeerError::Decode(e.to_string()))?;
        Ok(Exchange {
            value,
            sent: x.sent,
            received: x.received,
        })
    }

    async fn call_raw<Req: Serialize>(
        &self,
        peer: &str,
        path: &str,
        req: &Req,
    ) -> Result<Exchange<bytes::Bytes>, PeerError> {
        let body = postcard::to_stdvec(req).map_err(|e| PeerError::Encode(e.to_string()))?;
        let sent = body.len() as u64;
        let resp = self
            .http
            .post(format!("http://{peer}{path}"))
            .header(auth::HEADER, &self.secret)
            .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| PeerError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| PeerError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(PeerError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        Ok(Exchange {
            received: bytes.len() as u64,
            value: bytes,
            sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> PeerError {
        PeerError::Status {
            status,
            body: String::new(),
        }
    }

    #[test]
    fn only_the_peers_own_failures_mark_it_down() {
        assert_eq!(
            PeerError::Unreachable("refused".into()).blame(),
            Blame::PeerDown
        );
        assert_eq!(status(500).blame(), Blame::PeerDown);
        assert_eq!(status(502).blame(), Blame::PeerDown);
        assert_eq!(PeerError::Decode("garbage".into()).blame(), Blame::PeerDown);
        // Back-pressure and refusals: alive.
        assert_eq!(status(503).blame(), Blame::PeerAlive);
        assert_eq!(status(507).blame(), Blame::PeerAlive);
        assert_eq!(status(413).blame(), Blame::PeerAlive);
        assert_eq!(status(401).blame(), Blame::PeerAlive);
        // This node's own failures say nothing about the peer.
        assert_eq!(PeerError::Local("store".into()).blame(), Blame::Local);
    }
}
