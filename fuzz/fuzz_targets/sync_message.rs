//! Automerge sync messages from clients and peers (`POST .../sync`, peer sync): decoded with the
//! node's checks, then received into a document and answered, as `sync::step` does.
#![no_main]

use automerge::sync::{State, SyncDoc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    concord_fuzz::init();
    let Ok(msg) = concord::codec::decode_sync_message(data) else {
        return;
    };
    let mut doc = concord_fuzz::seed_doc();
    let mut state = State::new();
    concord_fuzz::contained(|| {
        if doc.receive_sync_message(&mut state, msg).is_ok() {
            let _ = doc.generate_sync_message(&mut state);
        }
    });
});
