//! The automerge-repo network protocol's frames: CBOR maps with a `type`, decoded into typed
//! messages (checked: document ids, sync message bytes) and encoded for the replies.

use ciborium::Value;

use super::sync_message::decode_sync_message;

/// A frame the node understands, decoded and checked.
#[derive(Debug)]
pub enum Frame {
    Join(Join),
    /// `request` (the client does not have the document yet) or `sync`.
    Sync {
        request: bool,
        document_id: String,
        message: automerge::sync::Message,
    },
    Ephemeral(Ephemeral),
    /// `leave`, remote-heads gossip, types from future versions, and ephemeral messages without
    /// what relaying needs: all ignored.
    Other {
        kind: String,
    },
}

#[derive(Debug)]
pub struct Join {
    pub sender_id: String,
    pub versions: Vec<String>,
    pub storage_id: Option<String>,
    pub ephemeral: bool,
}

/// An ephemeral message, relayed as it came (its own fields, whatever they are, included).
#[derive(Debug)]
pub struct Ephemeral {
    pub sender_id: String,
    pub session_id: String,
    pub count: u64,
    pub document_id: String,
    pub fields: Vec<(Value, Value)>,
}

impl Frame {
    pub fn kind(&self) -> &str {
        match self {
            Frame::Join(_) => "join",
            Frame::Sync { request: true, .. } => "request",
            Frame::Sync { .. } => "sync",
            Frame::Ephemeral(_) => "ephemeral",
            Frame::Other { kind } => kind,
        }
    }
}

/// Why a frame is refused (the connection ends with an `error` frame saying so).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, FrameError> {
    Err(FrameError(why.into()))
}

/// Longest sender and session ids relayed (clients choose them; the relay remembers them).
const MAX_ID_LEN: usize = 256;

/// Decodes one binary frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    let value: Value = match ciborium::from_reader(bytes) {
        Ok(v) => v,
        Err(e) => return err(format!("malformed CBOR frame: {e}")),
    };
    let Value::Map(m) = value else {
        return err("a frame must be a CBOR map");
    };
    let Some(kind) = field_text(&m, "type") else {
        return err("a message needs a `type`");
    };
    match kind.as_str() {
        "join" => {
            let Some(sender_id) = field_text(&m, "senderId") else {
                return err("`join` needs a `senderId`");
            };
            let versions = match field(&m, "supportedProtocolVersions") {
                Some(Value::Array(vs)) => vs
                    .iter()
                    .filter_map(|v| v.as_text().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            let meta = match field(&m, "peerMetadata") {
                Some(Value::Map(pm)) => pm.as_slice(),
                _ => &[],
            };
            Ok(Frame::Join(Join {
                sender_id,
                versions,
                storage_id: field_text(meta, "storageId"),
                ephemeral: field(meta, "isEphemeral")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            }))
        }
        "request" | "sync" => {
            let Some(document_id) = field_text(&m, "documentId") else {
                return err(format!("`{kind}` needs a `documentId`"));
            };
            if !is_document_id(&document_id) {
                return err(format!(
                    "`{document_id}` is not an automerge-repo DocumentId"
                ));
            }
            let Some(data) = field(&m, "data").and_then(byte_string) else {
                return err(format!("`{kind}` needs `data` bytes"));
            };
            let message = decode_sync_message(data)
                .map_err(|e| FrameError(format!("{document_id}: invalid sync message: {e}")))?;
            Ok(Frame::Sync {
                request: kind == "request",
                document_id,
                message,
            })
        }
        "ephemeral" => {
            let (Some(sender_id), Some(session_id), Some(count), Some(document_id)) = (
                field_text(&m, "senderId"),
                field_text(&m, "sessionId"),
                field_u64(&m, "count"),
                field_text(&m, "documentId"),
            ) else {
                return Ok(Frame::Other { kind });
            };
            if sender_id.len() > MAX_ID_LEN
                || session_id.len() > MAX_ID_LEN
                || !is_document_id(&document_id)
            {
                return Ok(Frame::Other { kind });
            }
            Ok(Frame::Ephemeral(Ephemeral {
                sender_id,
                session_id,
                count,
                document_id,
                fields: m,
            }))
        }
        _ => Ok(Frame::Other { kind }),
    }
}

/// Whether `s` is an automerge-repo DocumentId: base58check of 16 bytes.
pub fn is_document_id(s: &str) -> bool {
    bs58::decode(s)
        .with_check(None)
        .into_vec()
        .is_ok_and(|b| b.len() == 16)
}

pub fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}

pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect())
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

fn field<'a>(m: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// A byte string, also as a typed array (RFC 8746 tag 64), which some CBOR encoders send for
/// JavaScript's `Uint8Array`.
fn byte_string(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::Tag(64, inner) => inner.as_bytes().map(Vec::as_slice),
        _ => None,
    }
}

fn field_text(m: &[(Value, Value)], key: &str) -> Option<String> {
    field(m, key).and_then(|v| v.as_text()).map(str::to_string)
}

fn field_u64(m: &[(Value, Value)], key: &str) -> Option<u64> {
    match field(m, key)? {
        Value::Integer(i) => u64::try_from(*i).ok(),
        Value::Float(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pairs: Vec<(&str, Value)>) -> Vec<u8> {
        encode(&map(pairs))
    }

    #[test]
    fn decodes_the_protocol_and_refuses_the_rest() {
        let doc_id = bs58::encode([7u8; 16]).with_check().into_string();
        let doc_id = doc_id.as_str();
        assert!(is_document_id(doc_id));
        assert!(!is_document_id(
            &bs58::encode([7u8; 15]).with_check().into_string()
        ));
        let join = frame(vec![
            ("type", text("join")),
            ("senderId", text("client")),
            ("supportedProtocolVersions", Value::Array(vec![text("1")])),
            (
                "peerMetadata",
                map(vec![
                    ("storageId", text("s1")),
                    ("isEphemeral", Value::Bool(false)),
                ]),
            ),
        ]);
        match decode(&join).unwrap() {
            Frame::Join(j) => {
                assert_eq!(j.sender_id, "client");
                assert_eq!(j.versions, vec!["1".to_string()]);
                assert_eq!(j.storage_id.as_deref(), Some("s1"));
                assert!(!j.ephemeral);
            }
            other => panic!("{other:?}"),
        }
        let doc = automerge::Automerge::new();
        let msg = automerge::sync::SyncDoc::generate_sync_message(
            &doc,
            &mut automerge::sync::State::new(),
        )
        .unwrap();
        let encoded = msg.encode();
        let sync = frame(vec![
            ("type", text("request")),
            ("documentId", text(doc_id)),
            ("data", Value::Bytes(encoded.clone())),
        ]);
        assert!(matches!(
            decode(&sync).unwrap(),
            Frame::Sync { request: true, .. }
        ));
        let tagged = frame(vec![
            ("type", text("sync")),
            ("documentId", text(doc_id)),
            ("data", Value::Tag(64, Box::new(Value::Bytes(encoded)))),
        ]);
        assert!(matches!(
            decode(&tagged).unwrap(),
            Frame::Sync { request: false, .. }
        ));
        for bad in [
            b"\xff".to_vec(),
            encode(&text("not a map")),
            frame(vec![("senderId", text("x"))]),
            frame(vec![("type", text("join"))]),
            frame(vec![("type", text("sync")), ("documentId", text("nope"))]),
            frame(vec![
                ("type", text("sync")),
                ("documentId", text(doc_id)),
                ("data", Value::Bytes(vec![1, 2, 3])),
            ]),
        ] {
            assert!(decode(&bad).is_err(), "{bad:?}");
        }
        let unusable = frame(vec![("type", text("ephemeral")), ("senderId", text("x"))]);
        assert!(matches!(decode(&unusable).unwrap(), Frame::Other { .. }));
    }
}
