//! Cluster membership: the peers this node knows, and whether they answer.
//!
//! Membership starts from the configured seeds and spreads by gossip piggybacked on anti-entropy:
//! each round opens with a hello that carries the sender's member list, and the answer carries the
//! responder's, so a node started with one seed learns the whole cluster within a few rounds. A
//! peer that fails is marked down and retried with exponential backoff (capped); it is never
//! forgotten, and `/v1/cluster` reports it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::transport::Blame;
use crate::store::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Known (a seed or gossiped) but not contacted yet.
    Unknown,
    Up,
    Down,
}

/// What one anti-entropy round repaired.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// When the round ended (ms since the epoch).
    pub at_ms: u64,
    /// Documents that differed and were reconciled.
    pub docs: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub millis: u64,
    /// Documents left out of the round because one side could not read or take them (everything
    /// else was still reconciled); the first few are listed in `skipped`.
    pub skipped_docs: u64,
    pub skipped: Vec<SkippedDoc>,
}

/// A document a round could not reconcile, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SkippedDoc {
    pub collection: String,
    pub id: String,
    /// `local` (this node could not read or store it) or `peer` (the peer could not).
    pub side: &'static str,
    pub error: String,
}

/// How many skipped documents a report lists (the count covers all of them).
pub const SKIPPED_LISTED: usize = 10;

impl RepairReport {
    pub fn skip(&mut self, doc: SkippedDoc) {
        self.skipped_docs += 1;
        if self.skipped.len() < SKIPPED_LISTED {
            self.skipped.push(doc);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub address: String,
    pub node_id: Option<String>,
    pub state: PeerState,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Last successful request to this peer (ms since the epoch).
    pub last_seen_ms: Option<u64>,
    /// Last completed anti-entropy round with this peer (ms since the epoch).
    pub last_sync_ms: Option<u64>,
    /// The last round that repaired anything.
    pub last_repair: Option<RepairReport>,
    /// The peer's digest root (16 hex digits) as it reported it when this node last began an
    /// anti-entropy round with it: equal to this node's root when both held the same documents.
    pub digest_root: Option<String>,
    /// When `digest_root` was reported (ms since the epoch).
    pub digest_root_at_ms: Option<u64>,
    /// Local commits waiting to be pushed to this peer (queued or being sent).
    pub push_queue: u64,
    #[serde(skip)]
    queued: Arc<AtomicU64>,
    #[serde(skip)]
    next_attempt: Option<Instant>,
}

pub struct Membership {
    me: String,
    node_id: String,
    base_backoff: Duration,
    peers: Mutex<BTreeMap<String, PeerInfo>>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Membership {
    pub fn new(me: String, node_id: String, seeds: &[String], base_backoff: Duration) -> Self {
        let m = Membership {
            me,
            node_id,
            base_backoff,
            peers: Mutex::new(BTreeMap::new()),
        };
        m.learn(seeds.iter().cloned());
        m
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Adds addresses not known yet; returns how many were new.
    pub fn learn(&self, addrs: impl IntoIterator<Item = String>) -> usize {
        let mut peers = self.peers.lock();
        let mut added = 0;
        for a in addrs {
            let a = a.trim().to_string();
            if a.is_empty() || a == self.me || peers.contains_key(&a) {
                continue;
            }
            peers.insert(
                a.clone(),
                PeerInfo {
                    address: a,
                    node_id: None,
                    state: PeerState::Unknown,
                    consecutive_failures: 0,
                    last_error: None,
                    last_seen_ms: None,
                    last_sync_ms: None,
                    last_repair: None,
                    digest_root: None,
                    digest_root_at_ms: None,
                    push_queue: 0,
                    queued: Arc::default(),
                    next_attempt: None,
                },
            );
            added += 1;
        }
        added
    }

    /// An address that turned out to be this node itself (another name for it).
    pub fn forget_self_alias(&self, addr: &str) {
        self.peers.lock().remove(addr);
    }

    /// Every address this node knows, itself included: what it gossips.
    pub fn addresses(&self) -> Vec<String> {
        let peers = self.peers.lock();
        std::iter::once(self.me.clone())
            .chain(peers.keys().cloned())
            .collect()
    }

    pub fn snapshot(&self) -> Vec<PeerInfo> {
        self.peers
            .lock()
            .values()
            .map(|p| PeerInfo {
                push_queue: p.queued.load(Ordering::Relaxed),
                ..p.clone()
            })
            .collect()
    }

    /// The count of commits waiting to be pushed to `addr`, which the push task keeps (a
    /// detached counter for an address this node does not know).
    pub fn push_queue(&self, addr: &str) -> Arc<AtomicU64> {
        self.peers
            .lock()
            .get(addr)
            .map(|p| p.queued.clone())
            .unwrap_or_default()
    }

    /// The digest root `addr` reported at the start of a round.
    pub fn record_root(&self, addr: &str, root: u64) {
        if let Some(p) = self.peers.lock().get_mut(addr) {
            p.digest_root = Some(format_root(root));
            p.digest_root_at_ms = Some(now_ms());
        }
    }

    /// Peers to push to: all but those known to be down.
    pub fn pushable(&self) -> Vec<String> {
        self.peers
            .lock()
            .values()
            .filter(|p| p.state != PeerState::Down)
            .map(|p| p.address.clone())
            .collect()
    }

    /// Peers whose backoff (if any) has expired.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.peers
            .lock()
            .values()
            .filter(|p| p.next_attempt.is_none_or(|t| t <= now))
            .map(|p| p.address.clone())
            .collect()
    }

    pub fn record_success(&self, addr: &str, node_id: Option<&str>) {
        if let Some(p) = self.peers.lock().get_mut(addr) {
            if p.state != PeerState::Up {
                tracing::info!(peer = addr, "peer is up");
            }
            p.state = PeerState::Up;
            p.consecutive_failures = 0;
            p.next_attempt = None;
            p.last_error = None;
            p.last_seen_ms = Some(now_ms());
            if let Some(id) = node_id {
                p.node_id = Some(id.to_string());
            }
        }
    }

    /// A peer that answered but refused a request (4xx) is alive: keep it up, keep the error.
    pub fn record_refusal(&self, addr: &str, error: &str) {
        if let Some(p) = self.peers.lock().get_mut(addr) {
            tracing::warn!(peer = addr, error, "peer refused a request");
            p.last_error = Some(error.to_string());
        }
    }

    pub fn record_failure(&self, addr: &str, error: &str) {
        if let Some(p) = self.peers.lock().get_mut(addr) {
            if p.state != PeerState::Down {
                tracing::warn!(peer = addr, error, "peer is down");
            }
            p.state = PeerState::Down;
            p.consecutive_failures = p.consecutive_failures.saturating_add(1);
            p.last_error = Some(error.to_string());
            let exp = p.consecutive_failures.saturating_sub(1).min(16);
            let wait = self.base_backoff.saturating_mul(1 << exp).min(MAX_BACKOFF);
            p.next_attempt = Some(Instant::now() + wait);
        }
    }

    /// A peer pushing back (503 overloaded, 507 disk full): alive, asked again a little later.
    pub fn record_backpressure(&self, addr: &str, error: &str) {
        if let Some(p) = self.peers.lock().get_mut(addr) {
            tracing::info!(peer = addr, error, "peer is pushing back");
            p.last_error = Some(error.to_string());
            p.next_attempt = Some(Instant::now() + self.base_backoff.saturating_mul(2));
        }
    }

    /// Records a failed exchange with `addr` according to whose fault it was: only the peer's own
    /// failures mark it down; a local failure says nothing about it.
    pub fn record_error(&self, addr: &str, blame: Blame, error: &dyn std::fmt::Display) {
        match blame {
            Blame::PeerDown => self.record_failure(addr, &error.to_string()),
            Blame::PeerBusy => self.record_backpressure(addr, &error.to_string()),
            Blame::PeerRefused => self.record_refusal(addr, &error.to_string()),
            Blame::Local => {
                tracing::warn!(peer = addr, %error, "exchange with peer failed on this node")
            }
        }
    }

    pub fn record_sync(&self, addr: &str, report: RepairReport) {
        if let Some(p) = self.peers.lock().get_mut(addr) {
            p.last_sync_ms = Some(report.at_ms);
            if report.docs > 0 || report.skipped_docs > 0 {
                p.last_repair = Some(report);
            }
        }
    }
}

/// A digest root as the cluster view shows it.
pub fn format_root(root: u64) -> String {
    format!("{root:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_gossip_and_backs_off() {
        let m = Membership::new(
            "me:1".into(),
            "id".into(),
            &["a:1".into(), "me:1".into()],
            Duration::from_millis(100),
        );
        assert_eq!(m.addresses(), vec!["me:1", "a:1"]);
        assert_eq!(m.learn(["b:1".to_string(), "a:1".to_string()]), 1);
        m.record_failure("a:1", "refused");
        m.record_failure("a:1", "refused");
        let now = Instant::now();
        assert_eq!(m.due(now), vec!["b:1"], "a is backing off");
        assert!(m
            .due(now + Duration::from_millis(250))
            .contains(&"a:1".to_string()));
        assert_eq!(m.pushable(), vec!["b:1"]);
        m.record_success("a:1", Some("x"));
        let a = m
            .snapshot()
            .into_iter()
            .find(|p| p.address == "a:1")
            .unwrap();
        assert_eq!(a.state, PeerState::Up);
        assert_eq!(a.consecutive_failures, 0);
    }

    #[test]
    fn errors_mark_a_peer_down_only_when_they_are_its_own() {
        let m = Membership::new(
            "me:1".into(),
            "id".into(),
            &["a:1".into()],
            Duration::from_millis(100),
        );
        m.record_success("a:1", None);
        let state = |m: &Membership| m.snapshot()[0].state;
        m.record_error("a:1", Blame::Local, &"local store: corrupt");
        assert_eq!(state(&m), PeerState::Up, "a local failure");
        m.record_error("a:1", Blame::PeerBusy, &"507: disk full");
        assert_eq!(state(&m), PeerState::Up, "back-pressure");
        assert_eq!(m.pushable(), vec!["a:1"], "still pushed to");
        assert!(
            m.due(Instant::now()).is_empty(),
            "asked again a little later"
        );
        m.record_error("a:1", Blame::PeerDown, &"500: boom");
        assert_eq!(state(&m), PeerState::Down, "the peer's own failure");
    }
}
