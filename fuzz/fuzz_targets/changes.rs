//! Binary changes and saved documents (`POST .../changes`): split and checked by the node, then
//! applied to a document as the endpoint does.
#![no_main]

use concord::codec::chunks::{parse_chunks, Chunk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    concord_fuzz::init();
    let Ok(chunks) = parse_chunks(data) else {
        return;
    };
    let mut doc = concord_fuzz::seed_doc();
    concord_fuzz::contained(|| {
        for chunk in chunks {
            let _ = match chunk {
                Chunk::Changes(changes) => doc.apply_changes(changes),
                Chunk::Document(mut other) => doc.merge(&mut other).map(|_| ()),
            };
        }
        let _ = concord::doc::json::to_json(&doc, None);
    });
});
