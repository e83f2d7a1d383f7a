//! The automerge-repo network protocol (version "1") over WebSocket, so stock
//! `@automerge/automerge-repo` clients with `@automerge/automerge-repo-network-websocket` use a
//! Concord node as their sync server.
//!
//! Frames are binary CBOR maps. A client opens with `join`; the node answers `peer` (or `error`
//! and closes for an unsupported version). Then, per document: `request` (a client that lacks the
//! document; answered with `sync`, or `doc-unavailable` when the node lacks it too), `sync`
//! (Automerge sync messages), and `ephemeral` (relayed to the other connections on that document,
//! deduplicated by sender, session and count). Documents live in the configured automerge
//! collection under their DocumentId, so they are ordinary Concord documents: readable and
//! writable over REST, replicated, in the changes feed; and every change to a document a
//! connection has open, whatever its source, is sent to that connection at once.
//!
//! Bad input (malformed CBOR, unknown document ids, garbage sync messages, messages before
//! `join`) gets an `error` frame and the connection is closed; nothing else is affected.
//! Unknown message types are ignored, as the protocol asks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use automerge::sync::SyncDoc;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use ciborium::Value;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::problem::ApiError;
use crate::codec::frame::{self, encode, map, text, Frame};
use crate::server::Node;
use crate::store::{DocKey, Origin, StoreError};

const PROTOCOL_VERSION: &str = "1";

/// Live connections, for relaying ephemeral messages and replacing a peer that reconnects.
pub struct Hub {
    next_id: AtomicU64,
    /// Open sockets (joined or not).
    open: std::sync::atomic::AtomicUsize,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    /// Highest `count` seen per (sender, session): ephemeral messages loop without it. Bounded
    /// and expiring, since clients choose the keys.
    seen: moka::sync::Cache<(String, String), u64>,
}

struct ConnEntry {
    peer_id: String,
    docs: HashSet<String>,
    tx: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            next_id: AtomicU64::new(0),
            open: Default::default(),
            conns: Mutex::new(HashMap::new()),
            seen: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
        }
    }
}

impl Hub {
    pub fn connections(&self) -> usize {
        self.conns.lock().len()
    }
}

/// `GET /v1/automerge-repo`: upgrades to the automerge-repo WebSocket protocol.
pub async fn upgrade(
    State(node): State<Arc<Node>>,
    axum::Extension(who): axum::Extension<crate::api::auth::Principal>,
    ws: WebSocketUpgrade,
) -> Response {
    if node.ws_hub.open.load(Ordering::Relaxed) >= node.config.max_websockets {
        use axum::response::IntoResponse;
        return ApiError::Overloaded(format!(
            "{} WebSocket connections are open, the configured limit",
            node.config.max_websockets
        ))
        .into_response();
    }
    let limit = node.config.max_body_bytes;
    let may_write = who.may_write(&node.config.automerge_collection);
    let owner = who.name.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(node, socket, may_write, owner))
}

/// Why a connection must end with an `error` frame.
struct ProtocolError(String);

impl From<StoreError> for ProtocolError {
    fn from(e: StoreError) -> Self {
        ProtocolError(e.to_string())
    }
}

impl From<ApiError> for ProtocolError {
    fn from(e: ApiError) -> Self {
        ProtocolError(e.to_string())
    }
}

struct Conn {
    node: Arc<Node>,
    id: u64,
    server_peer_id: String,
    peer_id: Option<String>,
    /// Where this client's sync states persist (clients with a storage id that are not ephemeral).
    storage_key: Option<String>,
    /// The principal (token name) that owns the persisted states.
    owner: String,
    /// False for read-only tokens: such clients sync down but may not push changes.
    may_write: bool,
    states: HashMap<String, automerge::sync::State>,
    /// Documents the client asked for that the node did not have: sent when they arrive.
    wanted: HashSet<String>,
}

async fn serve(node: Arc<Node>, mut socket: WebSocket, may_write: bool, owner: String) {
    let id = node.ws_hub.next_id.fetch_add(1, Ordering::Relaxed);
    node.ws_hub.open.fetch_add(1, Ordering::Relaxed);
    // Unregisters the connection however the task ends (a panic included).
    let _registration = Registration {
        node: node.clone(),
        id,
    };
    let (tx, mut relay_rx) = mpsc::channel::<Vec<u8>>(1024);
    let cancel = CancellationToken::new();
    let mut commits = node.store.subscribe_commits();
    let mut conn = Conn {
        server_peer_id: format!("concord-{}", node.store.node_id()),
        node: node.clone(),
        id,
        peer_id: None,
        storage_key: None,
        owner,
        may_write,
        states: HashMap::new(),
        wanted: HashSet::new(),
    };
    loop {
        let outgoing: Result<Vec<Vec<u8>>, ProtocolError> = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            _ = cancel.cancelled() => break,
            frame = socket.recv() => match frame {
                Some(Ok(Message::Binary(b))) => conn.handle(&b, &tx, &cancel).await,
                Some(Ok(Message::Text(_))) => Err(ProtocolError("frames must be binary CBOR".into())),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Vec::new()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            ev = commits.recv() => match ev {
                Ok(ev) => conn.on_commit(&ev.key).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => conn.resync_all().await,
                Err(_) => break,
            },
            relayed = relay_rx.recv() => Ok(relayed.into_iter().collect()),
        };
        match outgoing {
            Ok(frames) => {
                let mut gone = false;
                for f in frames {
                    if socket.send(Message::Binary(f.into())).await.is_err() {
                        gone = true;
                        break;
                    }
                }
                if gone {
                    break;
                }
            }
            Err(ProtocolError(message)) => {
                tracing::info!(conn = id, error = %message, "automerge-repo protocol error; closing");
                let mut pairs = vec![("type", text("error")), ("message", text(&message))];
                pairs.push(("senderId", text(&conn.server_peer_id)));
                if let Some(p) = &conn.peer_id {
                    pairs.push(("targetId", text(p)));
                }
                let _ = socket
                    .send(Message::Binary(encode(&map(pairs)).into()))
                    .await;
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
}

struct Registration {
    node: Arc<Node>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.node.ws_hub.conns.lock().remove(&self.id);
        self.node.ws_hub.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    fn key(&self, document_id: &str) -> Result<DocKey, ProtocolError> {
        // Decoding checked the id already.
        DocKey::new(&self.node.config.automerge_collection, document_id)
            .map_err(ProtocolError::from)
    }

    async fn handle(
        &mut self,
        frame: &[u8],
        tx: &mpsc::Sender<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let frame = frame::decode(frame).map_err(|e| ProtocolError(e.0))?;
        if self.peer_id.is_none() && !matches!(frame, Frame::Join(_)) {
            return Err(ProtocolError(format!("`{}` before `join`", frame.kind())));
        }
        match frame {
            Frame::Join(j) => self.join(j, tx, cancel),
            Frame::Sync {
                request,
                document_id,
                message,
            } => self.sync(document_id, message, request).await,
            Frame::Ephemeral(e) => {
                self.relay(e);
                Ok(Vec::new())
            }
            Frame::Other { .. } => Ok(Vec::new()),
        }
    }

    fn join(
        &mut self,
        join: frame::Join,
        tx: &mpsc::Sender<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        // A client that lists no versions speaks the first one.
        let versions = join.versions;
        if !versions.is_empty() && !versions.iter().any(|v| v == PROTOCOL_VERSION) {
            return Err(ProtocolError(format!(
                "unsupported protocol version(s) {versions:?}: this server speaks \"{PROTOCOL_VERSION}\""
            )));
        }
        let peer = join.sender_id;
        self.storage_key = match (join.ephemeral, join.storage_id) {
            (false, Some(s)) if !s.is_empty() && s.len() <= 100 => {
                Some(format!("repo:{}", s.replace('\0', "")))
            }
            _ => None,
        };
        // A peer that reconnects replaces its old connection.
        {
            let mut conns = self.node.ws_hub.conns.lock();
            for (id, c) in conns.iter() {
                if c.peer_id == peer && *id != self.id {
                    c.cancel.cancel();
                }
            }
            conns.insert(
                self.id,
                ConnEntry {
                    peer_id: peer.clone(),
                    docs: HashSet::new(),
                    tx: tx.clone(),
                    cancel: cancel.clone(),
                },
            );
        }
        self.peer_id = Some(peer.clone());
        let reply = map(vec![
            ("type", text("peer")),
            ("senderId", text(&self.server_peer_id)),
            ("targetId", text(&peer)),
            ("selectedProtocolVersion", text(PROTOCOL_VERSION)),
            (
                "peerMetadata",
                map(vec![
                    ("storageId", text(&self.node.store.node_id().to_string())),
                    ("isEphemeral", Value::Bool(false)),
                ]),
            ),
        ]);
        Ok(vec![encode(&reply)])
    }

    fn subscribe(&self, document_id: &str) {
        if let Some(c) = self.node.ws_hub.conns.lock().get_mut(&self.id) {
            c.docs.insert(document_id.to_string());
        }
    }

    fn sync_frame(&self, document_id: &str, data: Vec<u8>) -> Vec<u8> {
        encode(&map(vec![
            ("type", text("sync")),
            ("senderId", text(&self.server_peer_id)),
            ("targetId", text(self.peer_id.as_deref().unwrap_or(""))),
            ("documentId", text(document_id)),
            ("data", Value::Bytes(data)),
        ]))
    }

    /// This connection's sync state for a document (restored from disk for clients with storage).
    fn take_state(
        &mut self,
        document_id: &str,
        key: &DocKey,
    ) -> Result<automerge::sync::State, ProtocolError> {
        if let Some(s) = self.states.remove(document_id) {
            return Ok(s);
        }
        if let Some(client) = &self.storage_key {
            if let Some(bytes) = self.node.store.sync_state(&self.owner, client, key)? {
                if let Ok(s) = automerge::sync::State::decode(&bytes) {
                    return Ok(s);
                }
            }
        }
        Ok(automerge::sync::State::new())
    }

    async fn sync(
        &mut self,
        document_id: String,
        msg: automerge::sync::Message,
        request: bool,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let key = self.key(&document_id)?;
        if !self.may_write && !msg.changes.is_empty() {
            return Err(ProtocolError(
                "this token is read-only: changes are refused".into(),
            ));
        }
        self.subscribe(&document_id);
        if request {
            let k = key.clone();
            let node = self.node.clone();
            let exists = self
                .node
                .blocking(move || Ok(node.store.meta(&k)?.is_some_and(|m| !m.heads.is_empty())))
                .await?;
            if !exists && msg.heads.is_empty() {
                self.wanted.insert(document_id.clone());
                let frame = encode(&map(vec![
                    ("type", text("doc-unavailable")),
                    ("senderId", text(&self.server_peer_id)),
                    ("targetId", text(self.peer_id.as_deref().unwrap_or(""))),
                    ("documentId", text(&document_id)),
                ]));
                return Ok(vec![frame]);
            }
        }
        let mut state = self.take_state(&document_id, &key)?;
        let node = self.node.clone();
        let storage = self.storage_key.clone();
        let owner = self.owner.clone();
        let (state, reply) = node
            .clone()
            .blocking(move || {
                let reply = super::step(&node.store, Origin::Local, &key, &mut state, msg)?
                    .map(|m| m.encode());
                if let Some(client) = &storage {
                    crate::sync::keep_state(&node, &owner, client, &key, &state)?;
                }
                Ok((state, reply))
            })
            .await?;
        self.states.insert(document_id.clone(), state);
        Ok(reply
            .map(|r| self.sync_frame(&document_id, r))
            .into_iter()
            .collect())
    }

    /// After any commit: a document this connection has open (or asked for) gets a sync message.
    async fn on_commit(&mut self, key: &DocKey) -> Result<Vec<Vec<u8>>, ProtocolError> {
        if self.peer_id.is_none() || key.collection() != self.node.config.automerge_collection {
            return Ok(Vec::new());
        }
        let document_id = key.id().to_string();
        if !self.states.contains_key(&document_id) && !self.wanted.remove(&document_id) {
            return Ok(Vec::new());
        }
        self.generate(&document_id, key.clone()).await
    }

    async fn generate(
        &mut self,
        document_id: &str,
        key: DocKey,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut state = self.take_state(document_id, &key)?;
        let node = self.node.clone();
        let (state, msg) = node
            .clone()
            .blocking(move || {
                let msg = node
                    .store
                    .read(&key, |doc, _| doc.generate_sync_message(&mut state))?;
                Ok((state, msg.flatten().map(|m| m.encode())))
            })
            .await?;
        self.states.insert(document_id.to_string(), state);
        Ok(msg
            .map(|m| self.sync_frame(document_id, m))
            .into_iter()
            .collect())
    }

    /// After missing commit events: offer every open document again.
    async fn resync_all(&mut self) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let docs: Vec<String> = self.states.keys().cloned().collect();
        let mut out = Vec::new();
        for d in docs {
            let key = self.key(&d)?;
            out.extend(self.generate(&d, key).await?);
        }
        Ok(out)
    }

    /// Relays an ephemeral message to the other connections on its document.
    fn relay(&self, e: frame::Ephemeral) {
        let seen = &self.node.ws_hub.seen;
        let key = (e.sender_id, e.session_id);
        if seen.get(&key).is_some_and(|last| e.count <= last) {
            return;
        }
        seen.insert(key, e.count);
        let document_id = e.document_id;
        self.subscribe(&document_id);
        let conns = self.node.ws_hub.conns.lock();
        for (id, c) in conns.iter() {
            if *id == self.id || !c.docs.contains(&document_id) {
                continue;
            }
            let mut pairs: Vec<(Value, Value)> = e
                .fields
                .iter()
                .filter(|(k, _)| k.as_text() != Some("targetId"))
                .cloned()
                .collect();
            pairs.push((text("targetId"), text(&c.peer_id)));
            let _ = c.tx.try_send(encode(&Value::Map(pairs)));
        }
    }
}
