//! Measures the heap a loaded document really holds.
//!
//! An Automerge document in memory is far larger than its saved bytes (a small document's few
//! hundred stored bytes hold ~15-20 KB of heap), so estimating the cache's weight from stored size
//! let a "256 MiB" cache grow to gigabytes. jemalloc counts each thread's allocated and freed bytes;
//! the difference across a load or an edit is what the document keeps.

use std::sync::OnceLock;

use tikv_jemalloc_ctl::thread::{allocatedp, allocatedp_mib, deallocatedp, deallocatedp_mib};

fn mibs() -> Option<&'static (allocatedp_mib, deallocatedp_mib)> {
    static MIBS: OnceLock<Option<(allocatedp_mib, deallocatedp_mib)>> = OnceLock::new();
    MIBS.get_or_init(|| Some((allocatedp::mib().ok()?, deallocatedp::mib().ok()?)))
        .as_ref()
}

fn net_allocated() -> i64 {
    match mibs() {
        Some((a, d)) => match (a.read(), d.read()) {
            (Ok(a), Ok(d)) => a.get() as i64 - d.get() as i64,
            _ => 0,
        },
        None => 0,
    }
}

/// The process's heap: bytes allocated by the program, and bytes jemalloc holds resident for it
/// (allocated plus freed pages not yet returned to the system, plus its own metadata).
pub fn heap() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some((
        stats::allocated::read().ok()? as u64,
        stats::resident::read().ok()? as u64,
    ))
}

/// Heap retained by what ran on this thread between [`Meter::start`] and [`Meter::retained`].
pub struct Meter(i64);

impl Meter {
    pub fn start() -> Self {
        Meter(net_allocated())
    }

    pub fn retained(&self) -> i64 {
        net_allocated() - self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_what_is_kept() {
        let m = Meter::start();
        let kept = vec![0u8; 1 << 20];
        let r = m.retained();
        assert!(r >= 1 << 20, "retained {r}");
        drop(kept);
        assert!(m.retained() < 1 << 16);
    }
}
