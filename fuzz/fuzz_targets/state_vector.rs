//! A client's state vector (sync step 1), and the diff the server answers with.
//!
//! Properties:
//! - whatever the validator accepts, yrs decodes, and every clock fits;
//! - a decoded state vector re-encodes to one that decodes the same;
//! - `diff` against a document with content answers exactly when the state
//!   vector decodes, and the answer passes our own validator and loads;
//! - a state vector at or past the document's own gets an empty diff, an
//!   empty one gets everything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::{crdt::sync, crdt::validate};
use tandem_fuzz::{PRIOR, assert_same, state_vector_map};
use yrs::{StateVector, updates::decoder::Decode, updates::encoder::Encode};

const NO_UPDATES: [&[u8]; 0] = [];

fuzz_target!(|data: &[u8]| {
    let validated = validate::inspect_state_vector(data).is_ok();
    let decoded = sync::decode_state_vector(data);
    assert_eq!(validated, decoded.is_ok(), "validator and decode_state_vector disagree: {decoded:?}");
    if validated {
        assert!(
            matches!(tandem_fuzz::tolerant(|| StateVector::decode_v1(data)), Ok(Ok(_))),
            "validate accepted a state vector yrs cannot decode"
        );
    }
    assert_eq!(
        sync::is_empty_state_vector(data),
        decoded.as_ref().is_ok_and(|sv| sv.is_empty())
    );

    let (doc, skipped) = sync::load(None, [PRIOR]);
    assert_eq!(skipped, 0);
    let answer = sync::diff(&doc, data);
    assert_eq!(answer.is_ok(), validated, "diff answered {answer:?} to a state vector that decodes: {validated}");

    let Ok(sv) = decoded else { return };
    for (_, clock) in sv.iter() {
        assert!(u64::from(*clock) <= validate::MAX_CLOCK, "clock {clock} past the limit");
    }
    let encoded = sv.encode_v1();
    let again = sync::decode_state_vector(&encoded).expect("a re-encoded state vector decodes");
    assert_eq!(state_vector_map(&again), state_vector_map(&sv));

    let update = answer.expect("checked above");
    let parsed = sync::decode_update(&update).expect("our own diff passes our validator");
    let own = state_vector_map(&doc.transact_state_vector());
    let peer = state_vector_map(&sv);
    let covered = own.iter().all(|(client, clock)| peer.get(client).is_some_and(|p| p >= clock));
    if covered {
        // The delete set is always sent; no structs may be.
        let shape = validate::inspect_update(&update).expect("checked above");
        assert_eq!(shape.clients().count(), 0, "a peer that has every struct was sent some");
    }
    let _ = parsed;
    if peer.is_empty() {
        let (fresh, skipped) = sync::load(Some(&update), NO_UPDATES);
        assert_eq!(skipped, 0);
        assert_same("document vs load(diff to an empty peer)", &doc, &fresh);
    } else {
        let (_, skipped) = sync::load(Some(&update), NO_UPDATES);
        assert_eq!(skipped, 0, "our own diff does not load");
    }
});

trait StateVectorOf {
    fn transact_state_vector(&self) -> StateVector;
}

impl StateVectorOf for yrs::Doc {
    fn transact_state_vector(&self) -> StateVector {
        use yrs::{ReadTxn, Transact};
        self.transact().state_vector()
    }
}
