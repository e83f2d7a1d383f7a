//! Decoders for untrusted bytes: what clients and peers send is turned into typed values here,
//! before any handler, store or document acts on it.
//!
//! Everything in this module is pure (no I/O, no node state), builds without the server's
//! dependencies (`--no-default-features`), and is what the fuzz targets in `fuzz/` drive, together
//! with [`crate::doc`] for the JSON writes.
//!
//! - [`sync_message`]: Automerge sync messages, with the checks Automerge itself does not make;
//! - [`chunks`]: concatenated Automerge changes and saved documents (`POST .../changes`);
//! - [`frame`]: automerge-repo WebSocket frames (CBOR), both ways;
//! - [`json_depth`]: the nesting depth of a JSON text, measured before parsing it;
//! - [`cursor`]: changes-feed cursors;
//! - [`leb128`]: the variable-length numbers inside Automerge's encodings.

pub mod chunks;
pub mod cursor;
pub mod frame;
pub mod json_depth;
pub mod leb128;
pub mod sync_message;

pub use json_depth::json_depth;
pub use sync_message::decode_sync_message;
