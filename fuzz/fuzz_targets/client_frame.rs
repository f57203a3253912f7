//! One JSON text frame from a client on `/ws`.
//!
//! Properties:
//! - decoding is deterministic and never panics;
//! - an accepted frame honours every limit (control frame size, payload
//!   size, document id, coordinates, echoed id length);
//! - an accepted frame, written back as canonical JSON, decodes to the same
//!   frame (nothing is lost or invented between the wire and the domain type);
//! - an echoed id on an error is never longer than allowed;
//! - the decoded Yjs payloads go through their own decoders without panicking.
#![no_main]

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tandem::{crdt::awareness, protocol::json::{ClientFrame, ClientMessage, DecodeLimits, decode_client_frame}, model::presence::Cursor, model::presence::MAX_COORDINATE, model::ids::MAX_DOCUMENT_ID_BYTES, model::ids::MAX_MESSAGE_ID_BYTES, model::ids::MessageId, crdt::sync};

const LIMITS: DecodeLimits = DecodeLimits {
    max_message_bytes: 512,
    max_update_bytes: 256,
    max_broadcast_bytes: 16 * 1024,
};
const ROOMY: DecodeLimits = DecodeLimits {
    max_message_bytes: 1 << 20,
    max_update_bytes: 256,
    max_broadcast_bytes: 16 * 1024,
};

fn cursor(c: &Cursor) -> Value {
    assert!(i64::from(c.line) <= MAX_COORDINATE && i64::from(c.column) <= MAX_COORDINATE);
    json!({ "line": c.line, "column": c.column })
}

/// The frame as a well-behaved client would write it.
fn canonical(frame: &ClientFrame) -> Value {
    let b64 = |bytes: &[u8]| BASE64.encode(bytes);
    let mut value = match &frame.message {
        ClientMessage::JoinDocument { document_id } => json!({"type": "join_document", "document_id": document_id.as_str()}),
        ClientMessage::LeaveDocument { document_id } => json!({"type": "leave_document", "document_id": document_id.as_str()}),
        ClientMessage::CursorMove { document_id, cursor: c } => {
            json!({"type": "cursor_move", "document_id": document_id.as_str(), "cursor": cursor(c)})
        }
        ClientMessage::SelectionChange { document_id, selection } => json!({
            "type": "selection_change",
            "document_id": document_id.as_str(),
            "selection": selection.map(|s| json!({"start": cursor(&s.start), "end": cursor(&s.end)})),
        }),
        ClientMessage::EditingStart { document_id } => json!({"type": "editing_start", "document_id": document_id.as_str()}),
        ClientMessage::EditingStop { document_id } => json!({"type": "editing_stop", "document_id": document_id.as_str()}),
        ClientMessage::Heartbeat => json!({"type": "heartbeat"}),
        ClientMessage::SyncStep1 { document_id, state_vector } => {
            json!({"type": "sync_step1", "document_id": document_id.as_str(), "state_vector": b64(state_vector)})
        }
        ClientMessage::SyncUpdate { document_id, update } => {
            json!({"type": "sync_update", "document_id": document_id.as_str(), "update": b64(update)})
        }
        ClientMessage::Awareness { document_id, update } => {
            json!({"type": "awareness", "document_id": document_id.as_str(), "update": b64(update)})
        }
    };
    if let Some(id) = &frame.id {
        value["id"] = serde_json::to_value(id).expect("an id serializes");
    }
    value
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let result = decode_client_frame(&text, LIMITS);
    assert_eq!(result, decode_client_frame(&text, LIMITS), "decoding is not deterministic");
    match result {
        Err(error) => {
            if let Some(MessageId::String(id)) = &error.id {
                assert!(id.len() <= MAX_MESSAGE_ID_BYTES, "an over-long id was echoed");
            }
            assert!(!error.error.message.is_empty());
        }
        Ok(frame) => {
            if let Some(MessageId::String(id)) = &frame.id {
                assert!(id.len() <= MAX_MESSAGE_ID_BYTES, "an over-long id was accepted");
            }
            if let Some(id) = frame.message.document_id() {
                let id = id.as_str();
                assert!(!id.is_empty() && id.len() <= MAX_DOCUMENT_ID_BYTES, "document id {id:?}");
                assert!(!id.chars().any(char::is_control), "document id {id:?}");
            }
            match &frame.message {
                ClientMessage::SyncStep1 { state_vector, .. } => {
                    assert!(state_vector.len() <= LIMITS.max_update_bytes);
                    let _ = sync::decode_state_vector(state_vector);
                }
                ClientMessage::SyncUpdate { update, .. } => {
                    assert!(update.len() <= LIMITS.max_update_bytes);
                    let _ = sync::decode_update(update);
                }
                ClientMessage::Awareness { update, .. } => {
                    assert!(update.len() <= LIMITS.max_update_bytes);
                    let _ = awareness::decode(update);
                }
                _ => assert!(
                    text.len() <= LIMITS.max_message_bytes,
                    "a {} byte control frame passed a {} byte limit",
                    text.len(),
                    LIMITS.max_message_bytes
                ),
            }
            let again = canonical(&frame).to_string();
            // Canonical JSON may be longer than the input (numbers, escapes): a roomy control limit.
            let decoded = decode_client_frame(&again, ROOMY);
            assert_eq!(decoded.as_ref().ok(), Some(&frame), "{again} did not decode to the same frame: {decoded:?}");
        }
    }
});
