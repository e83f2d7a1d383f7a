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
use std::sync::Arc;

use automerge::sync::SyncDoc;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use ciborium::Value;
use tokio_util::sync::CancellationToken;

use crate::access::Grant;
use crate::blocking::WorkerFailed;
use crate::codec::frame::{self, encode, map, text, Frame};
use crate::http::auth::Principal;
use crate::http::problem::ApiError;
use crate::node::ws_hub::{HubError, WsSlot};
use crate::node::Node;
use crate::store::{DocKey, Origin, StoreError};
use crate::sync::ScopedStepError;

const PROTOCOL_VERSION: &str = "1";

/// `GET /v1/automerge-repo`: upgrades to the automerge-repo WebSocket protocol.
pub async fn upgrade(
    State(node): State<Arc<Node>>,
    axum::Extension(who): axum::Extension<Principal>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(slot) = WsSlot::reserve(&node.ws_hub, node.config.max_websockets) else {
        use axum::response::IntoResponse;
        return ApiError::Overloaded(format!(
            "{} WebSocket connections are open, the configured limit",
            node.config.max_websockets
        ))
        .into_response();
    };
    let limit = node.config.max_body_bytes;
    let collection = &node.config.automerge_collection;
    let may_write = who.may_write(collection);
    let scope = (!who.sees_all_of(collection)).then(|| (*who.0).clone());
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(node, socket, slot, (*who.0).clone(), may_write, scope))
}

/// How much a WebSocket read asks the socket for. tungstenite zero-fills that much of its buffer
/// before every read, even one that finds nothing: at its default of 128 KiB the memset was 5% of
/// the node's CPU in the client-sync benchmark, whose messages are a few hundred bytes. A larger
/// message takes several reads.
const READ_BUFFER_BYTES: usize = 16 << 10;

/// Why a connection must end with an `error` frame.
#[derive(Debug)]
struct ProtocolError(String);

impl From<StoreError> for ProtocolError {
    fn from(e: StoreError) -> Self {
        ProtocolError(e.to_string())
    }
}

impl From<WorkerFailed> for ProtocolError {
    fn from(e: WorkerFailed) -> Self {
        ProtocolError(e.to_string())
    }
}

impl From<HubError> for ProtocolError {
    fn from(e: HubError) -> Self {
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
    /// The token's grant when its scopes narrow the automerge collection: documents outside
    /// them do not exist for this client (`doc-unavailable`), changes that would take one out are
    /// refused, and a document that leaves the scope stops being sent.
    scope: Option<Grant>,
    states: HashMap<String, automerge::sync::State>,
    /// Documents the client asked for that the node did not have: sent when they arrive.
    wanted: HashSet<String>,
}

async fn serve(
    node: Arc<Node>,
    mut socket: WebSocket,
    slot: WsSlot,
    grant: Grant,
    may_write: bool,
    scope: Option<Grant>,
) {
    let principal = grant.name.clone();
    // The connection ends with the token that opened it (with an `error` frame saying so).
    let expired = crate::http::auth::expired(&grant);
    tokio::pin!(expired);
    // Unregisters the connection however the task ends (a panic included).
    let registration = node.ws_hub.register(slot);
    let id = registration.id();
    let (tx, mut relay_rx) =
        crate::node::ws_hub::relay_queue(crate::node::ws_hub::RELAY_QUEUE_BYTES);
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
        scope,
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
            _ = &mut expired => Err(ProtocolError(
                "the token expired: reconnect with a fresh one".into(),
            )),
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

/// What one step of a `sync` or `request` message came to, decided in the blocking pool.
enum Stepped {
    /// Stepped: the state to keep and the reply to send, if any.
    Replied(automerge::sync::State, Option<Vec<u8>>),
    /// A `request` for a document this node does not have (the state, untouched, to put back).
    Absent(automerge::sync::State),
    /// Outside this client's scope: answered as if absent.
    Hidden,
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
        tx: &crate::node::ws_hub::RelaySender,
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
                self.relay(e).await?;
                Ok(Vec::new())
            }
            Frame::Other { .. } => Ok(Vec::new()),
        }
    }

    fn join(
        &mut self,
        join: frame::Join,
        tx: &crate::node::ws_hub::RelaySender,
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
        // With no tokens configured every client is the same principal.
        self.node
            .ws_hub
            .join(self.id, &peer, &self.principal, tx, cancel)?;
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

    /// Whether this (narrowed) client sees the document: it does not exist yet, or it is live
    /// and in scope now.
    async fn visible(&self, key: &DocKey) -> Result<bool, ProtocolError> {
        let Some(who) = self.scope.clone() else {
            return Ok(true);
        };
        let (node, k) = (self.node.clone(), key.clone());
        self.node
            .blocking::<_, ProtocolError>(move || {
                let seen = node.store.read(&k, |doc, meta| {
                    meta.heads.is_empty() || who.sees_doc(k.collection(), k.id(), doc)
                })?;
                Ok(seen.unwrap_or(true))
            })
            .await
    }

    fn unavailable(&self, document_id: &str) -> Vec<u8> {
        encode(&map(vec![
            ("type", text("doc-unavailable")),
            ("senderId", text(&self.server_peer_id)),
            ("targetId", text(self.peer_id.as_deref().unwrap_or(""))),
            ("documentId", text(document_id)),
        ]))
    }

    /// Opens a document on this connection (within `max_ws_docs_per_connection`).
    fn subscribe(&self, document_id: &str) -> Result<(), ProtocolError> {
        let cap = self.node.config.max_ws_docs_per_connection;
        Ok(self.node.ws_hub.open_doc(self.id, document_id, cap)?)
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
        // Refused before anything is applied when this connection has too many documents open.
        let cap = self.node.config.max_ws_docs_per_connection;
        self.node.ws_hub.may_open(self.id, &document_id, cap)?;
        // A state kept open on this connection goes back if the document turns out absent.
        let was_open = self.states.contains_key(&document_id);
        let mut state = self.take_state(&document_id, &key)?;
        let node = self.node.clone();
        let storage = self.storage_key.clone();
        let owner = self.principal.clone();
        let scope = self.scope.clone();
        // One hand-off to the blocking pool per message: a `request` checks that the document
        // exists in the same closure that steps it.
        let stepped = node
            .clone()
            .blocking::<_, ProtocolError>(move || {
                if request
                    && msg.heads.is_empty()
                    && node.store.meta(&key)?.is_none_or(|m| m.heads.is_empty())
                {
                    return Ok(Stepped::Absent(state));
                }
                let reply = match &scope {
                    None => crate::sync::step(&node.store, Origin::Local, &key, &mut state, msg)?,
                    // Judged under the document's lock, on the document the step reads anyway.
                    Some(who) => {
                        match crate::sync::step_scoped(&node.store, &key, &mut state, msg, who) {
                            Ok(reply) => reply,
                            Err(ScopedStepError::Hidden(_)) => return Ok(Stepped::Hidden),
                            Err(e) => return Err(ProtocolError(e.to_string())),
                        }
                    }
                }
                .map(|m| m.encode());
                if let Some(client) = &storage {
                    let quota = node.config.max_sync_states_per_principal;
                    let states = crate::sync::ClientStates::new(&node.store, &node.metrics, quota);
                    states.keep(&owner, client, &key, &state)?;
                }
                Ok(Stepped::Replied(state, reply))
            })
            .await?;
        let (state, reply) = match stepped {
            Stepped::Replied(state, reply) => (state, reply),
            Stepped::Absent(state) => {
                if was_open {
                    self.states.insert(document_id.clone(), state);
                }
                if self.scope.is_none() {
                    self.subscribe(&document_id)?;
                    self.wanted.insert(document_id.clone());
                } else if self.wanted.len() < cap {
                    // Treated exactly as a hidden document below: not opened (a document made
                    // later under this id may be hidden from this client), only wanted.
                    self.wanted.insert(document_id.clone());
                }
                return Ok(vec![self.unavailable(&document_id)]);
            }
            Stepped::Hidden => {
                // Outside this client's scope: exactly what a document that does not exist gets, and
                // it is not open here (its ephemeral messages are not relayed; one open from before it
                // left the scope is closed). Sent if it comes into scope (shared with this user
                // later), like a document that arrives after it was asked for.
                self.node.ws_hub.close_doc(self.id, &document_id);
                self.states.remove(&document_id);
                if self.wanted.len() < cap {
                    self.wanted.insert(document_id.clone());
                }
                return Ok(vec![self.unavailable(&document_id)]);
            }
        };
        // Opened only once judged: a commit meanwhile reaches it through `on_commit` (which
        // follows `states`), and nothing of a hidden document is ever relayed here.
        self.subscribe(&document_id)?;
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
        if !self.states.contains_key(&document_id) && !self.wanted.contains(&document_id) {
            return Ok(Vec::new());
        }
        let out = self.generate(&document_id, key.clone()).await?;
        // Served now (always, unless outside a narrowed client's scope: then still wanted).
        if self.states.contains_key(&document_id) {
            self.wanted.remove(&document_id);
        }
        Ok(out)
    }

    async fn generate(
        &mut self,
        document_id: &str,
        key: DocKey,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut state = self.take_state(document_id, &key)?;
        let node = self.node.clone();
        let scope = self.scope.clone();
        let (state, msg, seen) = node
            .clone()
            .blocking::<_, ProtocolError>(move || {
                let mut seen = true;
                let msg = node.store.read(&key, |doc, meta| {
                    if let Some(who) = &scope {
                        if !meta.heads.is_empty() && !who.sees_doc(key.collection(), key.id(), doc)
                        {
                            seen = false;
                            return None;
                        }
                    }
                    doc.generate_sync_message(&mut state)
                })?;
                Ok((state, msg.flatten().map(|m| m.encode()), seen))
            })
            .await?;
        if !seen {
            // It left this client's scope: nothing more of it is sent, and it is closed here.
            self.node.ws_hub.close_doc(self.id, document_id);
            return Ok(Vec::new());
        }
        if self.scope.is_some() {
            // It may have just come into scope: open it here, as a sync would have.
            self.subscribe(document_id)?;
        }
        self.states.insert(document_id.to_string(), state);
        Ok(msg
            .map(|m| self.sync_frame(document_id, m))
            .into_iter()
            .collect())
    }

    /// After missing commit events: offer every open document again, and send the wanted ones
    /// that arrived meanwhile (their commit was among the missed events).
    async fn resync_all(&mut self) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut out = Vec::new();
        let open: Vec<String> = self.states.keys().cloned().collect();
        for d in open {
            let key = self.key(&d)?;
            out.extend(self.generate(&d, key).await?);
        }
        let wanted: Vec<String> = self.wanted.iter().cloned().collect();
        for d in wanted {
            let key = self.key(&d)?;
            let (store, k) = (self.node.store.clone(), key.clone());
            let exists = self
                .node
                .blocking::<_, ProtocolError>(move || Ok(store.meta(&k)?.is_some()))
                .await?;
            if exists {
                out.extend(self.on_commit(&key).await?);
            }
        }
        Ok(out)
    }

    /// Relays an ephemeral message to the other connections on its document (for a narrowed
    /// client, only on a document it sees; others are dropped unanswered).
    async fn relay(&self, e: frame::Ephemeral) -> Result<(), ProtocolError> {
        if self.scope.is_some() && !self.visible(&self.key(&e.document_id)?).await? {
            return Ok(());
        }
        if self
            .node
            .ws_hub
            .seen_before(e.sender_id, e.session_id, e.count)
        {
            return Ok(());
        }
        let document_id = e.document_id;
        self.subscribe(&document_id)?;
        let fields: Vec<(Value, Value)> = e
            .fields
            .into_iter()
            .filter(|(k, _)| k.as_text() != Some("targetId"))
            .collect();
        self.node.ws_hub.relay(self.id, &document_id, |target| {
            let mut pairs = fields.clone();
            pairs.push((text("targetId"), text(target)));
            encode(&Value::Map(pairs))
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that missed commit events (the broadcast lagged) still sends a document it
    /// was waiting for, once it exists; one that still does not exist stays wanted.
    #[tokio::test]
    async fn a_lagged_connection_sends_the_wanted_documents_that_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let node = crate::server::open_node(config, "127.0.0.1:0".into())
            .await
            .unwrap();
        let mut conn = Conn {
            server_peer_id: "server".into(),
            node: node.clone(),
            id: 1,
            peer_id: Some("client".into()),
            storage_key: None,
            principal: "admin".into(),
            may_write: true,
            scope: None,
            states: HashMap::new(),
            wanted: ["arrived".to_string(), "absent".to_string()].into(),
        };
        let key = conn.key("arrived").unwrap();
        node.store
            .write::<_, crate::store::StoreError>(&key, |doc, _| {
                use automerge::transaction::Transactable;
                let mut tx = doc.transaction();
                tx.put(automerge::ROOT, "title", "hello").unwrap();
                tx.commit();
                Ok(())
            })
            .unwrap();
        let frames = conn.resync_all().await.unwrap();
        assert_eq!(
            frames.len(),
            1,
            "one sync frame, for the document that arrived"
        );
        assert!(conn.states.contains_key("arrived"));
        assert_eq!(conn.wanted, HashSet::from(["absent".to_string()]));
    }
}
