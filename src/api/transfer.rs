//! `GET /v1/collections/{collection}/export` and `POST .../import`: the HTTP side of
//! [`crate::transfer`], streamed both ways in bounded memory (export sends a page at a time,
//! import reads and applies a batch of lines at a time), so a collection of any size moves
//! through a node without being held. Both need the `admin` access level: they read or write
//! every document of the collection, whatever a token's scopes.
//!
//! An import's answer is itself NDJSON, sent while the body is still arriving: one
//! `{"line", "id", "error"}` object per line that failed, then `{"done": true, ...totals}`. It
//! starts before the body is read, so a long import is not cut by the request timeout, and
//! lines applied before a failure stay applied (each line is one commit).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::http::auth::Principal;
use crate::http::extract::{PathParams, QueryParams};
use crate::http::problem::ApiError;
use crate::node::Node;
use crate::transfer::{self, Format, ImportOptions, LineError, Totals};

/// Lines read before they are imported together.
const BATCH_LINES: usize = 256;
/// Lanes a batch is imported on at once: commits on concurrent lanes share their WAL syncs
/// (as a bulk write's do), which one line after another could not.
const LANES: usize = 16;
/// Bytes of lines imported per blocking task.
const BATCH_BYTES: usize = 4 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    #[serde(default)]
    pub format: Format,
}

fn ndjson(body: Body, status: StatusCode) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// `GET .../export`: every document of the collection (tombstones included), in id order.
pub async fn export(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    QueryParams(q): QueryParams<ExportQuery>,
    axum::Extension(who): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    who.check_admin()?;
    crate::store::keys::validate_collection(&collection)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut after: Option<String> = None;
        loop {
            let (n, c, a) = (node.clone(), collection.clone(), after.clone());
            let page = node
                .blocking::<_, ApiError>(move || {
                    Ok(transfer::export_page(&n.store, &c, q.format, a.as_deref())?)
                })
                .await;
            match page {
                Ok(p) => {
                    if !p.ndjson.is_empty() && tx.send(Ok(Bytes::from(p.ndjson))).await.is_err() {
                        return; // the client left
                    }
                    match p.next {
                        Some(next) => after = Some(next),
                        None => return,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, collection, "export failed");
                    // Ends the body abnormally, so the client sees the export is incomplete.
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(ndjson(Body::from_stream(stream), StatusCode::OK))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    #[serde(default)]
    pub format: Format,
    /// `json` only: skip documents that exist.
    #[serde(default)]
    pub if_absent: bool,
}

/// One answer line of an import.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Event {
    Failed {
        line: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        error: String,
    },
    Done {
        done: bool,
        #[serde(flatten)]
        totals: Totals,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

fn event_bytes(e: &Event) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Cuts a byte stream into numbered lines of at most `max` bytes; a longer line is reported
/// (by number) and skipped to its end rather than buffered.
struct Lines {
    buf: Vec<u8>,
    number: u64,
    max: usize,
    too_long: bool,
}

/// A numbered line, or the number of one too long to read.
type Numbered = (u64, Result<Vec<u8>, ()>);

impl Lines {
    fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::new(),
            number: 0,
            max,
            too_long: false,
        }
    }

    fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Numbered>) {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..pos]);
            self.end(out);
            chunk = &chunk[pos + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, part: &[u8]) {
        if self.too_long {
            return;
        }
        if self.buf.len() + part.len() > self.max {
            self.too_long = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    fn end(&mut self, out: &mut Vec<Numbered>) {
        self.number += 1;
        let line = std::mem::take(&mut self.buf);
        if std::mem::take(&mut self.too_long) {
            out.push((self.number, Err(())));
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            out.push((self.number, Ok(line)));
        }
    }

    /// The last line, when the stream does not end with a newline.
    fn finish(&mut self, out: &mut Vec<Numbered>) {
        if !self.buf.is_empty() || self.too_long {
            self.end(out);
        }
    }
}

/// `POST .../import` (see the module doc).
pub async fn import(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
    QueryParams(q): QueryParams<ImportQuery>,
    axum::Extension(who): axum::Extension<Principal>,
    body: Body,
) -> Result<Response, ApiError> {
    who.check_admin()?;
    crate::store::keys::validate_collection(&collection)?;
    if q.if_absent && q.format == Format::Automerge {
        return Err(ApiError::BadRequest(
            "if_absent applies to json imports only: an automerge import merges".into(),
        ));
    }
    let opts = ImportOptions {
        format: q.format,
        if_absent: q.if_absent,
        max_depth: node.config.max_json_depth,
    };
    // A line holds one document: base64 of the largest document a write may make, and more.
    let max_line = (node.config.max_document_bytes as usize / 3 * 4)
        .saturating_add(64 << 10)
        .max(node.config.max_body_bytes);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut totals = Totals::default();
        let mut lines = Lines::new(max_line);
        let mut body = body.into_data_stream();
        let mut pending: Vec<Numbered> = Vec::new();
        let mut ended = false;
        let mut failure: Option<String> = None;
        while !ended {
            match body.next().await {
                Some(Ok(chunk)) => lines.push(&chunk, &mut pending),
                Some(Err(e)) => {
                    failure = Some(format!("the request body broke off: {e}"));
                    ended = true;
                }
                None => {
                    lines.finish(&mut pending);
                    ended = true;
                }
            }
            let bytes: usize = pending
                .iter()
                .map(|(_, l)| l.as_ref().map_or(0, Vec::len))
                .sum();
            if pending.is_empty() || (!ended && pending.len() < BATCH_LINES && bytes < BATCH_BYTES)
            {
                continue;
            }
            let batch = std::mem::take(&mut pending);
            let done = import_batch(&node, &collection, opts, max_line, batch).await;
            let results = match done {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            };
            for (line, id, r) in results {
                totals.count(&r);
                if let Err(e) = r {
                    if let LineError::Store(s) = &e {
                        tracing::warn!(error = %s, line, "import line not stored");
                    }
                    let ev = Event::Failed {
                        line,
                        id,
                        error: e.to_string(),
                    };
                    // The client may have stopped reading: go on importing what it sent.
                    let _ = tx.send(Ok(event_bytes(&ev))).await;
                }
            }
        }
        let ev = Event::Done {
            done: failure.is_none(),
            totals,
            error: failure,
        };
        let _ = tx.send(Ok(event_bytes(&ev))).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(ndjson(Body::from_stream(stream), StatusCode::OK))
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// One imported line: its number, its document id when it has one, and what happened.
type Imported = (u64, Option<String>, Result<transfer::Outcome, LineError>);

/// Imports a batch of lines on [`LANES`] blocking tasks at once. Lines of one document go to
/// one lane, in file order, so a later line for a document is applied after an earlier one.
/// Results come back in line order.
async fn import_batch(
    node: &Arc<Node>,
    collection: &str,
    opts: ImportOptions,
    max_line: usize,
    batch: Vec<Numbered>,
) -> Result<Vec<Imported>, crate::blocking::WorkerFailed> {
    type Lane = Vec<(u64, Option<String>, Result<Vec<u8>, ()>)>;
    let mut lanes: Vec<Lane> = (0..LANES).map(|_| Vec::new()).collect();
    for (number, line) in batch {
        let id = line
            .as_ref()
            .ok()
            .and_then(|t| serde_json::from_slice::<IdOnly>(t).ok())
            .map(|i| i.id);
        let lane = id.as_deref().map_or(0, |i| {
            xxhash_rust::xxh3::xxh3_64(i.as_bytes()) as usize % LANES
        });
        lanes[lane].push((number, id, line));
    }
    let work = lanes.into_iter().filter(|l| !l.is_empty()).map(|lane| {
        let (n, c) = (node.clone(), collection.to_string());
        node.blocking::<_, crate::blocking::WorkerFailed>(move || {
            Ok(lane
                .into_iter()
                .map(|(number, id, line)| {
                    let r = match &line {
                        Ok(text) => transfer::import_line(&n.store, &c, opts, text),
                        Err(()) => Err(LineError::Invalid(format!("longer than {max_line} bytes"))),
                    };
                    (number, id, r)
                })
                .collect::<Vec<Imported>>())
        })
    });
    let mut out = Vec::new();
    for lane in futures::future::join_all(work).await {
        out.extend(lane?);
    }
    out.sort_by_key(|(number, _, _)| *number);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Numbered> {
        let mut l = Lines::new(max);
        let mut out = Vec::new();
        for c in chunks {
            l.push(c, &mut out);
        }
        l.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_numbered_across_chunks_and_long_ones_skipped() {
        let got = split(&[b"ab", b"c\n\nde", b"f\n0123456789ab\nxy"], 8);
        assert_eq!(
            got,
            vec![
                (1, Ok(b"abc".to_vec())),
                (3, Ok(b"def".to_vec())),
                (4, Err(())),
                (5, Ok(b"xy".to_vec())),
            ]
        );
        // A long line cut across chunks is still one line, and the next is whole.
        let got = split(&[b"0123", b"45678", b"9\nok\n"], 8);
        assert_eq!(got, vec![(1, Err(())), (2, Ok(b"ok".to_vec()))]);
    }
}
