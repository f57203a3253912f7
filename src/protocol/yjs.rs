//! The y-websocket binary protocol (y-protocols sync + awareness), as the npm
//! `y-websocket` `WebsocketProvider` speaks it. Pure: frames in, frames out.
//!
//! Frames are read with yrs's lib0 decoder and its protocol constants, but the
//! payloads are handed to [`crate::crdt::sync`] and [`crate::crdt::awareness`] rather than
//! to `yrs::sync::Message::decode`: those validate declared sizes before
//! allocating and refuse client ids yrs would assert on.

use yrs::{
    encoding::{
        read::{Cursor, Read},
        write::Write,
    },
    sync::protocol::{
        MSG_AUTH, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC, MSG_SYNC_STEP_1, MSG_SYNC_STEP_2,
        MSG_SYNC_UPDATE,
    },
};

/// A decoded client frame; payloads are still raw (validated by their consumers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Sync step 1: the client's state vector.
    SyncStep1(Vec<u8>),
    /// Sync step 2 or a live update: a v1 update.
    Update(Vec<u8>),
    /// An awareness update.
    Awareness(Vec<u8>),
    /// The client asks for every awareness state.
    QueryAwareness,
    /// An auth message (servers send these; a client's is ignored).
    Auth,
}

/// Why a frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("truncated frame")]
    Truncated,
    #[error("unknown message type {0}")]
    UnknownType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("trailing bytes after the message")]
    Trailing,
}

pub fn decode(frame: &[u8]) -> Result<Inbound, FrameError> {
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut cursor = Cursor::new(frame);
    let tag: u64 = cursor.read_var().map_err(|_| FrameError::Truncated)?;
    let inbound = match tag {
        t if t == u64::from(MSG_SYNC) => {
            let kind: u64 = cursor.read_var().map_err(|_| FrameError::Truncated)?;
            let payload = cursor.read_buf().map_err(|_| FrameError::Truncated)?.to_vec();
            match kind {
                k if k == u64::from(MSG_SYNC_STEP_1) => Inbound::SyncStep1(payload),
                k if k == u64::from(MSG_SYNC_STEP_2) || k == u64::from(MSG_SYNC_UPDATE) => {
                    Inbound::Update(payload)
                }
                other => return Err(FrameError::UnknownSyncType(other)),
            }
        }
        t if t == u64::from(MSG_AWARENESS) => {
            Inbound::Awareness(cursor.read_buf().map_err(|_| FrameError::Truncated)?.to_vec())
        }
        t if t == u64::from(MSG_QUERY_AWARENESS) => Inbound::QueryAwareness,
        t if t == u64::from(MSG_AUTH) => return Ok(Inbound::Auth),
        other => return Err(FrameError::UnknownType(other)),
    };
    if cursor.has_content() {
        return Err(FrameError::Trailing);
    }
    Ok(inbound)
}

fn sync_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.write_var(MSG_SYNC);
    out.write_var(kind);
    out.write_buf(payload);
    out
}

pub fn sync_step1(state_vector: &[u8]) -> Vec<u8> {
    sync_frame(MSG_SYNC_STEP_1, state_vector)
}

pub fn sync_step2(update: &[u8]) -> Vec<u8> {
    sync_frame(MSG_SYNC_STEP_2, update)
}

/// The bytes before the update in [`sync_step2`] of an update of `len`
/// bytes, so a shared update can follow them without being copied.
pub fn sync_step2_header(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.write_var(MSG_SYNC);
    out.write_var(MSG_SYNC_STEP_2);
    out.write_var(len as u64);
    out
}

pub fn update(update: &[u8]) -> Vec<u8> {
    sync_frame(MSG_SYNC_UPDATE, update)
}

pub fn awareness(update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(update.len() + 8);
    out.write_var(MSG_AWARENESS);
    out.write_buf(update);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{
        StateVector,
        sync::{Message, SyncMessage},
        updates::{decoder::Decode, encoder::Encode},
    };

    #[test]
    fn the_sync_step2_header_is_the_frame_before_its_update() {
        for len in [0usize, 1, 127, 128, 300, 1 << 20] {
            let update = vec![7u8; len];
            let mut split = sync_step2_header(len);
            split.extend_from_slice(&update);
            assert_eq!(split, sync_step2(&update), "len {len}");
        }
    }

    #[test]
    fn frames_match_yrs_own_encoding() {
        let sv = StateVector::default();
        let ours = sync_step1(&sv.encode_v1());
        assert_eq!(
            ours,
            Message::Sync(SyncMessage::SyncStep1(sv.clone())).encode_v1()
        );
        assert_eq!(decode(&ours).unwrap(), Inbound::SyncStep1(sv.encode_v1()));
        let theirs = Message::Sync(SyncMessage::Update(vec![0, 0])).encode_v1();
        assert_eq!(decode(&theirs).unwrap(), Inbound::Update(vec![0, 0]));
        assert_eq!(update(&[0, 0]), theirs);
        let step2 = Message::Sync(SyncMessage::SyncStep2(vec![0, 0])).encode_v1();
        assert_eq!(sync_step2(&[0, 0]), step2);
        assert!(Message::decode_v1(&awareness(&[0])).is_ok());
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert_eq!(decode(&[]), Err(FrameError::Empty));
        assert_eq!(decode(&[0]), Err(FrameError::Truncated));
        assert_eq!(decode(&[0, 1, 10, 1]), Err(FrameError::Truncated));
        assert_eq!(decode(&[9]), Err(FrameError::UnknownType(9)));
        assert_eq!(decode(&[0, 7, 0]), Err(FrameError::UnknownSyncType(7)));
        assert_eq!(decode(&[3, 0]), Err(FrameError::Trailing));
        assert_eq!(decode(&[0xff, 0xff, 0xff]), Err(FrameError::Truncated));
        for seed in 0..3000u32 {
            let bytes: Vec<u8> = (0..(seed % 24))
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i * 3) & 0xff) as u8)
                .collect();
            let _ = decode(&bytes);
        }
    }
}
