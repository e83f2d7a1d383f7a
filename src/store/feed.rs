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
}

impl FeedSeq {
    /// `last` is the highest sequence number already stored (0 for none).
    pub fn new(last: u64) -> Self {
        FeedSeq {
            state: Mutex::new(State {
                next: last + 1,
                in_flight: BTreeSet::new(),
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

    /// Marks `seq` as written (or abandoned) and advances the watermark.
    pub fn finish(&self, seq: u64) {
        let mark = {
            let mut st = self.state.lock();
            st.in_flight.remove(&seq);
            match st.in_flight.first() {
                Some(first) => first - 1,
                None => st.next - 1,
            }
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
        f.finish(b);
        assert_eq!(
            f.watermark(),
            10,
            "b is durable but a is not: readers must not see b yet"
        );
        f.finish(a);
        assert_eq!(f.watermark(), 12);
    }
}
