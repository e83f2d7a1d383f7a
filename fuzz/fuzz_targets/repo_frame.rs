//! automerge-repo WebSocket frames (CBOR): decoded and checked; a sync frame's message is then
//! received into a document as the WebSocket handler does.
#![no_main]

use automerge::sync::{State, SyncDoc};
use concord::codec::frame::{decode, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    concord_fuzz::init();
    let Ok(frame) = decode(data) else {
        return;
    };
    let _ = frame.kind();
    if let Frame::Sync { message, .. } = frame {
        let mut doc = concord_fuzz::seed_doc();
        let mut state = State::new();
        concord_fuzz::contained(|| {
            if doc.receive_sync_message(&mut state, message).is_ok() {
                let _ = doc.generate_sync_message(&mut state);
            }
        });
    }
});
