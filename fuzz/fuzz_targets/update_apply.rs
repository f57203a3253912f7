//! A client's update, as it arrives (base64 in a JSON frame), validated and
//! applied to a document that already has content.
//!
//! Properties:
//! - base64 in a `sync_update` frame gives back exactly the input bytes, and
//!   `decode_base64` honours its size limit to the byte;
//! - whatever the validator accepts, yrs decodes;
//! - `apply_update` never reports a contained panic;
//! - refused: the document's encoding is unchanged;
//! - accepted: `full_state`, `snapshot` and `text` answer, the full state
//!   passes our own validator, and the live document equals a fresh one
//!   loaded from [prior, input] and one reloaded from its snapshot.
#![no_main]

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use libfuzzer_sys::fuzz_target;
use tandem::{protocol::json::{ClientMessage, DecodeLimits, decode_base64, decode_client_frame}, crdt::sync::{self, SyncError}, crdt::validate};
use tandem_fuzz::{MAX_PENDING, PRIOR, assert_same, fingerprint, yrs_decodes_update};

const NO_UPDATES: [&[u8]; 0] = [];

fuzz_target!(|data: &[u8]| {
    // The JSON/base64 path a browser client uses.
    let encoded = BASE64.encode(data);
    let frame = format!(r#"{{"type":"sync_update","document_id":"fuzz","update":"{encoded}"}}"#);
    let limits = DecodeLimits {
        max_message_bytes: 1024,
        max_update_bytes: data.len(),
        max_broadcast_bytes: 16 * 1024,
    };
    match decode_client_frame(&frame, limits) {
        Ok(decoded) => match decoded.message {
            ClientMessage::SyncUpdate { update, .. } => assert_eq!(update, data, "base64 round trip"),
            other => panic!("a sync_update frame decoded as {other:?}"),
        },
        Err(error) => panic!("a well-formed sync_update frame was refused: {:?}", error.error),
    }
    assert_eq!(decode_base64(&encoded, data.len() + 1, "update").as_deref(), Ok(data));
    if !data.is_empty() {
        assert!(
            decode_base64(&encoded, data.len() - 1, "update").is_err(),
            "decode_base64 let {} bytes through a limit of {}",
            data.len(),
            data.len() - 1
        );
    }

    // The validator never accepts what yrs cannot decode.
    let validated = validate::inspect_update(data).is_ok();
    if validated {
        assert!(yrs_decodes_update(data), "validate accepted an update yrs cannot decode");
        assert!(sync::decode_update(data).is_ok(), "decode_update refused a validated update");
    } else {
        assert!(sync::decode_update(data).is_err());
    }

    let (live, skipped) = sync::load(None, [PRIOR]);
    assert_eq!(skipped, 0, "the prior document does not load");
    let before = sync::full_state(&live).expect("full_state of the prior document");
    let before_print = fingerprint(&live);

    match sync::apply_update(&live, data, MAX_PENDING) {
        Err(SyncError::Panicked) => panic!("yrs panicked applying a validated update"),
        // yrs stopped midway and kept what it integrated (finding 7): the
        // room drops this copy and reloads storage, so it is never compared.
        Err(SyncError::PartlyApplied(_)) => {}
        Err(error) => {
            if validated {
                assert!(
                    !matches!(error, SyncError::BadUpdate(_)),
                    "a validated update was refused as malformed: {error}"
                );
            }
            let after = sync::full_state(&live).expect("full_state after a refused update");
            assert_eq!(before, after, "a refused update ({error}) changed the document");
            assert_eq!(before_print, fingerprint(&live), "a refused update ({error}) changed the document");
        }
        Ok(applied) => {
            assert!(validated, "apply_update accepted what the validator refuses");
            let state = sync::full_state(&live).expect("full_state after an accepted update");
            assert!(
                validate::inspect_update(&state).is_ok(),
                "our own full state fails our validator: {:?}",
                validate::inspect_update(&state)
            );
            sync::text(&live, "content").expect("text of the root the prior document has");
            let snapshot = sync::snapshot(&live).expect("snapshot after an accepted update");
            assert!(validate::inspect_update(&snapshot).is_ok(), "our own snapshot fails our validator");

            let (fresh, skipped) = sync::load(None, [PRIOR, data]);
            assert_eq!(skipped, 0, "an accepted update does not load");
            assert_same("live vs fresh apply of [prior, input]", &live, &fresh);

            let (reloaded, skipped) = sync::load(Some(&snapshot), NO_UPDATES);
            assert_eq!(skipped, 0, "a snapshot does not load");
            assert_same("live vs reloaded snapshot", &live, &reloaded);
            if !applied.pending {
                let (from_state, skipped) = sync::load(Some(&state), NO_UPDATES);
                assert_eq!(skipped, 0, "a full state does not load");
                assert_same("live vs reloaded full state", &live, &from_state);
            }
        }
    }
});
