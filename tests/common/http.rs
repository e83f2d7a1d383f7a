//! HTTP calls the tests make over and over, each in one line: a GET of JSON or text, a JSON
//! body sent with any method, and the Automerge sync protocol over HTTP run to the end.

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;
use serde_json::Value;

/// `GET url`, its body as JSON (panics when the answer is not JSON).
pub async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON body")
}

/// `GET url`, its body as text.
pub async fn get_text(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("a text body")
}

/// `method url` with `body` as JSON.
pub async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: impl reqwest::IntoUrl,
    body: &Value,
) -> reqwest::Response {
    http.request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

/// Runs the Automerge sync protocol with a document's `/sync` endpoint (`url` ends in `/sync`)
/// as client `client_id` (with a bearer `token` if given) until neither side has anything to
/// say; returns the bytes the client sent. Panics on any answer but 200 and 204.
pub async fn sync_to_end(
    http: &reqwest::Client,
    url: &str,
    client_id: &str,
    token: Option<&str>,
    doc: &mut Automerge,
    state: &mut sync::State,
) -> usize {
    let mut sent = 0;
    for _ in 0..20 {
        let Some(msg) = doc.generate_sync_message(state) else {
            return sent;
        };
        let bytes = msg.encode();
        sent += bytes.len();
        let mut req = http
            .post(url)
            .header("concord-client-id", client_id)
            .header("content-type", "application/octet-stream")
            .body(bytes);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("sync request");
        match r.status().as_u16() {
            200 => {
                let reply =
                    sync::Message::decode(&r.bytes().await.expect("body")).expect("a sync message");
                doc.receive_sync_message(state, reply).expect("applied");
            }
            204 => {}
            s => panic!("sync answered {s}: {}", r.text().await.unwrap_or_default()),
        }
    }
    panic!("sync did not finish in 20 round trips");
}

/// `POST url` with a binary body (Automerge changes or a sync message).
pub async fn post_bytes(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http.post(url).body(body).send().await.expect("POST")
}

/// `method url` with `body` as JSON; the transport error instead of a panic (for requests to a
/// node that may be killed meanwhile).
pub async fn try_send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    http.request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// Reads a Server-Sent Events response event by event.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next event with data (comments and id-only events are skipped); `None` when nothing
    /// arrives within `wait` or the stream ends.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).ok();
                    }
                }
                if let Some(data) = data {
                    return Some(SseEvent { id, event, data });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(c))) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                _ => return None,
            }
        }
    }
}

/// A WebSocket to the node's automerge-repo endpoint (`base` is the node's `http://` URL),
/// upgraded with `token` as a bearer token.
pub async fn automerge_repo_socket(
    base: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("{base}/v1/automerge-repo")
        .replacen("http", "ws", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}
