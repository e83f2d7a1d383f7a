//! The short strings clients send in paths, queries and headers: versions (`?at=`, `If-Match`
//! ETags), JSON Pointers (resolved against a document), and changes-feed cursors.
#![no_main]

use concord::doc::{heads, pointer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    concord_fuzz::init();
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = heads::parse(s);
    let _ = heads::parse_etag(s);
    let _ = concord::codec::cursor::parse(s);
    if let Ok(tokens) = pointer::parse(s) {
        let doc = concord_fuzz::seed_doc();
        let _ = pointer::resolve_slot(&doc, s, &tokens);
        let _ = pointer::resolve_object(&doc, s, &tokens);
    }
});
