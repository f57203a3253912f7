//! Classifying received frames for the load generator: which [`Event`]s a
//! frame holds, with sequence numbers pulled out only when sampling, for
//! every protocol [`Client`] speaks.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use yrs::encoding::read::{Cursor, Read};

use crate::wire::{
    AUTH_AUTHENTICATED, AUTH_PERMISSION_DENIED, Client, Event, MSG_AUTH, MSG_AWARENESS, MSG_SYNC,
    MSG_SYNC_REPLY, MSG_SYNC_STATUS, Protocol, SEQ_BASE, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};

#[derive(Deserialize)]
struct JsonIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, borrow)]
    update: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    state_vector: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<std::borrow::Cow<'a, str>>,
}

impl Client {
    /// Classify a frame into `out`. `want_seq` extracts sequence numbers from
    /// presence (the sampled receivers); otherwise presence is only counted.
    /// Malformed input becomes [`Event::Error`], never a panic.
    pub fn decode(&self, frame: &Message, want_seq: bool, out: &mut Vec<Event>) {
        match frame {
            // Newline-delimited with tandem's `?batch=1` (JSON never holds a raw newline).
            Message::Text(text) => {
                for line in text.split('\n').filter(|line| !line.is_empty()) {
                    self.decode_text(line, want_seq, out);
                }
            }
            Message::Binary(bytes) if self.protocol.is_binary() => {
                if let Err(error) = self.decode_binary(bytes, want_seq, out) {
                    out.push(Event::Error(format!("undecodable binary frame: {error}")));
                }
            }
            Message::Close(close) => {
                let reason = close.as_ref().map(|c| format!("{} {}", c.code, c.reason));
                out.push(Event::Error(format!(
                    "closed by server: {}",
                    reason.unwrap_or_default()
                )));
            }
            _ => {}
        }
    }

    fn decode_text(&self, text: &str, want_seq: bool, out: &mut Vec<Event>) {
        // The hot path: a cursor broadcast is recognised by its prefix (tandem
        // serializes `type` first; the floor relays our own frames).
        if text.starts_with(r#"{"type":"cursor_move""#) {
            let seq = want_seq.then(|| cursor_seq(text)).flatten();
            out.push(Event::Presence { seq });
            return;
        }
        if self.protocol == Protocol::Floor {
            return;
        }
        let message: JsonIn = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(error) => {
                out.push(Event::Error(format!("invalid JSON from server: {error}")));
                return;
            }
        };
        let payload = |field: Option<std::borrow::Cow<'_, str>>| {
            field.and_then(|b64| BASE64.decode(b64.as_bytes()).ok())
        };
        let event = match &*message.kind {
            "presence_list" => Event::Joined,
            "sync_step1" => match payload(message.state_vector) {
                Some(sv) => Event::ServerStep1(sv),
                None => Event::Error("sync_step1 without a valid state_vector".into()),
            },
            "sync_step2" => match payload(message.update) {
                Some(update) => Event::Step2(update),
                None => Event::Error("sync_step2 without a valid update".into()),
            },
            "sync_update" => match payload(message.update) {
                Some(update) => Event::Update(update),
                None => Event::Error("sync_update without a valid update".into()),
            },
            "ack" => match message.id.as_ref().and_then(serde_json::Value::as_u64) {
                Some(id) => Event::Ack(id),
                None => return,
            },
            "error" => Event::Error(format!(
                "{}: {}",
                message.code.as_deref().unwrap_or("?"),
                message.message.as_deref().unwrap_or("")
            )),
            // connected, user_joined, user_left, heartbeat_ack, awareness, editing_*...
            _ => return,
        };
        out.push(event);
    }

    fn decode_binary(
        &self,
        bytes: &[u8],
        want_seq: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), yrs::encoding::read::Error> {
        let mut cursor = Cursor::new(bytes);
        if self.protocol == Protocol::Hocuspocus {
            let _document: &str = cursor.read_string()?;
        }
        let tag: u64 = cursor.read_var()?;
        match tag {
            MSG_SYNC | MSG_SYNC_REPLY => {
                let kind: u64 = cursor.read_var()?;
                let payload = cursor.read_buf()?.to_vec();
                out.push(match kind {
                    SYNC_STEP1 => Event::ServerStep1(payload),
                    SYNC_STEP2 => Event::Step2(payload),
                    SYNC_UPDATE => Event::Update(payload),
                    other => Event::Error(format!("unknown sync message {other}")),
                });
            }
            MSG_AWARENESS => {
                let mut entries = Cursor::new(cursor.read_buf()?);
                let count: u64 = entries.read_var()?;
                for _ in 0..count {
                    let client: u64 = entries.read_var()?;
                    let _clock: u32 = entries.read_var()?;
                    let state: &str = entries.read_string()?;
                    // Servers that echo our own state back (y-websocket,
                    // Hocuspocus) are not delivering anything to anyone else.
                    if client == self.id.awareness_id || state == "null" {
                        continue;
                    }
                    let seq = want_seq.then(|| number_after(state, r#""seq":"#)).flatten();
                    out.push(Event::Presence { seq });
                }
            }
            MSG_AUTH if self.protocol == Protocol::Hocuspocus => match cursor.read_var::<u64>()? {
                AUTH_AUTHENTICATED => out.push(Event::Joined),
                AUTH_PERMISSION_DENIED => {
                    let reason = cursor.read_string().unwrap_or("?");
                    out.push(Event::Error(format!("permission denied: {reason}")));
                }
                _ => {}
            },
            MSG_SYNC_STATUS if self.protocol == Protocol::Hocuspocus => {
                out.push(Event::SyncStatus(cursor.read_var::<u64>()? != 0));
            }
            // Auth from y-websocket servers, query-awareness, stateless...
            _ => {}
        }
        Ok(())
    }
}

/// The sequence number of a JSON cursor: `line * 10^7 + column`.
fn cursor_seq(text: &str) -> Option<u64> {
    let line = number_after(text, r#""cursor":{"line":"#)?;
    let column = number_after(text, r#""column":"#)?;
    Some(line * SEQ_BASE + column)
}

/// The unsigned integer right after the first occurrence of `key`.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// The author and first clock of a v1 update (its first struct group), or
/// None for an update without structs. Used to find an edit's send time.
pub fn update_origin(update: &[u8]) -> Option<(u64, u64)> {
    let mut cursor = Cursor::new(update);
    let groups: u64 = cursor.read_var().ok()?;
    if groups == 0 {
        return None;
    }
    let _structs: u64 = cursor.read_var().ok()?;
    let client: u64 = cursor.read_var().ok()?;
    let clock: u64 = cursor.read_var().ok()?;
    Some((client, clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_round_trips_through_a_cursor() {
        let seq = 123_456_789_012;
        let text = format!(
            r#"{{"type":"cursor_move","document_id":"d","user_id":"u","connection_id":"c","cursor":{{"line":{},"column":{}}}}}"#,
            seq / SEQ_BASE,
            seq % SEQ_BASE
        );
        assert_eq!(cursor_seq(&text), Some(seq));
    }
}
