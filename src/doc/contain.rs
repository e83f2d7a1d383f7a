//! Panic containment: Automerge may panic on corrupt or adversarial data. Every call that feeds
//! it stored or foreign bytes goes through [`contained`], so one bad document answers an error
//! while the node and every other document keep working.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::DocError;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether this thread is inside [`contained`]: a panic hook can tell a panic the node turns
/// into an error from one that is a bug (the fuzz targets abort only on the latter).
pub fn is_containing() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Runs `f`, turning a panic into [`DocError::Corrupt`].
///
/// `AssertUnwindSafe` is sound here because callers throw away whatever `f` was mutating when it
/// panics (the store evicts the document from its cache and reloads it from disk).
pub fn contained<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, DocError> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    outcome.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        tracing::error!(what, panic = %msg, "automerge panicked; contained");
        DocError::Corrupt(format!("{what}: automerge panicked: {msg}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error() {
        let r: Result<(), DocError> = contained("test", || panic!("boom"));
        assert!(matches!(r, Err(DocError::Corrupt(m)) if m.contains("boom")));
    }

    #[test]
    fn knows_when_it_contains() {
        assert!(!is_containing());
        assert!(contained("test", is_containing).unwrap());
        assert!(!is_containing());
        let _ = contained("test", || panic!("boom"));
        assert!(!is_containing(), "a panic leaves the depth right");
    }

    #[test]
    fn ok_passes_through() {
        assert_eq!(contained("test", || 5).unwrap(), 5);
    }
}
