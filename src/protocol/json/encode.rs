//! Server messages to shared bytes: encoded once, fanned out to every
//! recipient; payload bytes as standard base64.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::Serialize;

use super::ServerMessage;
use crate::{model::ids::MessageId, protocol::codes::ProtocolError};

/// Bytes that serialize as a standard base64 string.
#[derive(Debug, Clone, Copy)]
pub struct Base64<'a>(pub &'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(self.0))
    }
}

/// A server message serialized once, shared by every recipient.
pub type Encoded = Arc<str>;

impl ServerMessage<'_> {
    pub fn encode(&self) -> Encoded {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"encode failed"}"#.into())
            .into()
    }
}

/// Encode an error reply.
pub fn encode_error(error: &ProtocolError, id: Option<&MessageId>) -> Encoded {
    ServerMessage::Error {
        code: error.code,
        message: &error.message,
        id,
    }
    .encode()
}
