//! Shared pieces of the fuzz targets: a realistic document to apply inputs to, and a panic hook
//! that lets the node's own panic containment work under libFuzzer.
//!
//! libFuzzer's hook aborts on every panic, even one the node catches. Automerge may panic on
//! hostile bytes, and the node contains that ([`concord::doc::contain`]): an error for that
//! input, not a crash. So a panic inside the node's containment is left to unwind into it; every
//! other panic aborts, and the input is reported as a crash.

use std::sync::{Once, OnceLock};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, ObjType, ScalarValue, ROOT};

/// Installs the hook; every target calls it first.
pub fn init() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !concord::doc::contain::is_containing() {
                abort(info);
            }
        }));
    });
}

/// Runs `f` as the node runs Automerge on foreign bytes: a panic becomes an error.
pub fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    concord::doc::contain::contained("fuzz", f).ok()
}

/// A document with every kind of value the API exposes: nested maps, a list, text, a counter,
/// numbers of each kind, and a history of a few changes. Built once, cloned per input.
pub fn seed_doc() -> Automerge {
    static SEED: OnceLock<Automerge> = OnceLock::new();
    SEED.get_or_init(build_seed).clone()
}

fn build_seed() -> Automerge {
    let mut doc = AutoCommit::new();
    let fill = |doc: &mut AutoCommit| -> Result<(), automerge::AutomergeError> {
        doc.put(ROOT, "title", "hello")?;
        let text = doc.put_object(ROOT, "text", ObjType::Text)?;
        doc.splice_text(&text, 0, 0, "some text")?;
        doc.put(ROOT, "count", ScalarValue::counter(3))?;
        doc.put(ROOT, "n", 1.5)?;
        doc.put(ROOT, "u", u64::MAX)?;
        let list = doc.put_object(ROOT, "list", ObjType::List)?;
        for i in 0..3 {
            doc.insert(&list, i, i as i64)?;
        }
        let nested = doc.put_object(ROOT, "nested", ObjType::Map)?;
        doc.put(&nested, "a", true)?;
        let deeper = doc.put_object(&nested, "b", ObjType::Map)?;
        doc.put(&deeper, "c", ())?;
        Ok(())
    };
    // Building a document from constants cannot fail; an empty one still fuzzes.
    let _ = fill(&mut doc);
    doc.commit();
    doc.put(ROOT, "title", "hello again").ok();
    doc.commit();
    doc.document().clone()
}
