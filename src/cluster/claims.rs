//! What moving a parked session between instances sends over the control
//! channel (see [`crate::cluster::resume`]), and each instance's open claims
//! waiting for their answer. Plain data, so the control channel's message
//! type and the bus can name it without depending on the resume logic.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::model::{
    ids::DocumentId,
    presence::{Presence, SessionRecord},
};

/// A claim of the session parked under `token`, by `user_id`'s new socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub request_id: Uuid,
    pub token: String,
    pub user_id: String,
}

/// A parked session, moved to the instance that claimed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handover {
    pub request_id: Uuid,
    pub to_instance: String,
    pub record: SessionRecord,
    /// Its presence in each document it was in.
    pub documents: Vec<(DocumentId, Presence)>,
}

/// A session moved here: its record and documents.
#[derive(Debug)]
pub struct Moved {
    pub record: SessionRecord,
    pub documents: Vec<(DocumentId, Presence)>,
}

/// This instance's open claims, by request id.
#[derive(Default)]
pub(crate) struct Claims(Mutex<HashMap<Uuid, oneshot::Sender<Moved>>>);

impl Claims {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Moved>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
