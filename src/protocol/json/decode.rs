//! Client frames in: one pass of serde into a flat shape, then validation
//! into a [`ClientMessage`] (domain types, base64 decoded, limits checked)
//! or a [`FrameError`] carrying the code and the `id` to echo.

use std::borrow::Cow;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Deserializer};

use super::{ClientFrame, ClientMessage, app};
use crate::{
    model::{
        ids::{DocumentId, MAX_MESSAGE_ID_BYTES, MessageId},
        presence::{Cursor, MAX_COORDINATE, Selection},
    },
    protocol::codes::{ErrorCode, FrameError, ProtocolError},
};

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
