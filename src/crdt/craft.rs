//! Hand-made Yjs v1 updates, including the malformed shapes no Yjs library
//! would write: for the validator's tests, the integration tests and the
//! attack replay (`examples/attack.rs`). Not used by the gateway itself.

/// Append `value` as a lib0 unsigned varint. Wider than lib0 allows on
/// purpose: values past 2^53 and 2^64 are what hostile clients send.
pub fn var(out: &mut Vec<u8>, mut value: u128) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// An update holding one string item of `client` at `clock`: right after
/// `origin` when given, else at the start of the root text `root`.
pub fn string_item(
    client: u128,
    clock: u128,
    origin: Option<(u128, u128)>,
    root: &str,
    text: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    var(&mut out, 1);
    var(&mut out, 1);
    var(&mut out, client);
    var(&mut out, clock);
    match origin {
        Some((origin_client, origin_clock)) => {
            out.push(0x84);
            var(&mut out, origin_client);
            var(&mut out, origin_clock);
        }
        None => {
            out.push(0x04);
            var(&mut out, 1);
            var(&mut out, root.len() as u128);
            out.extend_from_slice(root.as_bytes());
        }
    }
    var(&mut out, text.len() as u128);
    out.extend_from_slice(text.as_bytes());
    var(&mut out, 0);
    out
}

/// An update with no structs and a delete set of `ranges` one-clock ranges
/// of `client`, every other clock from `first_clock`.
pub fn deletions(client: u128, first_clock: u128, ranges: usize) -> Vec<u8> {
    let mut out = vec![0];
    var(&mut out, 1);
    var(&mut out, client);
    var(&mut out, ranges as u128);
    for index in 0..ranges {
        var(&mut out, first_clock + (index as u128) * 2);
        var(&mut out, 1);
    }
    out
}

/// Reproducible mutations of real updates (xorshift, no dependency): bit
/// flips, overwrites, insertions, deletions, and wide varints spliced in.
pub struct Mutator(pub u64);

impl Mutator {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Flip, overwrite, insert, delete or splice bytes of `seed`.
    pub fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + self.next_u64() % 4 {
            let at = (self.next_u64() as usize) % bytes.len().max(1);
            match self.next_u64() % 6 {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << (self.next_u64() % 8),
                1 if !bytes.is_empty() => bytes[at] = self.next_u64() as u8,
                2 => bytes.insert(at.min(bytes.len()), self.next_u64() as u8),
                3 if bytes.len() > 1 => {
                    bytes.remove(at);
                }
                4 => {
                    // A long varint: the shape that wraps yrs's u32 clocks.
                    let value = self.next_u64() as u128 * (1 + self.next_u64() as u128);
                    let mut encoded = Vec::new();
                    var(&mut encoded, value);
                    let at = at.min(bytes.len());
                    bytes.splice(at..at, encoded);
                }
                _ if !bytes.is_empty() => bytes[at] = [0x00, 0x7f, 0x80, 0xff, 0x84, 0x44][at % 6],
                _ => {}
            }
        }
        bytes
    }
}
