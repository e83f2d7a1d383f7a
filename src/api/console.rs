//! `/ui/`: the web console's static files, built into the binary so that every node serves its
//! console with nothing to install and no network (an air-gapped node included).
//!
//! The console is plain ES modules (`ui/` at the repository root, no build step); it talks only
//! to the public REST API with the user's token, so this module only serves files: gzip-compressed
//! once per process, with an ETag per encoding (`no-cache` revalidation: the files have stable,
//! unversioned names), `nosniff` and a strict Content-Security-Policy (scripts, styles and
//! connections from this origin only; no inline script or style).
//!
//! `console_dir` in the configuration serves the files from a directory instead, read on every
//! request, for working on the console without rebuilding the node.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use crate::http::problem::ApiError;
use crate::node::Node;

/// What the console may load and talk to: this origin only, no inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'; object-src 'none'";

macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)) as &[u8])),*]
    };
}

/// Every file of `ui/` (a test checks that this list and the directory agree).
#[rustfmt::skip]
static FILES: &[(&str, &[u8])] = embedded![
    "index.html",
    "app.css",
    "favicon.svg",
    "js/api.js",
    "js/app.js",
    "js/chart.js",
    "js/core.js",
    "js/diff.js",
    "js/metrics.js",
    "js/pages/clients.js",
    "js/pages/cluster.js",
    "js/pages/collections.js",
    "js/pages/document.js",
    "js/pages/history.js",
    "js/pages/live.js",
    "js/pages/overview.js",
    "js/pages/query.js",
    "js/sse.js",
    "js/util.js",
    "vendor/VENDOR.md",
    "vendor/lit-html/LICENSE",
    "vendor/lit-html/directive-helpers.js",
    "vendor/lit-html/directive.js",
    "vendor/lit-html/directives/live.js",
    "vendor/lit-html/lit-html.js",
    "vendor/uplot/LICENSE",
    "vendor/uplot/uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css",
];

/// One file, ready to send in either encoding.
struct Asset {
    mime: &'static str,
    raw: Bytes,
    /// `None` when gzip would not make it smaller.
    gzip: Option<Bytes>,
    etag: HeaderValue,
    etag_gzip: HeaderValue,
}

impl Asset {
    fn new(path: &str, raw: Bytes) -> Asset {
        let hash = xxhash_rust::xxh3::xxh3_64(&raw);
        let gzip = gzip(&raw).filter(|z| z.len() < raw.len()).map(Bytes::from);
        Asset {
            mime: mime_of(path),
            raw,
            gzip,
            etag: etag(format!("\"{hash:016x}\"")),
            etag_gzip: etag(format!("\"{hash:016x}-gzip\"")),
        }
    }
}

fn etag(s: String) -> HeaderValue {
    // Hex digits and quotes only: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("\"\""))
}

fn gzip(raw: &[u8]) -> Option<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(raw).ok()?;
    z.finish().ok()
}

static ASSETS: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(path, raw)| (path, Asset::new(path, Bytes::from_static(raw))))
        .collect()
});

fn mime_of(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name == "LICENSE" {
        return "text/plain; charset=utf-8";
    }
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("md" | "txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `/ui` (redirected), `/ui/` (the console's page) and `/ui/<file>`. Open to everyone: the files
/// hold no data, and the API the console calls checks the user's token.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(file))
        .route("/ui/{*path}", get(file))
}

async fn file(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = match uri.path().strip_prefix("/ui/") {
        Some("") | None => "index.html",
        Some(p) => p,
    };
    let not_found = || ApiError::NotFound(format!("the console has no file `{path}`"));
    match &node.config.console_dir {
        Some(dir) => {
            let full = within(dir, path).ok_or_else(not_found)?;
            let raw = match tokio::fs::read(&full).await {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => return Err(not_found()),
                Err(e) => {
                    return Err(ApiError::Internal(format!(
                        "cannot read {}: {e}",
                        full.display()
                    )))
                }
            };
            Ok(send(&Asset::new(path, Bytes::from(raw)), &headers))
        }
        None => Ok(send(ASSETS.get(path).ok_or_else(not_found)?, &headers)),
    }
}

/// `path` under `dir`, or `None` if it would leave it (`..`, absolute paths).
fn within(dir: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn send(asset: &Asset, req: &HeaderMap) -> Response {
    let gzip = asset.gzip.as_ref().filter(|_| accepts_gzip(req));
    let etag = if gzip.is_some() {
        &asset.etag_gzip
    } else {
        &asset.etag
    };
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::ETAG, etag.clone());
    let matched = req
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    if matched {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let body = match gzip {
        Some(z) => {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            z.clone()
        }
        None => asset.raw.clone(),
    };
    (h, Body::from(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
    }

    fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                out.push(
                    path.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }

    #[test]
    fn every_file_of_the_console_is_built_in_and_nothing_else() {
        let mut on_disk = Vec::new();
        files_under(&ui_dir(), &ui_dir(), &mut on_disk);
        on_disk.sort();
        let mut built_in: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        built_in.sort();
        assert_eq!(
            built_in, on_disk,
            "src/api/console.rs's FILES must list exactly the files of ui/"
        );
    }

    /// The issue's budget: the whole console, gzipped as served, at most 300 KB.
    #[test]
    fn the_console_transfers_at_most_300_kb_gzipped() {
        let total: usize = ASSETS
            .values()
            .map(|a| a.gzip.as_ref().map_or(a.raw.len(), |z| z.len()))
            .sum();
        assert!(total > 0);
        assert!(total <= 300 * 1024, "the console is {total} bytes gzipped");
    }

    #[test]
    fn every_file_has_a_known_type() {
        for (path, _) in FILES {
            assert_ne!(
                mime_of(path),
                "application/octet-stream",
                "{path} would be served without a content type browsers trust"
            );
        }
    }

    #[test]
    fn paths_cannot_leave_the_console_directory() {
        let dir = Path::new("/srv/ui");
        assert_eq!(within(dir, "app.js"), Some(dir.join("app.js")));
        assert_eq!(
            within(dir, "vendor/lit-html/lit-html.js"),
            Some(dir.join("vendor/lit-html/lit-html.js"))
        );
        assert_eq!(within(dir, "../secret"), None);
        assert_eq!(within(dir, "a/../../secret"), None);
        assert_eq!(within(dir, "/etc/passwd"), None);
        assert_eq!(within(dir, "./app.js"), None);
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_take_it() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br;q=1.0, gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn a_matching_etag_is_answered_304_per_encoding() {
        let a = Asset::new("app.js", Bytes::from("let x = 1;\n".repeat(100)));
        let mut req = HeaderMap::new();
        req.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let first = send(&a, &req);
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_ENCODING], "gzip");
        let tag = first.headers()[header::ETAG].clone();
        req.insert(header::IF_NONE_MATCH, tag.clone());
        assert_eq!(send(&a, &req).status(), StatusCode::NOT_MODIFIED);
        // The same tag does not validate the identity encoding: a different body.
        req.remove(header::ACCEPT_ENCODING);
        let plain = send(&a, &req);
        assert_eq!(plain.status(), StatusCode::OK);
        assert_ne!(plain.headers()[header::ETAG], tag);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(plain.headers()[header::CONTENT_SECURITY_POLICY], CSP);
    }
}
