//! One binary frame from a y-websocket client.
//!
//! Properties:
//! - decoding never panics, and an accepted frame written back with our own
//!   encoders decodes to the same message;
//! - when yrs's own y-protocols decoder reads a sync frame as a
//!   step 1 / step 2 / update with the same payload, so do we;
//! - the payloads go through their own decoders without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::{crdt::awareness, crdt::sync, protocol::yjs::{self, Inbound}};
use yrs::{
    sync::{Message, SyncMessage},
    updates::decoder::Decode,
};

fuzz_target!(|data: &[u8]| {
    let decoded = yjs::decode(data);
    if let Ok(inbound) = &decoded {
        let again = match inbound {
            Inbound::SyncStep1(sv) => Some(yjs::sync_step1(sv)),
            Inbound::Update(update) => Some(yjs::update(update)),
            Inbound::Awareness(update) => Some(yjs::awareness(update)),
            Inbound::QueryAwareness | Inbound::Auth => None,
        };
        if let Some(bytes) = again {
            assert_eq!(yjs::decode(&bytes).as_ref(), Ok(inbound), "re-encoded frame decodes differently");
        }
        match inbound {
            Inbound::SyncStep1(sv) => {
                let _ = sync::decode_state_vector(sv);
            }
            Inbound::Update(update) => {
                let _ = sync::decode_update(update);
            }
            Inbound::Awareness(update) => {
                let _ = awareness::decode(update);
            }
            Inbound::QueryAwareness | Inbound::Auth => {}
        }
    }
    // Where yrs's own decoder reads a sync update, we read the same payload.
    if let Ok(inbound) = &decoded
        && let Ok(Ok(Message::Sync(SyncMessage::Update(payload) | SyncMessage::SyncStep2(payload)))) =
            tandem_fuzz::tolerant(|| Message::decode_v1(data))
    {
        assert_eq!(inbound, &Inbound::Update(payload), "yrs and tandem read the frame differently");
    }
    // The step 2 header is the frame before its update.
    if let Ok(Inbound::Update(update)) = &decoded {
        let mut split = yjs::sync_step2_header(update.len());
        split.extend_from_slice(update);
        assert_eq!(split, yjs::sync_step2(update));
    }
});
