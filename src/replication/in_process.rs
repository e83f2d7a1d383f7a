//! A transport that reaches peers in the same process: each call goes through the same wire
//! encoding as HTTP (postcard both ways) and the same responder (`serve`, `local`) as the peer
//! endpoints, without sockets. Tests drive the replication core with it (a digest walk between
//! two stores, push lanes) and benchmarks measure the core without HTTP.
//!
//! Errors look as they would over HTTP: a bad request is a 400, a full disk a 507, any other
//! store failure a 500, and an address nobody registered is unreachable. A peer can be cut off
//! and reconnected, to model a partition.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::local;
use super::replica::Replica;
use super::serve::{self, ServeError};
use super::transport::{Exchange, PeerError, PeerTransport};
use super::wire::*;
use crate::store::StoreError;

/// Replicas by address, shared by every node's transport in one test.
#[derive(Clone, Default)]
pub struct InProcess {
    inner: Arc<RwLock<Network>>,
}

#[derive(Default)]
struct Network {
    replicas: HashMap<String, Arc<Replica>>,
    cut: HashSet<String>,
}

fn status(e: &ServeError) -> u16 {
    match e {
        ServeError::BadRequest(_) => 400,
        ServeError::Store(s) if s.is_no_space() => 507,
        ServeError::Store(_) => 500,
    }
}

/// A request as the sender puts it on the wire.
fn send_bytes<Req: Serialize>(req: &Req) -> Result<Vec<u8>, PeerError> {
    postcard::to_stdvec(req).map_err(|e| PeerError::Encode(e.to_string()))
}

/// A request as the responder reads it: bytes it cannot read are the sender's fault (400).
fn received<Req: DeserializeOwned>(body: &[u8]) -> Result<Req, PeerError> {
    postcard::from_bytes(body).map_err(|e| PeerError::Status {
        status: 400,
        body: e.to_string(),
    })
}

/// An answer as the sender reads it, with the bytes counted both ways.
fn answered<Resp: DeserializeOwned>(
    sent: usize,
    bytes: &[u8],
) -> Result<Exchange<Resp>, PeerError> {
    let value = postcard::from_bytes(bytes).map_err(|e| PeerError::Decode(e.to_string()))?;
    Ok(Exchange {
        value,
        sent: sent as u64,
        received: bytes.len() as u64,
    })
}

/// Postcard there and back, counting bytes as the HTTP transport does.
fn wire<Req: Serialize + DeserializeOwned, Resp: DeserializeOwned>(
    req: &Req,
    answer: impl FnOnce(Req) -> Result<Vec<u8>, PeerError>,
) -> Result<Exchange<Resp>, PeerError> {
    let body = send_bytes(req)?;
    let bytes = answer(received(&body)?)?;
    answered(body.len(), &bytes)
}

fn encode<T: Serialize>(v: Result<T, ServeError>) -> Result<Vec<u8>, PeerError> {
    let v = v.map_err(|e| PeerError::Status {
        status: status(&e),
        body: e.to_string(),
    })?;
    postcard::to_stdvec(&v).map_err(|e| PeerError::Status {
        status: 500,
        body: e.to_string(),
    })
}

impl InProcess {
    /// Makes `replica` reachable at `addr`.
    pub fn register(&self, addr: &str, replica: Arc<Replica>) {
        self.inner
            .write()
            .replicas
            .insert(addr.to_string(), replica);
    }

    /// Cuts `addr` off (`true`) or reconnects it: calls to it are unreachable meanwhile.
    pub fn set_cut(&self, addr: &str, cut: bool) {
        let mut n = self.inner.write();
        if cut {
            n.cut.insert(addr.to_string());
        } else {
            n.cut.remove(addr);
        }
    }

    fn replica(&self, peer: &str) -> Result<Arc<Replica>, PeerError> {
        let n = self.inner.read();
        if n.cut.contains(peer) {
            return Err(PeerError::Unreachable(format!("{peer} is cut off")));
        }
        n.replicas
            .get(peer)
            .cloned()
            .ok_or_else(|| PeerError::Unreachable(format!("no replica at {peer}")))
    }

    /// Runs a blocking responder the way the HTTP endpoint does: off the async workers.
    async fn blocking<Req, Resp>(
        &self,
        peer: &str,
        req: &Req,
        f: fn(&Replica, Req) -> Result<Resp, ServeError>,
    ) -> Result<Exchange<Resp>, PeerError>
    where
        Req: Serialize + DeserializeOwned + Send + 'static,
        Resp: Serialize + DeserializeOwned + Send + 'static,
    {
        let r = self.replica(peer)?;
        let body = send_bytes(req)?;
        let sent = body.len();
        let bytes = tokio::task::spawn_blocking(move || encode(f(&r, received(&body)?)))
            .await
            .map_err(|e| PeerError::Status {
                status: 500,
                body: e.to_string(),
            })??;
        answered(sent, &bytes)
    }
}

impl PeerTransport for InProcess {
    async fn hello(&self, peer: &str, req: &HelloV1) -> Result<Exchange<RootV1>, PeerError> {
        let r = self.replica(peer)?;
        wire(req, |req| encode(Ok(serve::hello(&r, req))))
    }

    async fn digest(
        &self,
        peer: &str,
        req: &DigestRequestV1,
    ) -> Result<Exchange<DigestV1>, PeerError> {
        let r = self.replica(peer)?;
        wire(req, |req| encode(serve::digest(&r, req)))
    }

    async fn bucket_docs(
        &self,
        peer: &str,
        req: &BucketsRequestV1,
    ) -> Result<Exchange<BucketsV1>, PeerError> {
        self.blocking(peer, req, serve::bucket_docs).await
    }

    async fn pull(&self, peer: &str, req: &PullV1) -> Result<Exchange<PullResponseV1>, PeerError> {
        self.blocking(peer, req, serve::pull).await
    }

    async fn push_changes(
        &self,
        peer: &str,
        req: &ChangesV1,
    ) -> Result<Exchange<ChangesResultV1>, PeerError> {
        let r = self.replica(peer)?;
        let body = send_bytes(req)?;
        let decoded: ChangesV1 = received(&body)?;
        let result = local::apply_changes(&r, decoded.docs)
            .await
            .map_err(|e: StoreError| ServeError::Store(e));
        answered(body.len(), &encode(result)?)
    }

    async fn sync(&self, peer: &str, req: &SyncV1) -> Result<Exchange<SyncV1>, PeerError> {
        self.blocking(peer, req, serve::sync).await
    }
}
