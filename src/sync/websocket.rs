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
//!
//! Limits: at most `max_websockets` connections (a slot is reserved before the upgrade, so
//! concurrent upgrades cannot overshoot), and at most `max_ws_docs_per_connection` documents open
//! on one connection (its per-document state would otherwise grow with every id a client names).
//! A `senderId` belongs to the principal that joined with it: only the same principal (the same
//! token; with no tokens configured, every client is one principal) may replace that connection.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Open or upgrading sockets (joined or not): slots reserved by [`WsSlot`].
    open: AtomicUsize,
    /// Documents open over all connections (the sum of their `docs` sets), for metrics and tests.
    tracked_docs: AtomicUsize,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    /// Highest `count` seen per (sender, session): ephemeral messages loop without it. Bounded
    /// and expiring, since clients choose the keys.
    seen: moka::sync::Cache<(String, String), u64>,
}

struct ConnEntry {
    peer_id: String,
    /// The principal (token name) that joined: only it may take over this `peer_id`.
    principal: String,
    /// Documents this connection has open (synced, asked for, or sent ephemeral messages on).
    docs: HashSet<String>,
    tx: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            next_id: AtomicU64::new(0),
            open: Default::default(),
            tracked_docs: Default::default(),
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

    /// Sockets open or being upgraded.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Documents open over all connections.
    pub fn tracked_docs(&self) -> usize {
        self.tracked_docs.load(Ordering::Relaxed)
    }

    /// Opens `document_id` on connection `conn`, refusing a new one beyond `cap`.
    ///
    /// Why refuse and close rather than evict the least recently used document: automerge-repo
    /// (protocol 1) has no message to close a document, so the client still believes an evicted
    /// document is live. It would silently stop receiving changes made elsewhere, and a sync state
    /// rebuilt from scratch on the node's side while the client keeps its own can stall a sync
    /// until it reconnects. An `error` frame and a close are visible; the client reconnects and
    /// opens what it needs.
    fn open_doc(&self, conn: u64, document_id: &str, cap: usize) -> Result<(), ProtocolError> {
        let mut conns = self.conns.lock();
        let Some(c) = conns.get_mut(&conn) else {
            return Ok(());
        };
        if c.docs.contains(document_id) {
            return Ok(());
        }
        if c.docs.len() >= cap {
            return Err(ProtocolError(format!(
                "this connection has {cap} documents open, the limit \
                 (max_ws_docs_per_connection): open more on another connection"
            )));
        }
        c.docs.insert(document_id.to_string());
        self.tracked_docs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A reserved WebSocket slot, taken before the upgrade so concurrent upgrades cannot exceed
/// `max_websockets`. Released when dropped: when the upgrade fails (axum drops the callback that
/// owns it) or when the connection ends.
struct WsSlot {
    node: Arc<Node>,
}

impl WsSlot {
    fn reserve(node: &Arc<Node>) -> Option<WsSlot> {
        let max = node.config.max_websockets;
        node.ws_hub
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| WsSlot { node: node.clone() })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.node.ws_hub.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /v1/automerge-repo`: upgrades to the automerge-repo WebSocket protocol.
pub async fn upgrade(
    State(node): State<Arc<Node>>,
    axum::Extension(who): axum::Extension<crate::api::auth::Principal>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(slot) = WsSlot::reserve(&node) else {
        use axum::response::IntoResponse;
        return ApiError::Overloaded(format!(
            "{} WebSocket connections are open, the configured limit",
            node.config.max_websockets
        ))
        .into_response();
    };
    let limit = node.config.max_body_bytes;
    let may_write = who.may_write(&node.config.automerge_collection);
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(node, socket, slot, who.name, may_write))
}

/// Why a connection must end with an `error` frame.
#[derive(Debug)]
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
    /// The principal (token name) this connection authenticated as.
    principal: String,
    /// False for read-only tokens: such clients sync down but may not push changes.
    may_write: bool,
    states: HashMap<String, automerge::sync::State>,
    /// Documents the client asked for that the node did not have: sent when they arrive.
    wanted: HashSet<String>,
}

async fn serve(
    node: Arc<Node>,
    mut socket: WebSocket,
    slot: WsSlot,
    principal: String,
    may_write: bool,
) {
    let id = node.ws_hub.next_id.fetch_add(1, Ordering::Relaxed);
    // Unregisters the connection however the task ends (a panic included).
    let _registration = Registration {
        _slot: slot,
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
        principal,
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
                close_handshake(&mut socket).await;
                break;
            }
        }
    }
}

/// Longest wait for a client to answer our close frame.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends a close frame and reads (discarding) until the client's close, for at most
/// [`CLOSE_GRACE`]. Dropping the socket at once would close the TCP connection with the client's
/// frames still unread, which makes the kernel send a reset; the client may then lose the frames
/// we sent last, the `error` frame saying why included.
async fn close_handshake(socket: &mut WebSocket) {
    if socket.send(Message::Close(None)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

struct Registration {
    _slot: WsSlot,
    node: Arc<Node>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let hub = &self.node.ws_hub;
        if let Some(c) = hub.conns.lock().remove(&self.id) {
            hub.tracked_docs.fetch_sub(c.docs.len(), Ordering::Relaxed);
        }
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
                self.relay(e)?;
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
        // A peer that reconnects replaces its old connection, but only its own: another
        // principal naming a live connection's `senderId` is refused, so one user cannot kick
        // another off. With no tokens configured every client is the same principal.
        {
            let mut conns = self.node.ws_hub.conns.lock();
            let others = || {
                conns
                    .iter()
                    .filter(|(id, c)| c.peer_id == peer && **id != self.id)
            };
            if others().any(|(_, c)| c.principal != self.principal) {
                return Err(ProtocolError(format!(
                    "senderId `{peer}` is in use by another client's connection"
                )));
            }
            for (_, c) in others() {
                c.cancel.cancel();
            }
            // A second `join` on this connection keeps the documents it has open.
            let entry = conns.entry(self.id).or_insert_with(|| ConnEntry {
                peer_id: String::new(),
                principal: String::new(),
                docs: HashSet::new(),
                tx: tx.clone(),
                cancel: cancel.clone(),
            });
            entry.peer_id = peer.clone();
            entry.principal = self.principal.clone();
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

    /// Opens a document on this connection (within `max_ws_docs_per_connection`).
    fn subscribe(&self, document_id: &str) -> Result<(), ProtocolError> {
        self.node.ws_hub.open_doc(
            self.id,
            document_id,
            self.node.config.max_ws_docs_per_connection,
        )
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
            if let Some(bytes) = self.node.store.sync_state(&self.principal, client, key)? {
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
        self.subscribe(&document_id)?;
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
        let owner = self.principal.clone();
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
    fn relay(&self, e: frame::Ephemeral) -> Result<(), ProtocolError> {
        let seen = &self.node.ws_hub.seen;
        let key = (e.sender_id, e.session_id);
        if seen.get(&key).is_some_and(|last| e.count <= last) {
            return Ok(());
        }
        seen.insert(key, e.count);
        let document_id = e.document_id;
        self.subscribe(&document_id)?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn node(tweak: impl FnOnce(&mut crate::Config)) -> (tempfile::TempDir, Arc<Node>) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        tweak(&mut config);
        let node = crate::server::open_node(config, "127.0.0.1:1".into())
            .await
            .unwrap();
        (dir, node)
    }

    /// The slot is taken when the upgrade is accepted, not when the socket starts serving: an
    /// upgrade still in flight already counts, so concurrent upgrades cannot overshoot.
    #[tokio::test]
    async fn slots_are_reserved_before_the_upgrade() {
        let (_dir, node) = node(|c| c.max_websockets = 2).await;
        let a = WsSlot::reserve(&node).expect("first slot");
        let b = WsSlot::reserve(&node).expect("second slot");
        assert_eq!(node.ws_hub.open(), 2);
        assert!(WsSlot::reserve(&node).is_none(), "no third slot");
        drop(a);
        assert_eq!(
            node.ws_hub.open(),
            1,
            "a failed upgrade gives its slot back"
        );
        let _c = WsSlot::reserve(&node).expect("the freed slot");
        drop(b);
    }

    #[tokio::test]
    async fn documents_per_connection_are_capped_and_released() {
        let (_dir, node) = node(|c| c.max_ws_docs_per_connection = 2).await;
        let (tx, _rx) = mpsc::channel(1);
        node.ws_hub.conns.lock().insert(
            7,
            ConnEntry {
                peer_id: "p".into(),
                principal: "anonymous".into(),
                docs: HashSet::new(),
                tx,
                cancel: CancellationToken::new(),
            },
        );
        let hub = &node.ws_hub;
        hub.open_doc(7, "a", 2).unwrap();
        hub.open_doc(7, "b", 2).unwrap();
        hub.open_doc(7, "a", 2)
            .expect("an open document is no new one");
        assert!(hub.open_doc(7, "c", 2).is_err());
        assert_eq!(hub.tracked_docs(), 2);
        let slot = WsSlot::reserve(&node).unwrap();
        drop(Registration {
            _slot: slot,
            node: node.clone(),
            id: 7,
        });
        assert_eq!(hub.tracked_docs(), 0);
        assert_eq!(hub.open(), 0);
    }
}
