//! The HTTP client for peer requests: postcard bodies, the cluster secret, timeouts, an optional
//! source address, and byte counts for the anti-entropy metrics.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use super::{auth, wire};

impl PeerError {
    /// The peer is reachable and answered, but refused (4xx): not a liveness failure.
    pub fn is_refusal(&self) -> bool {
        matches!(self, PeerError::Status { status, .. } if (400..500).contains(status))
    }
}

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
        let value = postcard::from_bytes(&bytes).map_err(|e| PeerError::Decode(e.to_string()))?;
        Ok(Exchange {
            value,
            sent,
            received: bytes.len() as u64,
        })
    }
}
