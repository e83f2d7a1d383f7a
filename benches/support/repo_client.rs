//! A client of the automerge-repo network protocol (CBOR frames over a WebSocket), speaking it
//! directly with Rust Automerge (no repo machinery), so a benchmark measures the server: join,
//! send or request documents, and drive their sync messages to given heads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash};
use ciborium::Value;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

pub fn frame(pairs: Vec<(&str, Value)>) -> Message {
    let mut out = Vec::new();
    let _ = ciborium::into_writer(
        &Value::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect()),
        &mut out,
    );
    Message::Binary(out.into())
}

pub fn field(m: &Value, key: &str) -> Option<Value> {
    match m {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

pub fn new_document_id() -> String {
    bs58::encode(uuid::Uuid::new_v4().as_bytes())
        .with_check()
        .into_string()
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` (with `token` as a bearer token when given) and joins as `peer`; the
/// socket and the server's peer id.
pub async fn connect(url: &str, peer: &str, token: Option<&str>) -> (Socket, String) {
    let mut req = url.into_client_request().expect("request");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    ws.send(frame(vec![
        ("type", text("join")),
        ("senderId", text(peer)),
        ("supportedProtocolVersions", Value::Array(vec![text("1")])),
        (
            "peerMetadata",
            Value::Map(vec![(text("isEphemeral"), Value::Bool(true))]),
        ),
    ]))
    .await
    .expect("join");
    loop {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            continue;
        };
        let v: Value = ciborium::from_reader(&b[..]).expect("cbor");
        if field(&v, "type")
            .and_then(|t| t.as_text().map(str::to_string))
            .as_deref()
            == Some("peer")
        {
            let server = field(&v, "senderId")
                .and_then(|s| s.as_text().map(str::to_string))
                .unwrap_or_default();
            return (ws, server);
        }
    }
}

/// A document being synced, until it reaches `target` heads.
pub struct Tracked {
    pub doc: Automerge,
    pub state: sync::State,
    pub target: Vec<ChangeHash>,
    pub started: Instant,
    pub done: Option<Duration>,
}

/// Drives sync messages for `docs` on one connection until every document reaches its target heads
/// on the other side (`towards_server`) or here (loading).
pub async fn drive(
    ws: &mut Socket,
    me: &str,
    server: &str,
    docs: &mut HashMap<String, Tracked>,
    towards_server: bool,
) {
    let mut pending = docs.len();
    let deadline = Instant::now() + Duration::from_secs(300);
    while pending > 0 {
        assert!(Instant::now() < deadline, "sync did not finish");
        let Some(Ok(msg)) = ws.next().await else {
            panic!("connection lost")
        };
        let Message::Binary(b) = msg else { continue };
        let v: Value = ciborium::from_reader(&b[..]).expect("cbor");
        let kind = field(&v, "type")
            .and_then(|t| t.as_text().map(str::to_string))
            .unwrap_or_default();
        if kind != "sync" {
            assert_ne!(kind, "error", "server error: {v:?}");
            continue;
        }
        let id = field(&v, "documentId")
            .and_then(|t| t.as_text().map(str::to_string))
            .unwrap_or_default();
        let data = field(&v, "data")
            .and_then(|d| d.as_bytes().cloned())
            .unwrap_or_default();
        let Some(t) = docs.get_mut(&id) else { continue };
        let m = sync::Message::decode(&data).expect("sync message");
        let their_heads = m.heads.clone();
        t.doc
            .receive_sync_message(&mut t.state, m)
            .expect("receive");
        let reached = if towards_server {
            their_heads == t.target
        } else {
            t.doc.get_heads() == t.target
        };
        if reached && t.done.is_none() {
            t.done = Some(t.started.elapsed());
            pending -= 1;
        }
        if let Some(reply) = t.doc.generate_sync_message(&mut t.state) {
            ws.send(frame(vec![
                ("type", text("sync")),
                ("senderId", text(me)),
                ("targetId", text(server)),
                ("documentId", text(&id)),
                ("data", Value::Bytes(reply.encode())),
            ]))
            .await
            .expect("send");
        }
    }
}

/// A fresh connection (with `token` when given) requests every document and waits until it has
/// each at its heads; the time from connecting to the last.
pub async fn fetch(url: &str, token: Option<&str>, docs: &[(String, Vec<ChangeHash>)]) -> Duration {
    let me = format!("loader-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    let (mut ws, server) = connect(url, &me, token).await;
    let mut tracked = HashMap::new();
    for (id, heads) in docs {
        let doc = Automerge::new();
        let mut state = sync::State::new();
        let msg = doc
            .generate_sync_message(&mut state)
            .expect("request message");
        ws.send(frame(vec![
            ("type", text("request")),
            ("senderId", text(&me)),
            ("targetId", text(&server)),
            ("documentId", text(id)),
            ("data", Value::Bytes(msg.encode())),
        ]))
        .await
        .expect("send");
        tracked.insert(
            id.clone(),
            Tracked {
                doc,
                state,
                target: heads.clone(),
                started,
                done: None,
            },
        );
    }
    drive(&mut ws, &me, &server, &mut tracked, false).await;
    let took = started.elapsed();
    let _ = ws.close(None).await;
    took
}
