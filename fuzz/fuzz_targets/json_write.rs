//! JSON writes as the REST API takes them: CRDT ops (`POST .../ops`), merge patches (`PATCH`)
//! and whole-document replaces (`PUT`), applied to a realistic document. These are the node's own
//! code paths, so any panic is a finding (no containment), and a replace must read back as the
//! very JSON that was written.
#![no_main]

use concord::doc::ops::Op;
use concord::doc::write::{apply, Write};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The node's default `max_json_depth`: deeper bodies never reach the parser.
const MAX_DEPTH: usize = 64;

fuzz_target!(|data: &[u8]| {
    concord_fuzz::init();
    let Some((&mode, json)) = data.split_first() else {
        return;
    };
    if concord::codec::json_depth(json) > MAX_DEPTH {
        return;
    }
    let write = match mode % 3 {
        0 => match serde_json::from_slice::<Vec<Op>>(json) {
            Ok(ops) => Write::Ops(ops),
            Err(_) => return,
        },
        1 => match serde_json::from_slice::<Map<String, Value>>(json) {
            Ok(patch) => Write::MergePatch(patch),
            Err(_) => return,
        },
        _ => match serde_json::from_slice::<Map<String, Value>>(json) {
            Ok(body) => Write::Replace(body),
            Err(_) => return,
        },
    };
    let mut doc = concord_fuzz::seed_doc();
    let before = doc.get_heads();
    match apply(&mut doc, &write, 1) {
        Ok(()) => {
            if let Write::Replace(body) = &write {
                let read = concord::doc::json::to_json(&doc, None);
                assert_eq!(&read, body, "a replace reads back as written");
            }
        }
        // Refused: nothing may have been applied.
        Err(_) => assert_eq!(
            doc.get_heads(),
            before,
            "a refused write changed the document"
        ),
    }
});
