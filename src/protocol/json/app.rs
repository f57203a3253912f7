//! App messages (`broadcast`, `send_to_user`): an event name and any JSON
//! the app chooses, relayed as it came (never stored). The data is kept as
//! the client's raw JSON text, checked once here and written out verbatim.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::codes::{ErrorCode, ProtocolError};

/// Longest event name, in bytes.
pub const MAX_EVENT_BYTES: usize = 64;
/// Deepest nesting of arrays and objects in `data`: apps send flat records;
/// recipients' parsers should never meet a pathological depth from us.
pub const MAX_DATA_DEPTH: usize = 32;

/// An app message's `data`: valid JSON, at most the configured size.
#[derive(Debug, Clone)]
pub struct AppData(Arc<RawValue>);

impl AppData {
    /// Check raw JSON `data` against `max_bytes`.
    pub fn new(raw: &RawValue, max_bytes: usize) -> Result<Self, ProtocolError> {
        if raw.get().len() > max_bytes {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("data is limited to {max_bytes} bytes of JSON"),
            ));
        }
        if nesting(raw.get()) > MAX_DATA_DEPTH {
            return Err(ProtocolError::invalid(format!(
                "data nests arrays and objects deeper than {MAX_DATA_DEPTH}"
            )));
        }
        Ok(Self(Arc::from(raw.to_owned())))
    }

    /// Data from JSON text (another instance's message, a REST body).
    pub fn parse(json: &str, max_bytes: usize) -> Result<Self, ProtocolError> {
        let raw: Box<RawValue> = serde_json::from_str(json)
            .map_err(|error| ProtocolError::invalid(format!("data is not JSON: {error}")))?;
        Self::new(&raw, max_bytes)
    }

    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for AppData {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Serialize for AppData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The deepest nesting of arrays and objects in valid JSON text.
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// An event name: 1-64 bytes, no control characters.
pub fn validate_event(event: Option<&str>) -> Result<String, ProtocolError> {
    let event = event.ok_or_else(|| ProtocolError::invalid("missing \"event\""))?;
    if event.is_empty() || event.len() > MAX_EVENT_BYTES || event.chars().any(char::is_control) {
        return Err(ProtocolError::invalid(format!(
            "event must be 1-{MAX_EVENT_BYTES} bytes without control characters"
        )));
    }
    Ok(event.to_owned())
}

/// A `data` field, which must be present (use `null` for none).
pub fn validate_data(data: Option<&RawValue>, max_bytes: usize) -> Result<AppData, ProtocolError> {
    AppData::new(
        data.ok_or_else(|| ProtocolError::invalid("missing \"data\" (any JSON, null for none)"))?,
        max_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_data_are_checked() {
        assert_eq!(validate_event(Some("typing")).unwrap(), "typing");
        for bad in [None, Some(""), Some("a\nb"), Some(&"x".repeat(65)[..])] {
            assert_eq!(
                validate_event(bad).unwrap_err().code,
                ErrorCode::InvalidMessage,
                "{bad:?}"
            );
        }
        let data = AppData::parse(r#"{"a": [1, 2]}"#, 100).unwrap();
        assert_eq!(data.json(), r#"{"a": [1, 2]}"#, "kept verbatim");
        assert_eq!(
            AppData::parse(r#""0123456789""#, 8).unwrap_err().code,
            ErrorCode::TooLarge
        );
        assert!(AppData::parse("{oops", 100).is_err());
        assert_eq!(serde_json::to_string(&data).unwrap(), r#"{"a": [1, 2]}"#);
        assert_eq!(nesting(r#"{"a": "[[[{", "b": [[1], {"c": "\"]"}]}"#), 3);
        let deep = format!("{}1{}", "[".repeat(33), "]".repeat(33));
        assert_eq!(
            AppData::parse(&deep, 1000).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        let ok = format!("{}1{}", "[".repeat(32), "]".repeat(32));
        assert!(AppData::parse(&ok, 1000).is_ok());
    }
}
