//! Client sync: apps that keep Automerge documents locally (browsers, phones, Node processes)
//! work offline and sync with any node when they reconnect, using stock Automerge libraries.
//!
//! - `http`: the Automerge sync protocol over HTTP (one message per request, state per client
//!   persisted), raw changes by heads, whole-document bytes, and per-document live events.
//!
//! Changes a client brings are ordinary local commits: durable before the answer, pushed to peers,
//! visible in the changes feed.

pub mod http;
