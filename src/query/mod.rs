//! Finding documents by what they contain, the pure part: field paths (`path`), the order of
//! JSON values and its byte encoding for index keys (`collate`), selectors and their matching
//! (`selector`), and planning a query over index definitions (`plan`).
//!
//! Knows neither the store nor HTTP: the store writes index keys with `collate`, and the executor
//! (`find`) runs plans against the store.

pub mod collate;
pub mod path;
pub mod plan;
pub mod selector;

pub use path::FieldPath;
pub use selector::{Selector, SelectorError};
