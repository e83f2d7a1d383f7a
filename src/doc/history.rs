//! A document's change history, newest first.

use automerge::{Automerge, ChangeHash};
use serde::Serialize;

/// One change as the history endpoint shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub hash: String,
    pub actor: String,
    pub seq: u64,
    /// Milliseconds since the Unix epoch, as recorded by the writer.
    pub time: i64,
    pub message: Option<String>,
    pub deps: Vec<String>,
    /// Operations in the change: its size, whatever its encoding.
    pub ops: u64,
}

/// Up to `limit` changes older than `before` (or the newest ones), and whether more remain.
pub fn page(
    doc: &Automerge,
    before: Option<&ChangeHash>,
    limit: usize,
) -> (Vec<HistoryEntry>, bool) {
    let metas = doc.get_changes_meta(&[]);
    let mut iter = metas.iter().rev().peekable();
    if let Some(b) = before {
        for m in iter.by_ref() {
            if &m.hash == b {
                break;
            }
        }
    }
    let out: Vec<HistoryEntry> = iter
        .by_ref()
        .take(limit)
        .map(|m| HistoryEntry {
            hash: hex::encode(m.hash.0),
            actor: m.actor.to_hex_string(),
            seq: m.seq,
            time: m.timestamp,
            message: m.message.as_ref().map(|s| s.to_string()),
            deps: m.deps.iter().map(|d| hex::encode(d.0)).collect(),
            // `max_op` is the last op's counter; a change without ops has max_op = start_op - 1.
            ops: (m.max_op + 1).saturating_sub(m.start_op),
        })
        .collect();
    let more = iter.peek().is_some();
    (out, more)
}
