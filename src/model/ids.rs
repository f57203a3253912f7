//! Identifiers: document ids (validated once, shared as `Arc<str>`) and the
//! `id` a client may attach to any message.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

/// Longest document id, in bytes.
pub const MAX_DOCUMENT_ID_BYTES: usize = 256;
/// Longest string `id` a client may attach to a message.
pub const MAX_MESSAGE_ID_BYTES: usize = 128;

/// Why a string is not a document id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDocumentId(pub &'static str);

/// A document (room) id, validated: 1..=256 bytes, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(Arc<str>);

impl DocumentId {
    pub fn parse(value: &str) -> Result<Self, InvalidDocumentId> {
        if value.is_empty() {
            return Err(InvalidDocumentId("document_id must not be empty"));
        }
        if value.len() > MAX_DOCUMENT_ID_BYTES {
            return Err(InvalidDocumentId("document_id must be at most 256 bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err(InvalidDocumentId(
                "document_id must not contain control characters",
            ));
        }
        Ok(Self(value.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for DocumentId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Validated like [`DocumentId::parse`]: a peer's bytes are not trusted
/// either.
impl<'de> Deserialize<'de> for DocumentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// The `id` a client may attach to any message; echoed on what it causes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageId {
    Number(serde_json::Number),
    String(String),
}
