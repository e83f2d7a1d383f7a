//! The HTTP transport to peers: postcard bodies, the cluster secret, timeouts, an optional
//! source address, and byte counts for the anti-entropy metrics.

use std::time::Duration;

use super::transport::{Exchange, PeerError, PeerTransport};
use super::wire::{self, *};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The header every peer request carries the cluster secret in.
pub const SECRET_HEADER: &str = "concord-cluster-secret";

#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: String,
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

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
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

    /// `POST /v1/peer/changes`: decoded leniently (an empty answer from an older node means
    /// everything was applied).
    async fn changes(
        &self,
        peer: &str,
        req: &ChangesV1,
    ) -> Result<Exchange<ChangesResultV1>, PeerError> {
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
            .header(SECRET_HEADER, &self.secret)
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

impl PeerTransport for PeerClient {
    async fn hello(&self, peer: &str, req: &HelloV1) -> Result<Exchange<RootV1>, PeerError> {
        self.call(peer, "/v1/peer/hello", req).await
    }

    async fn digest(
        &self,
        peer: &str,
        req: &DigestRequestV1,
    ) -> Result<Exchange<DigestV1>, PeerError> {
        self.call(peer, "/v1/peer/digest", req).await
    }

    async fn bucket_docs(
        &self,
        peer: &str,
        req: &BucketsRequestV1,
    ) -> Result<Exchange<BucketsV1>, PeerError> {
        self.call(peer, "/v1/peer/digest/docs", req).await
    }

    async fn pull(&self, peer: &str, req: &PullV1) -> Result<Exchange<PullResponseV1>, PeerError> {
        self.call(peer, "/v1/peer/pull", req).await
    }

    async fn push_changes(
        &self,
        peer: &str,
        req: &ChangesV1,
    ) -> Result<Exchange<ChangesResultV1>, PeerError> {
        self.changes(peer, req).await
    }

    async fn sync(&self, peer: &str, req: &SyncV1) -> Result<Exchange<SyncV1>, PeerError> {
        self.call(peer, "/v1/peer/sync", req).await
    }
}
