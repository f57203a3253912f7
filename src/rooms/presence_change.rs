//! A change a member makes to its own presence, and which throttled
//! presence stream (`--presence-max-hz`, latest-wins queues) it belongs to.

use crate::{
    model::presence::{Cursor, EditingStopReason, Selection},
    rooms::latest::Stream,
};

/// A change a member makes to its own presence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PresenceChange {
    Cursor(Cursor),
    Selection(Option<Selection>),
    EditingStart,
    EditingStop(EditingStopReason),
    /// Editing activity that is not itself a presence message (a document update).
    Activity,
}

/// The throttled stream a change belongs to (cursor or selection).
pub fn stream_of(change: PresenceChange) -> Option<Stream> {
    match change {
        PresenceChange::Cursor(_) => Some(Stream::Cursor),
        PresenceChange::Selection(_) => Some(Stream::Selection),
        _ => None,
    }
}

/// Where a stream's relay time is kept in a member (`Member::relayed`).
pub fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Cursor => 0,
        _ => 1,
    }
}
