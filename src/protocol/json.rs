//! The JSON protocol on `/ws`: client frames, server messages, error and close codes.
//!
//! Pure: no sockets, no database. A text frame is decoded once into a
//! [`ClientFrame`] (validated domain types, base64 already decoded) or into a
//! [`FrameError`] that carries the error code and the echoed `id`. Server
//! messages are encoded once into shared bytes ([`Encoded`]) and fanned out.

use std::borrow::Cow;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::{
    model::{
        ids::{DocumentId, MAX_MESSAGE_ID_BYTES, MessageId},
        presence::{Cursor, EditingStopReason, LeaveReason, MAX_COORDINATE, Presence, Selection},
    },
    protocol::codes::{ErrorCode, FrameError, ProtocolError},
};

/// A message from a client, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    JoinDocument {
        document_id: DocumentId,
    },
    LeaveDocument {
        document_id: DocumentId,
    },
    CursorMove {
        document_id: DocumentId,
        cursor: Cursor,
    },
    SelectionChange {
        document_id: DocumentId,
        selection: Option<Selection>,
    },
    EditingStart {
        document_id: DocumentId,
    },
    EditingStop {
        document_id: DocumentId,
    },
    Heartbeat,
    /// A y-protocols sync step 1: the client's state vector (v1 encoded).
    SyncStep1 {
        document_id: DocumentId,
        state_vector: Vec<u8>,
    },
    /// A v1 update, from sync step 2 or a live edit; the server treats both alike.
    SyncUpdate {
        document_id: DocumentId,
        update: Vec<u8>,
    },
    /// A y-protocols awareness update.
    Awareness {
        document_id: DocumentId,
        update: Vec<u8>,
    },
    /// A fresh token for this connection (same user), before the old one expires.
    RefreshToken {
        token: String,
    },
    /// An app event for the document's other members (never stored).
    Broadcast {
        document_id: DocumentId,
        event: String,
        data: AppData,
    },
    /// An app event for every connection of a user who shares a document
    /// with the sender (never stored).
    SendToUser {
        user_id: String,
        event: String,
        data: AppData,
    },
}

impl ClientMessage {
    /// The wire `type` (`sync_step2` and `sync_update` both read as `sync_update`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JoinDocument { .. } => "join_document",
            Self::LeaveDocument { .. } => "leave_document",
            Self::CursorMove { .. } => "cursor_move",
            Self::SelectionChange { .. } => "selection_change",
            Self::EditingStart { .. } => "editing_start",
            Self::EditingStop { .. } => "editing_stop",
            Self::Heartbeat => "heartbeat",
            Self::SyncStep1 { .. } => "sync_step1",
            Self::SyncUpdate { .. } => "sync_update",
            Self::Awareness { .. } => "awareness",
            Self::RefreshToken { .. } => "refresh_token",
            Self::Broadcast { .. } => "broadcast",
            Self::SendToUser { .. } => "send_to_user",
        }
    }

    pub fn document_id(&self) -> Option<&DocumentId> {
        match self {
            Self::JoinDocument { document_id }
            | Self::LeaveDocument { document_id }
            | Self::CursorMove { document_id, .. }
            | Self::SelectionChange { document_id, .. }
            | Self::EditingStart { document_id }
            | Self::EditingStop { document_id }
            | Self::SyncStep1 { document_id, .. }
            | Self::SyncUpdate { document_id, .. }
            | Self::Awareness { document_id, .. }
            | Self::Broadcast { document_id, .. } => Some(document_id),
            Self::Heartbeat | Self::RefreshToken { .. } | Self::SendToUser { .. } => None,
        }
    }
}

/// One decoded client frame: the message and the `id` to echo.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub id: Option<MessageId>,
    pub message: ClientMessage,
}

/// Messages the server sends. Field names are the wire contract.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Connected {
        connection_id: Uuid,
        session_id: Uuid,
        user_id: &'a str,
        heartbeat_interval_ms: u64,
    },
    PresenceList {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
        document_id: &'a DocumentId,
        users: &'a [Presence],
    },
    UserJoined {
        document_id: &'a DocumentId,
        user: &'a Presence,
        /// No other connection of this user is in the document (any instance).
        first_device: bool,
    },
    UserLeft {
        document_id: &'a DocumentId,
        user_id: &'a str,
        connection_id: Uuid,
        reason: LeaveReason,
        /// No connection of this user remains in the document (any instance).
        last_device: bool,
    },
    CursorMove {
        document_id: &'a DocumentId,
        user_id: &'a str,
        connection_id: Uuid,
        cursor: Cursor,
    },
    SelectionChange {
        document_id: &'a DocumentId,
        user_id: &'a str,
        connection_id: Uuid,
        selection: Option<Selection>,
    },
    EditingStart {
        document_id: &'a DocumentId,
        user_id: &'a str,
        connection_id: Uuid,
    },
    EditingStop {
        document_id: &'a DocumentId,
        user_id: &'a str,
        connection_id: Uuid,
        reason: EditingStopReason,
    },
    HeartbeatAck {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
        /// Milliseconds since the Unix epoch.
        server_time: i64,
    },
    Ack {
        id: &'a MessageId,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    SyncStep1 {
        document_id: &'a DocumentId,
        state_vector: Base64<'a>,
    },
    SyncStep2 {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
        document_id: &'a DocumentId,
        update: Base64<'a>,
    },
    SyncUpdate {
        document_id: &'a DocumentId,
        update: Base64<'a>,
        user_id: &'a str,
    },
    Awareness {
        document_id: &'a DocumentId,
        update: Base64<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<&'a str>,
    },
    /// The connection's token expires soon: send `refresh_token` before
    /// `expires_at` (unix seconds) or be closed with 4004.
    TokenExpiring {
        expires_at: u64,
    },
    /// A `refresh_token` was accepted; the new token's expiry.
    TokenRefreshed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// This connection may no longer open the document (a refreshed token
    /// without it, or an admin revocation): it has been left.
    DocumentRevoked {
        document_id: &'a DocumentId,
    },
    /// Another member's app event (`connection_id` is null when a backend
    /// sent it over REST).
    Broadcast {
        document_id: &'a DocumentId,
        event: &'a str,
        data: &'a AppData,
        user_id: &'a str,
        connection_id: Option<Uuid>,
    },
    /// An app event addressed to this user.
    Direct {
        from_user_id: &'a str,
        from_connection_id: Option<Uuid>,
        event: &'a str,
        data: &'a AppData,
    },
}

pub mod app;
mod encode;

pub use app::AppData;
pub use encode::{Base64, Encoded, encode_error};

/// Limits applied while decoding a frame.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest control (non-Yjs) frame, in bytes.
    pub max_message_bytes: usize,
    /// Largest decoded Yjs payload, in bytes.
    pub max_update_bytes: usize,
    /// Largest `data` of an app message, in bytes of JSON.
    pub max_broadcast_bytes: usize,
}

/// The flat shape every client frame is read into in one pass; validation
/// turns it into a [`ClientMessage`]. Unknown fields are ignored so clients
/// may add their own.
#[derive(Deserialize)]
struct WireFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    id: Option<MessageId>,
    #[serde(borrow)]
    document_id: Option<Cow<'a, str>>,
    cursor: Option<WireCursor>,
    #[serde(default, deserialize_with = "present")]
    selection: Option<Option<WireSelection>>,
    #[serde(borrow)]
    state_vector: Option<Cow<'a, str>>,
    #[serde(borrow)]
    update: Option<Cow<'a, str>>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "raw_present")]
    data: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireCursor {
    line: i64,
    column: i64,
}

#[derive(Deserialize)]
struct WireSelection {
    start: WireCursor,
    end: WireCursor,
}

/// Distinguishes `"selection": null` (clear) from an absent field.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A present field as its raw JSON, `null` included (an `Option` would read
/// `null` as absent).
fn raw_present<'de, D>(deserializer: D) -> Result<Option<&'de serde_json::value::RawValue>, D::Error>
where
    D: Deserializer<'de>,
{
    <&serde_json::value::RawValue>::deserialize(deserializer).map(Some)
}

/// Only what is needed to answer a frame that failed to decode.
#[derive(Deserialize)]
struct WireProbe {
    id: Option<MessageId>,
}

/// Every message type a client may send, for `unknown_type` errors.
const KNOWN_TYPES: &[&str] = &[
    "join_document",
    "leave_document",
    "cursor_move",
    "selection_change",
    "editing_start",
    "editing_stop",
    "heartbeat",
    "sync_step1",
    "sync_step2",
    "sync_update",
    "awareness",
    "refresh_token",
    "broadcast",
    "send_to_user",
];

fn is_yjs_type(kind: &str) -> bool {
    matches!(kind, "sync_step1" | "sync_step2" | "sync_update" | "awareness")
}

/// Decode and validate one text frame.
pub fn decode_client_frame(text: &str, limits: DecodeLimits) -> Result<ClientFrame, FrameError> {
    // serde would read a JSON array into the struct field by field; only objects are messages.
    if !text.trim_start().starts_with('{') {
        let error = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => ProtocolError::invalid("a message must be a JSON object with a \"type\""),
            Err(error) => ProtocolError::new(ErrorCode::InvalidJson, format!("not valid JSON: {error}")),
        };
        return Err(FrameError { id: None, error });
    }
    let frame: WireFrame = serde_json::from_str(text).map_err(|error| {
        let id = serde_json::from_str::<WireProbe>(text)
            .ok()
            .and_then(|probe| probe.id)
            .filter(echoable);
        let error = if error.is_data() {
            if text.trim_start().starts_with('{') {
                ProtocolError::invalid(error.to_string())
            } else {
                ProtocolError::invalid("a message must be a JSON object with a \"type\"")
            }
        } else {
            ProtocolError::new(ErrorCode::InvalidJson, format!("not valid JSON: {error}"))
        };
        FrameError { id, error }
    })?;
    // An over-long string id is refused, and not echoed either.
    let id = frame.id.clone().filter(echoable);
    validate(frame, text.len(), limits)
        .map_err(|error| FrameError {
            id: id.clone(),
            error,
        })
        .map(|message| ClientFrame { id, message })
}

/// Whether an id may be sent back in a reply (an over-long one is not).
fn echoable(id: &MessageId) -> bool {
    !matches!(id, MessageId::String(s) if s.len() > MAX_MESSAGE_ID_BYTES)
}

fn validate(
    frame: WireFrame,
    frame_bytes: usize,
    limits: DecodeLimits,
) -> Result<ClientMessage, ProtocolError> {
    if let Some(MessageId::String(id)) = &frame.id
        && id.len() > MAX_MESSAGE_ID_BYTES
    {
        return Err(ProtocolError::invalid(format!(
            "id must be at most {MAX_MESSAGE_ID_BYTES} bytes"
        )));
    }
    let Some(kind) = frame.kind.as_deref() else {
        return Err(ProtocolError::invalid("missing \"type\""));
    };
    if !KNOWN_TYPES.contains(&kind) {
        return Err(ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {:?}",
                crate::model::text::truncate_utf8(kind, 64)
            ),
        ));
    }
    if frame_bytes > limits.max_message_bytes && !is_yjs_type(kind) {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!(
                "{kind} messages are limited to {} bytes",
                limits.max_message_bytes
            ),
        ));
    }
    if kind == "heartbeat" {
        return Ok(ClientMessage::Heartbeat);
    }
    if kind == "refresh_token" {
        let token = frame
            .token
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ProtocolError::invalid("missing \"token\""))?;
        return Ok(ClientMessage::RefreshToken {
            token: token.into_owned(),
        });
    }
    if kind == "send_to_user" {
        let user_id = frame
            .user_id
            .filter(|id| !id.is_empty() && id.len() <= 256)
            .ok_or_else(|| ProtocolError::invalid("\"user_id\" must be 1-256 bytes"))?;
        return Ok(ClientMessage::SendToUser {
            user_id: user_id.into_owned(),
            event: app::validate_event(frame.event.as_deref())?,
            data: app::validate_data(frame.data, limits.max_broadcast_bytes)?,
        });
    }
    let document_id = DocumentId::parse(
        frame
            .document_id
            .as_deref()
            .ok_or_else(|| ProtocolError::invalid("missing \"document_id\""))?,
    )?;
    let payload = |field: Option<Cow<str>>, name: &'static str| -> Result<Vec<u8>, ProtocolError> {
        let text = field.ok_or_else(|| ProtocolError::invalid(format!("missing \"{name}\"")))?;
        decode_base64(&text, limits.max_update_bytes, name)
    };
    Ok(match kind {
        "join_document" => ClientMessage::JoinDocument { document_id },
        "leave_document" => ClientMessage::LeaveDocument { document_id },
        "cursor_move" => {
            let cursor = frame
                .cursor
                .ok_or_else(|| ProtocolError::invalid("missing \"cursor\""))?;
            ClientMessage::CursorMove {
                document_id,
                cursor: cursor.validate("cursor")?,
            }
        }
        "selection_change" => {
            let selection = frame
                .selection
                .ok_or_else(|| ProtocolError::invalid("missing \"selection\" (use null to clear it)"))?
                .map(|selection| -> Result<Selection, ProtocolError> {
                    Ok(Selection {
                        start: selection.start.validate("selection.start")?,
                        end: selection.end.validate("selection.end")?,
                    })
                })
                .transpose()?;
            ClientMessage::SelectionChange {
                document_id,
                selection,
            }
        }
        "editing_start" => ClientMessage::EditingStart { document_id },
        "editing_stop" => ClientMessage::EditingStop { document_id },
        "sync_step1" => ClientMessage::SyncStep1 {
            document_id,
            state_vector: payload(frame.state_vector, "state_vector")?,
        },
        "sync_step2" | "sync_update" => ClientMessage::SyncUpdate {
            document_id,
            update: payload(frame.update, "update")?,
        },
        "awareness" => ClientMessage::Awareness {
            document_id,
            update: payload(frame.update, "update")?,
        },
        "broadcast" => ClientMessage::Broadcast {
            document_id,
            event: app::validate_event(frame.event.as_deref())?,
            data: app::validate_data(frame.data, limits.max_broadcast_bytes)?,
        },
        _ => unreachable!("every known type is matched above"),
    })
}

impl WireCursor {
    fn validate(self, what: &str) -> Result<Cursor, ProtocolError> {
        let check = |value: i64, field: &str| -> Result<u32, ProtocolError> {
            if !(0..=MAX_COORDINATE).contains(&value) {
                return Err(ProtocolError::invalid(format!(
                    "{what}.{field} must be between 0 and {MAX_COORDINATE}"
                )));
            }
            Ok(value as u32)
        };
        Ok(Cursor {
            line: check(self.line, "line")?,
            column: check(self.column, "column")?,
        })
    }
}

/// Decode standard base64, refusing payloads over `max_bytes` before allocating.
pub fn decode_base64(text: &str, max_bytes: usize, field: &str) -> Result<Vec<u8>, ProtocolError> {
    if text.len() / 4 * 3 > max_bytes + 2 {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!("{field} is larger than {max_bytes} bytes"),
        ));
    }
    let bytes = BASE64.decode(text).map_err(|error| {
        ProtocolError::new(
            ErrorCode::InvalidUpdate,
            format!("{field} is not valid base64: {error}"),
        )
    })?;
    if bytes.len() > max_bytes {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!("{field} is larger than {max_bytes} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_message_bytes: 1024,
        max_update_bytes: 64,
        max_broadcast_bytes: 16 * 1024,
    };

    fn decode(text: &str) -> Result<ClientFrame, FrameError> {
        decode_client_frame(text, LIMITS)
    }

    fn code(text: &str) -> ErrorCode {
        decode(text).unwrap_err().error.code
    }

    #[test]
    fn an_over_long_id_is_not_echoed_when_the_frame_does_not_parse() {
        // fuzz/regressions/client_frame-long-id-echoed-on-parse-error: a
        // duplicate field fails serde, and the id read for the error reply
        // skipped the length check.
        let long = "i".repeat(MAX_MESSAGE_ID_BYTES + 1);
        let text = format!(r#"{{"type":"heartbeat","document_id":"a","document_id":"b","id":"{long}"}}"#);
        let error = decode(&text).unwrap_err();
        assert_eq!(error.id, None);
        let short = r#"{"type":"heartbeat","document_id":"a","document_id":"b","id":"ok"}"#;
        assert_eq!(
            decode(short).unwrap_err().id,
            Some(MessageId::String("ok".into()))
        );
    }

    #[test]
    fn a_numeric_id_is_echoed_as_the_number_it_was_read_as() {
        // fuzz/regressions/client_frame-float-id-not-round-tripped: without
        // exact float parsing, 1.3333333333333335 (how the long id below is
        // written back) read back as 1.3333333333333337.
        let frame = decode(r#"{"type":"heartbeat","id":1.33333333333333333333333333333333333335}"#).unwrap();
        let id = frame.id.unwrap();
        let echoed = serde_json::to_string(&id).unwrap();
        let again = decode(&format!(r#"{{"type":"heartbeat","id":{echoed}}}"#)).unwrap();
        assert_eq!(again.id, Some(id));
    }

    #[test]
    fn cursor_move_decodes_with_numeric_id() {
        let frame =
            decode(r#"{"type":"cursor_move","id":7,"document_id":"doc-1","cursor":{"line":10,"column":5}}"#)
                .unwrap();
        assert_eq!(frame.id, Some(MessageId::Number(7.into())));
        assert_eq!(
            frame.message,
            ClientMessage::CursorMove {
                document_id: DocumentId::parse("doc-1").unwrap(),
                cursor: Cursor { line: 10, column: 5 }
            }
        );
    }

    #[test]
    fn selection_null_clears_and_absent_is_an_error() {
        let frame = decode(r#"{"type":"selection_change","document_id":"d","selection":null}"#).unwrap();
        assert!(matches!(
            frame.message,
            ClientMessage::SelectionChange { selection: None, .. }
        ));
        assert_eq!(
            code(r#"{"type":"selection_change","document_id":"d"}"#),
            ErrorCode::InvalidMessage
        );
        let frame = decode(
            r#"{"type":"selection_change","document_id":"d","selection":{"start":{"line":3,"column":1},"end":{"line":1,"column":0}}}"#,
        )
        .unwrap();
        assert!(matches!(
            frame.message,
            ClientMessage::SelectionChange {
                selection: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn each_bad_shape_has_its_code() {
        assert_eq!(code("{not json"), ErrorCode::InvalidJson);
        assert_eq!(code(""), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"["join_document",7,"doc-1",null,null,null,null]"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(decode("[5]").unwrap_err().id, None);
        let long_id = format!(r#"{{"type":"heartbeat","id":"{}"}}"#, "i".repeat(200));
        let error = decode(&long_id).unwrap_err();
        assert_eq!((error.error.code, error.id), (ErrorCode::InvalidMessage, None));
        assert_eq!(code("42"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"document_id":"d"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"teleport"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"join_document"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"join_document","document_id":""}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"join_document","document_id":7}"#),
            ErrorCode::InvalidMessage
        );
        let long = format!(
            r#"{{"type":"join_document","document_id":"{}"}}"#,
            "a".repeat(257)
        );
        assert_eq!(code(&long), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"join_document","document_id":"a\u0000b"}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn coordinates_must_be_non_negative_and_bounded() {
        for cursor in [
            r#"{"line":-1,"column":0}"#,
            r#"{"line":0,"column":99999999999}"#,
            r#"{"line":1.5,"column":0}"#,
            r#"{"line":"1","column":0}"#,
            r#"{"line":1}"#,
        ] {
            let text = format!(r#"{{"type":"cursor_move","document_id":"d","cursor":{cursor}}}"#);
            assert_eq!(code(&text), ErrorCode::InvalidMessage, "{cursor}");
        }
    }

    #[test]
    fn id_is_echoed_even_when_the_message_is_invalid() {
        let error =
            decode(r#"{"type":"cursor_move","id":"abc","document_id":"d","cursor":{"line":-1,"column":0}}"#)
                .unwrap_err();
        assert_eq!(error.id, Some(MessageId::String("abc".into())));
        let error = decode(r#"{"type":"cursor_move","id":"abc","cursor":"oops"}"#).unwrap_err();
        assert_eq!(error.id, Some(MessageId::String("abc".into())));
    }

    #[test]
    fn oversized_control_frames_are_too_large_but_updates_may_be_bigger() {
        let padding = "x".repeat(2000);
        let text = format!(r#"{{"type":"heartbeat","pad":"{padding}"}}"#);
        assert_eq!(code(&text), ErrorCode::TooLarge);
        let update = BASE64.encode([0u8; 60]);
        let text =
            format!(r#"{{"type":"sync_update","document_id":"d","update":"{update}","pad":"{padding}"}}"#);
        assert!(decode(&text).is_ok());
    }

    #[test]
    fn base64_payloads_are_checked() {
        assert_eq!(
            code(r#"{"type":"sync_update","document_id":"d","update":"!!!"}"#),
            ErrorCode::InvalidUpdate
        );
        let big = BASE64.encode([0u8; 65]);
        assert_eq!(
            code(&format!(
                r#"{{"type":"sync_update","document_id":"d","update":"{big}"}}"#
            )),
            ErrorCode::TooLarge
        );
        let frame = decode(r#"{"type":"sync_step2","document_id":"d","update":"AAA="}"#).unwrap();
        assert_eq!(
            frame.message,
            ClientMessage::SyncUpdate {
                document_id: DocumentId::parse("d").unwrap(),
                update: vec![0, 0]
            }
        );
    }

    #[test]
    fn server_messages_use_the_documented_shapes() {
        let doc = DocumentId::parse("doc-1").unwrap();
        let id = MessageId::Number(3.into());
        let text = ServerMessage::CursorMove {
            document_id: &doc,
            user_id: "alice",
            connection_id: Uuid::nil(),
            cursor: Cursor { line: 1, column: 2 },
        }
        .encode();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "cursor_move");
        assert_eq!(value["cursor"]["column"], 2);
        let error = encode_error(&ProtocolError::new(ErrorCode::NotJoined, "join first"), Some(&id));
        assert_eq!(
            &*error,
            r#"{"type":"error","code":"not_joined","message":"join first","id":3}"#
        );
        let value: serde_json::Value = serde_json::from_str(
            &ServerMessage::SyncUpdate {
                document_id: &doc,
                update: Base64(&[1, 2, 3]),
                user_id: "a",
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(value["update"], "AQID");
    }
}
