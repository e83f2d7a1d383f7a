//! Slots for long-lived HTTP responses: changes-feed SSE streams and long polls, and
//! per-document event streams.
//!
//! The global concurrency limit (`max_concurrent_requests`) holds a request only until its
//! response head is sent, so an SSE stream stops counting against it the moment it starts and
//! could otherwise pile up without bound (each holds a task, a feed cursor and a socket). Each such
//! response takes one of `max_streams` slots first, held for the stream's whole life (it drops
//! with the response body when the client disconnects or the node shuts down); when none is free
//! the answer is 503 with `Retry-After` at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every stream slot is taken.
#[derive(Debug, thiserror::Error)]
#[error("{max} long-lived streams (SSE, long polls) are open, the configured `max_streams`; retry shortly")]
pub struct AllStreamsBusy {
    pub max: usize,
}

pub struct StreamSlots {
    permits: Arc<Semaphore>,
    max: usize,
}

/// One long-lived stream's slot, released when dropped.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

impl StreamSlots {
    /// `max` must not exceed [`Semaphore::MAX_PERMITS`] (the config validation checks it).
    pub fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        StreamSlots {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot, or [`AllStreamsBusy`] when all are taken (the HTTP layer answers 503).
    pub fn acquire(&self) -> Result<StreamSlot, AllStreamsBusy> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(StreamSlot { _permit: permit }),
            Err(_) => Err(AllStreamsBusy { max: self.max }),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_released_on_drop() {
        let slots = StreamSlots::new(2);
        let a = slots.acquire().unwrap();
        let _b = slots.acquire().unwrap();
        assert!(matches!(slots.acquire(), Err(AllStreamsBusy { max: 2 })));
        assert_eq!(slots.open(), 2);
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(slots.acquire().is_ok());
    }
}
