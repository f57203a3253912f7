//! A lib0 v1 reader that refuses what yjs's decoder refuses (integers past
//! 2^53, lengths past the payload, strings that are not UTF-8, unknown value
//! tags) and more that yrs would mishandle (clocks past 31 bits, values and
//! JSON nested past [`MAX_NESTING`]). Used by [`super::validate`].

/// The largest unsigned integer lib0 decodes exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// The largest clock (and clock + length) accepted. yrs keeps clocks in a
/// `u32`; 2^31 - 1 leaves headroom for every sum it forms, and no real client
/// makes two billion edits.
pub const MAX_CLOCK: u64 = (1 << 31) - 1;
/// How deep `Any` values and JSON contents may nest.
pub const MAX_NESTING: usize = 64;

/// Why bytes are not an acceptable Yjs update or state vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at byte {offset})")]
pub struct Invalid {
    pub reason: &'static str,
    pub offset: usize,
}

/// A lib0 v1 reader that refuses what yjs refuses, and more that yrs mishandles.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pub(crate) pos: usize,
}

pub(crate) type Result<T, E = Invalid> = std::result::Result<T, E>;

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn fail<T>(&self, reason: &'static str) -> Result<T> {
        Err(Invalid {
            reason,
            offset: self.pos,
        })
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        match self.bytes.get(self.pos) {
            Some(&byte) => {
                self.pos += 1;
                Ok(byte)
            }
            None => self.fail("unexpected end of update"),
        }
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return self.fail("length exceeds the payload");
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// An unsigned varint of at most 53 bits (lib0 `readVarUint`); at most
    /// ten bytes long, like yrs's reader.
    pub(crate) fn var_uint(&mut self) -> Result<u64> {
        self.varint(0)
    }

    /// A signed varint (lib0 `readVarInt`): six bits and the sign in the
    /// first byte, a magnitude of at most 53 bits.
    pub(crate) fn var_int(&mut self) -> Result<()> {
        let first = self.u8()?;
        if first & 0x80 != 0 {
            self.varint(6)?;
        }
        Ok(())
    }

    /// The continuation bytes of a varint whose first `shift` bits are read.
    fn varint(&mut self, mut shift: u32) -> Result<u64> {
        let mut value: u64 = 0;
        loop {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if bits != 0 {
                if shift >= 53 || (bits << shift) > MAX_SAFE_INTEGER {
                    return self.fail("integer out of range");
                }
                value |= bits << shift;
            }
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift >= 70 {
                return self.fail("varint too long");
            }
        }
    }

    /// A count of entries that each take at least `min_entry_bytes`.
    pub(crate) fn count(&mut self, min_entry_bytes: usize) -> Result<usize> {
        let count = self.var_uint()?;
        if count > (self.remaining() / min_entry_bytes.max(1)) as u64 {
            return self.fail("count exceeds the payload");
        }
        Ok(count as usize)
    }

    pub(crate) fn client(&mut self) -> Result<u64> {
        self.var_uint()
    }

    pub(crate) fn clock(&mut self) -> Result<u64> {
        let clock = self.var_uint()?;
        if clock > MAX_CLOCK {
            return self.fail("clock out of range");
        }
        Ok(clock)
    }

    pub(crate) fn byte_array(&mut self) -> Result<&'a [u8]> {
        let len = self.var_uint()?;
        if len > self.remaining() as u64 {
            return self.fail("length exceeds the payload");
        }
        self.take(len as usize)
    }

    pub(crate) fn string(&mut self) -> Result<&'a str> {
        let bytes = self.byte_array()?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text),
            Err(_) => self.fail("string is not UTF-8"),
        }
    }

    /// A string that must hold JSON (yjs `JSON.parse`s it).
    pub(crate) fn json(&mut self) -> Result<()> {
        let text = self.string()?;
        if !json_is_valid(text) {
            return self.fail("content is not JSON (or nests too deep)");
        }
        Ok(())
    }

    /// A JSON text that yrs parses into an `Any` (embeds and format values):
    /// unlike a JSON content it may not be `undefined`, and its numbers must
    /// be finite doubles (`1e999` parses in JavaScript, not into an `Any`).
    pub(crate) fn json_value(&mut self) -> Result<()> {
        let text = self.string()?;
        if text == "undefined" || !json_is_valid(text) || yrs::Any::from_json(text).is_err() {
            return self.fail("value is not JSON yrs can hold (or nests too deep)");
        }
        Ok(())
    }

    /// A lib0 `Any` value.
    pub(crate) fn any(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_NESTING {
            return self.fail("value nests too deep");
        }
        match self.u8()? {
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.var_int(),
            124 => self.take(4).map(drop),
            123 | 122 => self.take(8).map(drop),
            119 => self.string().map(drop),
            118 => {
                let len = self.count(2)?;
                for _ in 0..len {
                    self.string()?;
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            117 => {
                let len = self.count(1)?;
                for _ in 0..len {
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            116 => self.byte_array().map(drop),
            _ => self.fail("unknown value type"),
        }
    }
}

/// Whether `text` is JSON (or yjs's `undefined`) nested at most [`MAX_NESTING`] deep.
pub(crate) fn json_is_valid(text: &str) -> bool {
    if text == "undefined" {
        return true;
    }
    // serde_json would refuse deeper input only at 128 levels: count first.
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}
