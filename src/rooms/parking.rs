//! Sessions whose socket dropped without a close frame from the client
//! (network loss, 1006), held for `--resume-grace` so that a reconnect with
//! their resume token takes them over: the same session, the same member in
//! every room, the messages queued meanwhile. Nobody else sees a leave or a
//! join. A parked session stays with the task that served its socket; this
//! registry only holds a ticket per resume token, through which a resuming
//! connection asks that task to hand the session over.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    model::presence::SessionRecord,
    rooms::{
        outbox::{Outbox, Outgoing},
        room::Room,
    },
};

/// Random bytes in a resume token: unguessable, like an API key.
const TOKEN_BYTES: usize = 32;

/// How long a claim waits for the parked task to hand its session over.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// What a parked session hands to the connection that resumes it.
pub struct ParkedSession {
    pub record: SessionRecord,
    /// The rooms it is still a member of.
    pub rooms: Vec<Arc<Room>>,
    /// The member's queue in each of those rooms, still filling.
    pub outbox: Outbox,
    /// Its receiving side: what was queued while the socket was gone.
    pub queue: mpsc::Receiver<Outgoing>,
}

/// Where a parked task sends its session when claimed.
pub type Handover = oneshot::Sender<ParkedSession>;

struct Ticket {
    user_id: Arc<str>,
    session_id: Uuid,
    claim: oneshot::Sender<Handover>,
}

/// The resume tokens of this instance's parked sessions.
#[derive(Default)]
pub struct Parking {
    tickets: Mutex<HashMap<String, Ticket>>,
}

impl Parking {
    /// A fresh resume token, or none if the OS had no random bytes (the
    /// session then cannot be resumed, which is never an error).
    pub fn token() -> Option<String> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).ok()?;
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn tickets(&self) -> MutexGuard<'_, HashMap<String, Ticket>> {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Park a session under `token`; the parked task waits on the returned
    /// receiver for a claim (alongside its grace timer).
    pub fn park(&self, token: String, user_id: Arc<str>, session_id: Uuid) -> oneshot::Receiver<Handover> {
        let (claim, claimed) = oneshot::channel();
        self.tickets().insert(
            token,
            Ticket {
                user_id,
                session_id,
                claim,
            },
        );
        claimed
    }

    /// The grace ran out (or the session ended otherwise): the token no
    /// longer resumes anything.
    pub fn forget(&self, token: &str) {
        self.tickets().remove(token);
    }

    /// The session parked under `token` for `user_id`, handed over by its
    /// task; none for an unknown, used or expired token, or another user's
    /// (which is left for its owner). A token is used by its first claim.
    pub async fn claim(&self, token: &str, user_id: &str) -> Option<ParkedSession> {
        let ticket = {
            let mut tickets = self.tickets();
            match tickets.get(token) {
                Some(ticket) if *ticket.user_id == *user_id => tickets.remove(token)?,
                _ => return None,
            }
        };
        let (handover, handed) = oneshot::channel();
        // The task may have ended the session at this very moment: then
        // nothing is handed over and the caller starts a new session.
        ticket.claim.send(handover).ok()?;
        let parked = tokio::time::timeout(HANDOVER_WAIT, handed).await.ok()?.ok()?;
        tracing::debug!(session_id = %ticket.session_id, "parked session claimed");
        Some(parked)
    }

    /// Whether `token` names a session parked here for `user_id` (a claim
    /// would find it, unless its grace ends first).
    pub fn holds(&self, token: &str, user_id: &str) -> bool {
        self.tickets()
            .get(token)
            .is_some_and(|ticket| *ticket.user_id == *user_id)
    }

    /// Sessions parked now.
    pub fn len(&self) -> usize {
        self.tickets().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unguessable_and_distinct() {
        let a = Parking::token().unwrap();
        let b = Parking::token().unwrap();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), TOKEN_BYTES);
    }

    #[tokio::test]
    async fn another_users_claim_neither_resumes_nor_burns_the_token() {
        let parking = Parking::default();
        let mut claimed = parking.park("t".into(), "alice".into(), Uuid::nil());
        assert!(parking.claim("t", "mallory").await.is_none());
        assert!(parking.claim("unknown", "alice").await.is_none());
        assert_eq!(parking.len(), 1, "alice may still resume");
        assert!(claimed.try_recv().is_err(), "the parked task was not asked");
    }

    #[tokio::test]
    async fn a_token_is_used_by_its_first_claim_and_dead_after_forget() {
        let parking = Parking::default();
        let claimed = parking.park("t".into(), "alice".into(), Uuid::nil());
        // The parked task is gone (its receiver dropped): the claim finds
        // nothing to take over, and the ticket is used up all the same.
        drop(claimed);
        assert!(parking.claim("t", "alice").await.is_none());
        assert!(parking.is_empty());
        let _claimed = parking.park("u".into(), "alice".into(), Uuid::nil());
        parking.forget("u");
        assert!(parking.claim("u", "alice").await.is_none());
    }
}
