//! The registry of live automerge-repo WebSocket connections: slots bounded by `max_websockets`,
//! which `senderId` each connection joined as (and for which principal), which documents each has
//! open (bounded per connection), and the dedup record of relayed ephemeral messages.
//!
//! The node holds one hub; the protocol itself (`api::websocket`) drives it. Kept apart from the
//! protocol so that the node's state depends on no HTTP code.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why the hub refused a connection's request.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HubError {
    #[error(
        "this connection has {0} documents open, the limit (max_ws_docs_per_connection): \
         open more on another connection"
    )]
    TooManyDocuments(usize),
    #[error("senderId `{0}` is in use by another client's connection")]
    SenderIdTaken(String),
}

/// Most bytes of relayed ephemeral frames one connection may have waiting to be sent. A client
/// that stops reading while others keep talking on its documents would otherwise hold up to a
/// frame-count bound of frames as large as a message may be (16 MiB each). Presence and cursor
/// messages are small; beyond this, frames are dropped (ephemeral messages are best effort).
pub const RELAY_QUEUE_BYTES: usize = 1 << 20;
/// Most relayed frames one connection may have waiting (each costs a little beyond its bytes).
const RELAY_QUEUE_FRAMES: usize = 1024;

/// The sending side of a connection's queue of relayed frames, bounded in frames and bytes.
#[derive(Clone)]
pub struct RelaySender {
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving side: the connection's task takes frames from it to send them.
pub struct RelayReceiver {
    rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// A connection's relay queue holding at most `max_bytes` of frames.
pub fn relay_queue(max_bytes: usize) -> (RelaySender, RelayReceiver) {
    let (tx, rx) = mpsc::channel(RELAY_QUEUE_FRAMES);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        RelaySender {
            tx,
            queued: queued.clone(),
            max_bytes,
        },
        RelayReceiver { rx, queued },
    )
}

impl RelaySender {
    /// Queues `frame` unless the queue is full (in frames or bytes); `false` when dropped.
    pub fn try_send(&self, frame: Vec<u8>) -> bool {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_bytes || self.tx.try_send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl RelayReceiver {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.rx.recv().await?;
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }
}

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
    tx: RelaySender,
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
    /// Connections that have joined.
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

    /// Registers a connection that holds `slot`; it is unregistered when the returned value
    /// drops, however the connection's task ends (a panic included).
    pub fn register(self: &Arc<Self>, slot: WsSlot) -> Registration {
        Registration {
            _slot: slot,
            hub: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Records that connection `conn` joined as `peer_id` for `principal`, and closes the other
    /// connections of that `peer_id` (a peer that reconnects replaces its old connection), but
    /// only its own: another principal's live `peer_id` is refused, so one user cannot kick
    /// another off. A second `join` on a connection keeps the documents it has open.
    pub fn join(
        &self,
        conn: u64,
        peer_id: &str,
        principal: &str,
        tx: &RelaySender,
        cancel: &CancellationToken,
    ) -> Result<(), HubError> {
        let mut conns = self.conns.lock();
        let others = || {
            conns
                .iter()
                .filter(|(id, c)| c.peer_id == peer_id && **id != conn)
        };
        if others().any(|(_, c)| c.principal != principal) {
            return Err(HubError::SenderIdTaken(peer_id.to_string()));
        }
        for (_, c) in others() {
            c.cancel.cancel();
        }
        let entry = conns.entry(conn).or_insert_with(|| ConnEntry {
            peer_id: String::new(),
            principal: String::new(),
            docs: HashSet::new(),
            tx: tx.clone(),
            cancel: cancel.clone(),
        });
        entry.peer_id = peer_id.to_string();
        entry.principal = principal.to_string();
        Ok(())
    }

    /// Opens `document_id` on connection `conn`, refusing a new one beyond `cap`.
    ///
    /// Why refuse and close rather than evict the least recently used document: automerge-repo
    /// (protocol 1) has no message to close a document, so the client still believes an evicted
    /// document is live. It would silently stop receiving changes made elsewhere, and a sync state
    /// rebuilt from scratch on the node's side while the client keeps its own can stall a sync
    /// until it reconnects. An `error` frame and a close are visible; the client reconnects and
    /// opens what it needs.
    pub fn open_doc(&self, conn: u64, document_id: &str, cap: usize) -> Result<(), HubError> {
        let mut conns = self.conns.lock();
        let Some(c) = conns.get_mut(&conn) else {
            return Ok(());
        };
        if c.docs.contains(document_id) {
            return Ok(());
        }
        if c.docs.len() >= cap {
            return Err(HubError::TooManyDocuments(cap));
        }
        c.docs.insert(document_id.to_string());
        self.tracked_docs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether [`Hub::open_doc`] would succeed, without opening it.
    pub fn may_open(&self, conn: u64, document_id: &str, cap: usize) -> Result<(), HubError> {
        let conns = self.conns.lock();
        match conns.get(&conn) {
            Some(c) if !c.docs.contains(document_id) && c.docs.len() >= cap => {
                Err(HubError::TooManyDocuments(cap))
            }
            _ => Ok(()),
        }
    }

    /// Closes a document on a connection (it left the connection's scope): no more relays of it.
    pub fn close_doc(&self, conn: u64, document_id: &str) {
        let mut conns = self.conns.lock();
        if let Some(c) = conns.get_mut(&conn) {
            if c.docs.remove(document_id) {
                self.tracked_docs.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether an ephemeral message was relayed already (its `count` is not above the highest
    /// seen for its sender and session); records it otherwise.
    pub fn seen_before(&self, sender: String, session: String, count: u64) -> bool {
        let key = (sender, session);
        if self.seen.get(&key).is_some_and(|last| count <= last) {
            return true;
        }
        self.seen.insert(key, count);
        false
    }

    /// Sends `frame_for(target peer id)` to every connection but `from` that has `document_id`
    /// open. A full queue (see [`RELAY_QUEUE_BYTES`]) drops the frame: ephemeral messages are
    /// best effort.
    pub fn relay(&self, from: u64, document_id: &str, frame_for: impl Fn(&str) -> Vec<u8>) {
        let conns = self.conns.lock();
        for (id, c) in conns.iter() {
            if *id == from || !c.docs.contains(document_id) {
                continue;
            }
            c.tx.try_send(frame_for(&c.peer_id));
        }
    }
}

/// A reserved WebSocket slot, taken before the upgrade so concurrent upgrades cannot exceed
/// `max_websockets`. Released when dropped: when the upgrade fails (axum drops the callback that
/// owns it) or when the connection ends.
pub struct WsSlot {
    hub: Arc<Hub>,
}

impl WsSlot {
    pub fn reserve(hub: &Arc<Hub>, max: usize) -> Option<WsSlot> {
        hub.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| WsSlot { hub: hub.clone() })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A registered connection: its id, and its slot and hub entry until it drops.
pub struct Registration {
    _slot: WsSlot,
    hub: Arc<Hub>,
    id: u64,
}

impl Registration {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(c) = self.hub.conns.lock().remove(&self.id) {
            self.hub
                .tracked_docs
                .fetch_sub(c.docs.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot is taken when the upgrade is accepted, not when the socket starts serving: an
    /// upgrade still in flight already counts, so concurrent upgrades cannot overshoot.
    #[test]
    fn slots_are_reserved_before_the_upgrade() {
        let hub = Arc::new(Hub::default());
        let a = WsSlot::reserve(&hub, 2).expect("first slot");
        let b = WsSlot::reserve(&hub, 2).expect("second slot");
        assert_eq!(hub.open(), 2);
        assert!(WsSlot::reserve(&hub, 2).is_none(), "no third slot");
        drop(a);
        assert_eq!(hub.open(), 1, "a failed upgrade gives its slot back");
        let _c = WsSlot::reserve(&hub, 2).expect("the freed slot");
        drop(b);
    }

    #[test]
    fn documents_per_connection_are_capped_and_released() {
        let hub = Arc::new(Hub::default());
        let (tx, _rx) = relay_queue(RELAY_QUEUE_BYTES);
        let reg = hub.register(WsSlot::reserve(&hub, 1).unwrap());
        let id = reg.id();
        hub.join(id, "p", "anonymous", &tx, &CancellationToken::new())
            .unwrap();
        hub.open_doc(id, "a", 2).unwrap();
        hub.open_doc(id, "b", 2).unwrap();
        hub.open_doc(id, "a", 2)
            .expect("an open document is no new one");
        assert_eq!(hub.open_doc(id, "c", 2), Err(HubError::TooManyDocuments(2)));
        assert_eq!(hub.tracked_docs(), 2);
        drop(reg);
        assert_eq!(hub.tracked_docs(), 0);
        assert_eq!(hub.open(), 0);
    }

    /// A connection that does not read holds at most the byte bound of relayed frames: beyond
    /// it frames are dropped, and once it reads, frames are queued again.
    #[test]
    fn a_stalled_connection_holds_a_bounded_relay_queue() {
        let hub = Arc::new(Hub::default());
        let (tx, mut rx) = relay_queue(10_000);
        let reg = hub.register(WsSlot::reserve(&hub, 1).unwrap());
        hub.join(reg.id(), "p", "anonymous", &tx, &CancellationToken::new())
            .unwrap();
        hub.open_doc(reg.id(), "d", 8).unwrap();
        for _ in 0..50 {
            hub.relay(u64::MAX, "d", |_| vec![0u8; 1_000]);
        }
        let mut held = 0;
        // Everything relayed is queued already: take what is there without waiting.
        while let Some(Some(f)) = futures::FutureExt::now_or_never(rx.recv()) {
            held += f.len();
        }
        assert_eq!(held, 10_000, "ten frames kept, forty dropped");
        assert!(
            !tx.try_send(vec![0; 10_001]),
            "a frame over the bound never fits"
        );
        assert!(tx.try_send(vec![0; 10_000]), "drained: room again");
    }

    #[test]
    fn only_the_same_principal_takes_over_a_sender_id() {
        let hub = Arc::new(Hub::default());
        let (tx, _rx) = relay_queue(RELAY_QUEUE_BYTES);
        let (first, second, third) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        hub.join(1, "p", "alice", &tx, &first).unwrap();
        assert_eq!(
            hub.join(2, "p", "mallory", &tx, &second),
            Err(HubError::SenderIdTaken("p".into()))
        );
        assert!(!first.is_cancelled());
        hub.join(3, "p", "alice", &tx, &third).unwrap();
        assert!(
            first.is_cancelled(),
            "the same principal replaces its connection"
        );
        assert!(!third.is_cancelled());
    }
}
