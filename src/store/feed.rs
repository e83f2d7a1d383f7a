//! Changes-feed sequence numbers and the visibility watermark.
//!
//! Commits take feed sequence numbers before their (concurrent, group-committed) RocksDB writes
//! finish, so entries can become durable out of order. A reader that saw entry N+1 and then
//! resumed after it would skip N forever. The watermark is the highest sequence number below
//! which nothing is still in flight; readers only see entries up to it, so a cursor never skips.

use std::collections::BTreeSet;

use parking_lot::Mutex;
use tokio::sync::watch;

pub struct FeedSeq {
    state: Mutex<State>,
    watermark: watch::Sender<u64>,
}

struct State {
    next: u64,
    in_flight: BTreeSet<u64>,
    /// The highest sequence number written. The watermark never passes it: after a restart,
    /// numbering resumes above the highest stored entry, so a number abandoned above it would be
    /// handed out again, and a reader whose cursor had already passed it would skip that entry.
    written: u64,
}

impl FeedSeq {
    /// `last` is the highest sequence number already stored (0 for none).
    pub fn new(last: u64) -> Self {
        FeedSeq {
            state: Mutex::new(State {
                next: last + 1,
                in_flight: BTreeSet::new(),
                written: last,
            }),
            watermark: watch::Sender::new(last),
        }
    }

    /// Takes the next sequence number; [`FeedSeq::finish`] must follow, whatever the outcome.
    pub fn begin(&self) -> u64 {
        let mut st = self.state.lock();
        let seq = st.next;
        st.next += 1;
        st.in_flight.insert(seq);
        seq
    }

    /// Marks `seq` as written (or, when `written` is false, abandoned) and advances the watermark.
    pub fn finish(&self, seq: u64, written: bool) {
        let mark = {
            let mut st = self.state.lock();
            st.in_flight.remove(&seq);
            if written {
                st.written = st.written.max(seq);
            }
            let settled = match st.in_flight.first() {
                Some(first) => first - 1,
                None => st.next - 1,
            };
            settled.min(st.written)
        };
        self.watermark.send_if_modified(|w| {
            if mark > *w {
                *w = mark;
                true
            } else {
                false
            }
        });
    }

    pub fn watermark(&self) -> u64 {
        *self.watermark.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.watermark.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_waits_for_earlier_commits() {
        let f = FeedSeq::new(10);
        let a = f.begin();
        let b = f.begin();
        f.finish(b, true);
        assert_eq!(
            f.watermark(),
            10,
            "b is durable but a is not: readers must not see b yet"
        );
        f.finish(a, true);
        assert_eq!(f.watermark(), 12);
    }

    #[test]
    fn watermark_never_passes_an_abandoned_number_at_the_top() {
        let f = FeedSeq::new(10);
        let a = f.begin();
        f.finish(a, true);
        let b = f.begin();
        f.finish(b, false);
        assert_eq!(
            f.watermark(),
            11,
            "12 was abandoned: a restart would hand it out again, so no cursor may pass it"
        );
        // A restart resumes after the highest stored entry (11) and reissues 12: nothing skipped.
        let restarted = FeedSeq::new(11);
        assert_eq!(restarted.begin(), 12);
        // Without a restart, a later write lifts the watermark over the gap.
        let c = f.begin();
        f.finish(c, true);
        assert_eq!(f.watermark(), 13);
    }
}
