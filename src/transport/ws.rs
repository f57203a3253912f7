//! The WebSocket transport: the RFC 6455 upgrade on poem's request, then
//! tokio-tungstenite driven directly.
//!
//! poem's own `WebSocket` would do the handshake too, but its `Message` owns a
//! `String` / `Vec<u8>`: every shared broadcast would be copied once per
//! recipient, and a message cannot be written in fragments, so one large
//! initial sync leaves a write buffer the size of the whole document on the
//! connection for the rest of its life (tungstenite keeps the buffer's
//! capacity). Here a broadcast goes out as the reference-counted bytes every
//! recipient shares, and anything over [`FRAGMENT_BYTES`] goes out as
//! fragments that are slices of those shared bytes.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use poem::{
    Body, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use tokio_tungstenite::tungstenite::{
    Utf8Bytes,
    handshake::derive_accept_key,
    protocol::{
        CloseFrame, Role, WebSocketConfig,
        frame::{
            Frame,
            coding::{Data, OpCode},
        },
    },
};
use tokio_util::task::TaskTracker;

pub use tokio_tungstenite::tungstenite::Message;

use crate::rooms::outbox::{MessageParts, Outgoing};

/// An upgraded connection.
pub type Socket = tokio_tungstenite::WebSocketStream<poem::Upgraded>;

/// Largest frame written; longer messages are split into fragments of this size.
pub const FRAGMENT_BYTES: usize = 16 * 1024;

/// Why a request cannot be upgraded.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("a WebSocket upgrade must be a GET request")]
    Method,
    #[error("missing or invalid WebSocket upgrade headers ({0})")]
    Headers(&'static str),
    #[error("unsupported WebSocket version (only 13)")]
    Version,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

/// A validated upgrade request, not yet answered.
pub struct Upgrade {
    accept_key: String,
    on_upgrade: poem::OnUpgrade,
}

impl Upgrade {
    pub fn from_request(req: &Request) -> Result<Self, UpgradeError> {
        if req.method() != Method::GET {
            return Err(UpgradeError::Method);
        }
        let headers = req.headers();
        let has_token = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|value| {
                value
                    .to_str()
                    .is_ok_and(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has_token(header::CONNECTION, "upgrade") {
            return Err(UpgradeError::Headers("Connection: upgrade"));
        }
        if !has_token(header::UPGRADE, "websocket") {
            return Err(UpgradeError::Headers("Upgrade: websocket"));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(UpgradeError::Version);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeError::Headers("Sec-WebSocket-Key"))?;
        let on_upgrade = req.take_upgrade().map_err(|_| UpgradeError::NotUpgradable)?;
        Ok(Self {
            accept_key: derive_accept_key(key.as_bytes()),
            on_upgrade,
        })
    }

    /// Answer 101 and run `serve` on the socket once the upgrade completes,
    /// as a task of `tracker` (so shutdown waits for it).
    pub fn respond<F, Fut>(self, config: WebSocketConfig, tracker: &TaskTracker, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self {
            accept_key,
            on_upgrade,
        } = self;
        tracker.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "WebSocket upgrade did not complete");
                    return;
                }
            };
            let socket = Socket::from_raw_socket(upgraded, Role::Server, Some(config)).await;
            serve(socket).await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept_key)
            .body(Body::empty())
    }
}

/// Shared text as bytes without copying it.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A close frame with a protocol close code and its reason.
pub fn close_message(code: crate::protocol::codes::CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.code().into(),
        reason: Utf8Bytes::from_static(code.reason()),
    }))
}

/// The close code owed to a peer whose frame failed to read, if the failure
/// is the peer's doing: 1009 for a frame or message over the limits, 1002 for
/// a protocol violation, 1007 for text that is not UTF-8. Other failures (the
/// socket itself) get no close frame: there is nobody to send it to.
pub fn close_for_read_error(
    error: &tokio_tungstenite::tungstenite::Error,
) -> Option<crate::protocol::codes::CloseCode> {
    use tokio_tungstenite::tungstenite::{Error, error::ProtocolError};
    match error {
        // The socket ended without a close frame (network loss, 1006): no
        // client to send a close to, and a session that may be resumed.
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Capacity(_) => Some(crate::protocol::codes::CloseCode::MessageTooBig),
        Error::Protocol(_) => Some(crate::protocol::codes::CloseCode::ProtocolError),
        Error::Utf8(_) => Some(crate::protocol::codes::CloseCode::InvalidPayload),
        _ => None,
    }
}

/// A JSON text message whose string field `field` (encoded empty in
/// `frame`, as `"field":""`) holds `value`: the frame's two halves around
/// the shared value, so `value` is never copied into each recipient's message.
/// `value` must need no JSON escaping (base64 does not).
pub fn text_around(frame: &str, field: &str, value: Bytes) -> Outgoing {
    let marker = format!("\"{field}\":\"");
    // Values are escaped strings, so an unescaped `"field":"` is the key itself.
    let Some(start) = frame.rfind(&marker) else {
        return Outgoing::Text(frame.into());
    };
    let split = start + marker.len();
    let (head, tail) = frame.split_at(split);
    Outgoing::Parts(Box::new(MessageParts {
        text: true,
        parts: vec![
            Bytes::copy_from_slice(head.as_bytes()),
            value,
            Bytes::copy_from_slice(tail.as_bytes()),
        ],
    }))
}

/// The frames that put `outgoing` on the wire: one for anything up to
/// [`FRAGMENT_BYTES`], fragments past it. A close is sent by the writer itself.
pub fn frames(outgoing: Outgoing) -> Vec<Message> {
    let (text, parts) = match outgoing {
        Outgoing::Text(text) if text.len() <= FRAGMENT_BYTES => {
            // SAFETY: the bytes are those of a `str`.
            let text = unsafe { Utf8Bytes::from_bytes_unchecked(Bytes::from_owner(SharedText(text))) };
            return vec![Message::Text(text)];
        }
        Outgoing::Binary(bytes) if bytes.len() <= FRAGMENT_BYTES => {
            return vec![Message::Binary(Bytes::from_owner(bytes))];
        }
        Outgoing::Text(text) => (true, vec![Bytes::from_owner(SharedText(text))]),
        Outgoing::Binary(bytes) => (false, vec![Bytes::from_owner(bytes)]),
        Outgoing::Parts(message) => (message.text, message.parts),
        Outgoing::Ping => return vec![Message::Ping(Bytes::new())],
        Outgoing::Close(code) => return vec![close_message(code)],
        // Resolved by the writer before framing (its latest content).
        Outgoing::Latest(_) => return Vec::new(),
    };
    fragments(text, &parts)
}

/// One message made of `parts` (concatenated), as frames of at most
/// [`FRAGMENT_BYTES`] that slice the parts rather than copy them.
fn fragments(text: bool, parts: &[Bytes]) -> Vec<Message> {
    let mut chunks: Vec<Bytes> = Vec::new();
    for part in parts {
        let mut offset = 0;
        while offset < part.len() {
            let end = (offset + FRAGMENT_BYTES).min(part.len());
            chunks.push(part.slice(offset..end));
            offset = end;
        }
    }
    if chunks.is_empty() {
        chunks.push(Bytes::new());
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let opcode = match (index, text) {
                (0, true) => OpCode::Data(Data::Text),
                (0, false) => OpCode::Data(Data::Binary),
                _ => OpCode::Data(Data::Continue),
            };
            Message::Frame(Frame::message(chunk, opcode, index == last))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_parts(messages: &[Message]) -> Vec<(OpCode, bool, Vec<u8>)> {
        messages
            .iter()
            .map(|m| match m {
                Message::Frame(f) => (f.header().opcode, f.header().is_final, f.payload().to_vec()),
                other => panic!("expected a raw frame, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_queue_slot_stays_small() {
        // Every connection's queue allocates slots of this size in blocks of 32.
        assert!(
            std::mem::size_of::<Outgoing>() <= 24,
            "{}",
            std::mem::size_of::<Outgoing>()
        );
    }

    #[test]
    fn small_messages_are_one_frame_sharing_the_bytes() {
        let text: Arc<str> = r#"{"type":"cursor_move"}"#.into();
        let frames = frames(Outgoing::Text(text.clone()));
        assert_eq!(frames.len(), 1);
        match &frames[0] {
            Message::Text(t) => assert_eq!(t.as_str().as_ptr(), text.as_ptr(), "not copied"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_messages_are_fragmented_and_reassemble_exactly() {
        let prefix = Bytes::from_static(br#"{"type":"sync_step2","update":""#);
        let body = Bytes::from(vec![b'A'; FRAGMENT_BYTES * 2 + 10]);
        let suffix = Bytes::from_static(br#""}"#);
        let frames = frames(Outgoing::Parts(Box::new(MessageParts {
            text: true,
            parts: vec![prefix.clone(), body.clone(), suffix.clone()],
        })));
        let parts = frame_parts(&frames);
        assert!(parts.iter().all(|(_, _, p)| p.len() <= FRAGMENT_BYTES));
        assert_eq!(parts[0].0, OpCode::Data(Data::Text));
        assert!(
            parts[1..]
                .iter()
                .all(|(op, _, _)| *op == OpCode::Data(Data::Continue))
        );
        let finals: Vec<bool> = parts.iter().map(|(_, fin, _)| *fin).collect();
        assert_eq!(finals.iter().filter(|f| **f).count(), 1);
        assert_eq!(finals.last(), Some(&true));
        let joined: Vec<u8> = parts.into_iter().flat_map(|(_, _, p)| p).collect();
        assert_eq!(joined, [&prefix[..], &body[..], &suffix[..]].concat());
    }

    #[test]
    fn a_field_is_filled_in_around_a_shared_value() {
        let frame = r#"{"type":"sync_step2","id":"\"update\":\"","document_id":"d","update":""}"#;
        let Outgoing::Parts(message) = text_around(frame, "update", Bytes::from_static(b"QUJD")) else {
            panic!("parts expected");
        };
        assert!(message.text);
        let joined = String::from_utf8(message.parts.concat()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(value["update"], "QUJD");
        assert_eq!(value["id"], r#""update":""#);
    }

    #[test]
    fn an_empty_message_is_one_final_frame() {
        let frames = frames(Outgoing::Parts(Box::new(MessageParts {
            text: false,
            parts: Vec::new(),
        })));
        let parts = frame_parts(&frames);
        assert_eq!(parts, vec![(OpCode::Data(Data::Binary), true, Vec::new())]);
    }
}
