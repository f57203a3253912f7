//! Error codes sent in `error` messages, the client-facing error type, and
//! the WebSocket close codes, with the wording the documentation promises.

use std::borrow::Cow;

use serde::Serialize;

use crate::model::ids::{InvalidDocumentId, MessageId};

/// Error codes sent in `{"type":"error","code":..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// `type` names no message this server knows.
    UnknownType,
    /// Missing or mistyped fields, or values out of range.
    InvalidMessage,
    /// A message for a document this connection has not joined.
    NotJoined,
    /// `join_document` for a document already joined on this connection.
    AlreadyJoined,
    /// A frame or update over the configured limit.
    TooLarge,
    /// More messages than the per-connection rate limit allows; the message was dropped.
    RateLimited,
    /// Too many documents joined on one connection.
    TooManyDocuments,
    /// A binary frame on the JSON endpoint.
    UnsupportedFrame,
    /// A Yjs update or state vector that cannot be decoded or applied.
    InvalidUpdate,
    /// The token does not allow this (document not in `docs`, or a viewer writing).
    Forbidden,
    /// The document could not be loaded from storage; try again. Or (with the
    /// update's `id`) the update was applied but the database is failing: its
    /// `ack` follows once a commit succeeds.
    DocumentUnavailable,
    /// Something failed on the server; the cause is logged, not sent.
    Internal,
    /// A `refresh_token` whose token does not verify (expired, bad signature...).
    Unauthorized,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidMessage => "invalid_message",
            Self::NotJoined => "not_joined",
            Self::AlreadyJoined => "already_joined",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::TooManyDocuments => "too_many_documents",
            Self::UnsupportedFrame => "unsupported_frame",
            Self::InvalidUpdate => "invalid_update",
            Self::Forbidden => "forbidden",
            Self::DocumentUnavailable => "document_unavailable",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// A client-facing error: a code and a message safe to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }
}

/// A frame that could not be decoded, with the `id` to echo if one was readable.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<MessageId>,
    pub error: ProtocolError,
}

/// Close codes the server uses. 1000-range are standard; 4000-range are tandem's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the server is shutting down; reconnect to another instance or later.
    GoingAway,
    /// 1009: a frame above the transport limit (`max_frame_bytes`).
    MessageTooBig,
    /// 1002: a WebSocket protocol violation (an unmasked or reserved-bit frame, an unknown opcode...).
    ProtocolError,
    /// 1007: a text message that is not valid UTF-8.
    InvalidPayload,
    /// 4000: nothing heard (message, heartbeat or pong) within the session TTL.
    SessionTimeout,
    /// 4001: the client did not read fast enough and its send queue overflowed.
    SlowConsumer,
    /// 4002: too many consecutive errors.
    TooManyErrors,
    /// 4003: the session was ended by the server (stale-session cleanup).
    SessionEnded,
    /// 1011: the document could not be loaded (y-websocket endpoint); reconnect later.
    Unavailable,
    /// 4004: the connection's token expired and was not refreshed.
    TokenExpired,
    /// 4005: the user, session or API key was revoked.
    Revoked,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            Self::GoingAway => 1001,
            Self::MessageTooBig => 1009,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::SessionTimeout => 4000,
            Self::SlowConsumer => 4001,
            Self::TooManyErrors => 4002,
            Self::SessionEnded => 4003,
            Self::Unavailable => 1011,
            Self::TokenExpired => 4004,
            Self::Revoked => 4005,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::GoingAway => "server shutting down",
            Self::MessageTooBig => "message too big",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "invalid payload data",
            Self::SessionTimeout => "session timed out",
            Self::SlowConsumer => "send queue overflow: client too slow",
            Self::TooManyErrors => "too many errors",
            Self::SessionEnded => "session ended by server",
            Self::Unavailable => "document unavailable",
            Self::TokenExpired => "token expired",
            Self::Revoked => "revoked",
        }
    }
}

impl From<InvalidDocumentId> for ProtocolError {
    fn from(error: InvalidDocumentId) -> Self {
        Self::invalid(error.0)
    }
}
