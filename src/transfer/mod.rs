//! Logical export and import of a collection, one document per NDJSON line, so data can move
//! between nodes, clusters and versions (a physical backup is a copy of one node's files; this
//! is a copy of the documents).
//!
//! Two formats:
//! - `json`: `{"id", "version", "deleted", "doc"}`, the document as `GET` returns it (`doc` is
//!   `null` for a deleted one). Importing it creates or replaces the document (a write like
//!   `PUT`, or a delete), a new change on the importing node.
//! - `automerge`: `{"id", "version", "deleted", "automerge"}`, the document's stored bytes with
//!   its whole history (base64). Importing it *merges*, so nothing on the target is lost, history
//!   stays readable (`?at=`), and importing the same file twice changes nothing.
//!
//! Export reads a page of documents at a time (a bounded number of bytes), each as of the moment
//! it is read: for one point in time across a collection, take a backup. Import applies each
//! line as one commit: a line is applied whole or not at all, and a bad line is reported by its
//! number without stopping the others.

use automerge::ReadDoc;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::codec::chunks::Chunk;
use crate::doc::contain::contained;
use crate::doc::heads;
use crate::doc::write::{apply, Write};
use crate::store::{DocKey, Store, StoreError};

/// Documents listed per store read.
const LIST_PAGE: usize = 256;
/// A page of export ends once it holds this many bytes.
const PAGE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Automerge,
}

/// One line of an export, in either format (import accepts exactly the fields of its format).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub id: String,
    /// The version exported (informational on import).
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    /// `json`: the document (`null` when deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Option<Map<String, Value>>>,
    /// `automerge`: the stored document, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automerge: Option<String>,
}

/// A page of export: NDJSON bytes, how many documents, and where the next page starts.
pub struct Page {
    pub ndjson: Vec<u8>,
    pub docs: u64,
    pub next: Option<String>,
}

fn push_line(out: &mut Vec<u8>, line: &Line) -> Result<(), StoreError> {
    serde_json::to_writer(&mut *out, line)
        .map_err(|e| StoreError::Corrupt(format!("export line: {e}")))?;
    out.push(b'\n');
    Ok(())
}

/// The next page of `collection` after document `after` (from the start when `None`).
pub fn export_page(
    store: &Store,
    collection: &str,
    format: Format,
    after: Option<&str>,
) -> Result<Page, StoreError> {
    let listed = store.list(collection, after, LIST_PAGE)?;
    let full = listed.len() == LIST_PAGE;
    let mut page = Page {
        ndjson: Vec::new(),
        docs: 0,
        next: None,
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    match format {
        Format::Json => {
            let keys = listed
                .iter()
                .map(|(id, _)| DocKey::new(collection, id))
                .collect::<Result<Vec<_>, _>>()?;
            let current = store.current_json_many(&keys)?;
            for ((id, meta), cur) in listed.iter().zip(current) {
                let line = match cur {
                    Some(c) => Line {
                        id: id.clone(),
                        version: Some(c.version()),
                        deleted: false,
                        doc: Some(Some(c.json)),
                        automerge: None,
                    },
                    None => Line {
                        id: id.clone(),
                        version: Some(heads::format(&meta.heads())),
                        deleted: true,
                        doc: Some(None),
                        automerge: None,
                    },
                };
                push_line(&mut page.ndjson, &line)?;
                page.docs += 1;
                if page.ndjson.len() >= PAGE_BYTES {
                    page.next = Some(id.clone());
                    return Ok(page);
                }
            }
        }
        Format::Automerge => {
            for (id, _) in &listed {
                let key = DocKey::new(collection, id)?;
                // Gone since it was listed: nothing to export.
                let Some((bytes, meta)) = store.stored_bytes(&key)? else {
                    continue;
                };
                let line = Line {
                    id: id.clone(),
                    version: Some(heads::format(&meta.heads())),
                    deleted: meta.deleted,
                    doc: None,
                    automerge: Some(b64.encode(bytes)),
                };
                push_line(&mut page.ndjson, &line)?;
                page.docs += 1;
                if page.ndjson.len() >= PAGE_BYTES {
                    page.next = Some(id.clone());
                    return Ok(page);
                }
            }
        }
    }
    if full {
        page.next = listed.last().map(|(id, _)| id.clone());
    }
    Ok(page)
}

/// Why a line was not imported (reported with its line number).
#[derive(Debug, Error)]
pub enum LineError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What importing a line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// The document already held everything the line holds.
    Unchanged,
    /// `if_absent` and the document exists.
    Skipped,
}

/// Counts of an import.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub lines: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
}

impl Totals {
    pub fn count(&mut self, o: &Result<Outcome, LineError>) {
        self.lines += 1;
        match o {
            Ok(Outcome::Created) => self.created += 1,
            Ok(Outcome::Updated) => self.updated += 1,
            Ok(Outcome::Unchanged) => self.unchanged += 1,
            Ok(Outcome::Skipped) => self.skipped += 1,
            Err(_) => self.failed += 1,
        }
    }
}

/// How lines are imported.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    pub format: Format,
    /// `json` only: leave documents that exist (live) as they are.
    pub if_absent: bool,
    /// Deepest JSON accepted (the node's `max_json_depth`).
    pub max_depth: usize,
}

/// Imports one NDJSON line into `collection` as one commit (nothing when it fails).
pub fn import_line(
    store: &Store,
    collection: &str,
    opts: ImportOptions,
    text: &[u8],
) -> Result<Outcome, LineError> {
    let invalid = |m: String| LineError::Invalid(m);
    // Depth before parsing: serde's own recursion limit is far above the node's.
    if crate::codec::json_depth::json_depth(text) > opts.max_depth + 2 {
        return Err(invalid(format!(
            "nested deeper than {} levels",
            opts.max_depth
        )));
    }
    let line: Line =
        serde_json::from_slice(text).map_err(|e| invalid(format!("not an export line: {e}")))?;
    let key = DocKey::new(collection, &line.id).map_err(|e| invalid(e.to_string()))?;
    match opts.format {
        Format::Json => {
            if line.automerge.is_some() {
                return Err(invalid(
                    "an `automerge` line in a `json` import: pass format=automerge".into(),
                ));
            }
            let write = match (line.deleted, line.doc) {
                (true, _) => Write::Delete,
                (false, Some(Some(doc))) => Write::Replace(doc),
                (false, _) => {
                    return Err(invalid(
                        "`doc` must be an object unless `deleted` is true".into(),
                    ))
                }
            };
            let if_absent = opts.if_absent;
            let (outcome, committed) = store.write::<_, LineError>(&key, |doc, meta| {
                let live = meta.is_some_and(|m| !m.deleted);
                if if_absent && live {
                    return Ok(Some(Outcome::Skipped));
                }
                if matches!(write, Write::Delete) && !live {
                    return Ok(Some(Outcome::Unchanged));
                }
                apply(doc, &write, crate::store::now_ms() as i64)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(None)
            })?;
            Ok(outcome.unwrap_or(if !committed.changed {
                Outcome::Unchanged
            } else if committed.created {
                Outcome::Created
            } else {
                Outcome::Updated
            }))
        }
        Format::Automerge => {
            if line.doc.is_some() {
                return Err(invalid(
                    "a `doc` line in an `automerge` import: pass format=json".into(),
                ));
            }
            let Some(b64) = line.automerge else {
                return Err(invalid("`automerge` (base64) is missing".into()));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| invalid(format!("`automerge` is not base64: {e}")))?;
            let name = key.to_string();
            // Checked chunk by chunk as posted changes are (bundles refused, every change's
            // operations checked, a partial document refused), never handed to Automerge raw.
            let chunks = crate::codec::chunks::parse_chunks(&bytes)
                .map_err(|e| invalid(format!("not an Automerge document: {}", e.0)))?;
            let mut other = contained(&name, || {
                let mut d = automerge::Automerge::new();
                for chunk in chunks {
                    match chunk {
                        Chunk::Changes(changes) => d.apply_changes(changes)?,
                        Chunk::Document(mut saved) => {
                            d.merge(&mut saved)?;
                        }
                    }
                }
                Ok::<_, automerge::AutomergeError>(d)
            })
            .map_err(|e| invalid(e.to_string()))?
            .map_err(|e| invalid(format!("not an Automerge document: {e}")))?;
            let missing = other.get_missing_deps(&[]);
            if !missing.is_empty() {
                return Err(invalid(format!(
                    "the document's changes depend on {} change(s) the line does not hold",
                    missing.len()
                )));
            }
            let (existed, committed) = store.write::<_, LineError>(&key, |doc, meta| {
                contained(&name, || doc.merge(&mut other))
                    .map_err(|e| invalid(e.to_string()))?
                    .map_err(|e| invalid(format!("cannot merge: {e}")))?;
                Ok(meta.is_some())
            })?;
            Ok(if !committed.changed {
                Outcome::Unchanged
            } else if !existed {
                Outcome::Created
            } else {
                Outcome::Updated
            })
        }
    }
}
