//! The HTTP transport to peers: postcard bodies, the cluster secret, timeouts, an optional
//! source address, and byte counts for the anti-entropy metrics. With `peer_tls_ca`, over TLS:
//! only that CA is trusted (no system roots), peer addresses are checked against their
//! certificates (host names and IP addresses alike), and the node presents its own certificate
//! as its client identity; [`PeerClient::reload`] takes a rotated certificate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::transport::{Exchange, PeerError, PeerTransport};
use super::wire::{self, *};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The header every peer request carries the cluster secret in.
pub const SECRET_HEADER: &str = "concord-cluster-secret";

/// TLS towards peers: the CA their certificates chain to, and this node's own certificate and
/// key, presented as its client identity.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
pub struct PeerClient {
    /// Replaced whole when the node's certificate rotates (a client's identity is fixed when it
    /// is built).
    http: Arc<RwLock<reqwest::Client>>,
    secret: String,
    bind: Option<std::net::IpAddr>,
    tls: Option<PeerTls>,
}

fn build(
    bind: Option<std::net::IpAddr>,
    tls: Option<&PeerTls>,
) -> Result<reqwest::Client, PeerError> {
    crate::tls::install_provider();
    let bad =
        |what: &str, e: &dyn std::fmt::Display| PeerError::Unreachable(format!("{what}: {e}"));
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| bad(&p.display().to_string(), &e));
    // Only the peers' CA, never the system's roots (and no failure on a machine without them).
    let mut roots = Vec::new();
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(30))
        .local_address(bind);
    if let Some(t) = tls {
        roots = reqwest::Certificate::from_pem_bundle(&read(&t.ca)?)
            .map_err(|e| bad("peer_tls_ca", &e))?;
        let mut identity = read(&t.cert)?;
        identity.push(b'\n');
        identity.extend(read(&t.key)?);
        b = b
            .identity(
                reqwest::Identity::from_pem(&identity).map_err(|e| bad("tls_cert/tls_key", &e))?,
            )
            .https_only(true);
    }
    b.tls_certs_only(roots)
        .build()
        .map_err(|e| PeerError::Unreachable(e.to_string()))
}

impl PeerClient {
    pub fn new(
        secret: Option<String>,
        bind: Option<std::net::IpAddr>,
        tls: Option<PeerTls>,
    ) -> Result<Self, PeerError> {
        Ok(PeerClient {
            http: Arc::new(RwLock::new(build(bind, tls.as_ref())?)),
            secret: secret.unwrap_or_default(),
            bind,
            tls,
        })
    }

    /// Rebuilds the client from the certificate files (after a rotation); on failure the client
    /// in use stays.
    pub fn reload(&self) -> Result<(), PeerError> {
        let fresh = build(self.bind, self.tls.as_ref())?;
        *self.http.write() = fresh;
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
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
        let http = self.http.read().clone();
        let resp = http
            .post(format!("{}://{peer}{path}", self.scheme()))
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
