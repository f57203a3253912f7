//! The JSON protocol on `/ws`: client frames, server messages, error and close codes.
//!
//! Pure: no sockets, no database. A text frame is decoded once into a
//! [`ClientFrame`] (validated domain types, base64 already decoded) or into a
//! [`FrameError`] that carries the error code and the echoed `id`. Server
//! messages are encoded once into shared bytes ([`Encoded`]) and fanned out.

use serde::Serialize;
use uuid::Uuid;

use crate::{
    model::{
        ids::{DocumentId, MessageId},
        presence::{Cursor, EditingStopReason, LeaveReason, Presence, Selection},
    },
    protocol::codes::ErrorCode,
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
        /// Present this session again with `/ws?resume=` after a dropped
        /// socket (absent when resuming is off).
        #[serde(skip_serializing_if = "Option::is_none")]
        resume_token: Option<&'a str>,
        /// This connection took over a dropped session (`?resume=`).
        resumed: bool,
    },
    PresenceList {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
        document_id: &'a DocumentId,
        users: &'a [Presence],
        /// Sent on resume instead of the messages missed (they overflowed
        /// the resume buffer): replace what you know of the room with it.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        resync: bool,
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
mod decode;
mod encode;

pub use app::AppData;
pub use decode::{DecodeLimits, decode_base64, decode_client_frame};
pub use encode::{Base64, Encoded, encode_error};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::ids::MAX_MESSAGE_ID_BYTES,
        protocol::codes::{FrameError, ProtocolError},
    };
    use base64::{Engine, engine::general_purpose::STANDARD as BASE64};

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
