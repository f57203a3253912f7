//! How a REST handler reaches a document: check the token against it, load
//! its room (bounded by the REST load permits) and keep it loaded while the
//! handler works, wait for a write's commit, and map document errors to
//! HTTP statuses. Shared by every document endpoint.

use std::{sync::Arc, time::Duration};

use tokio::sync::oneshot;

use crate::{
    auth::Identity,
    http::{error::ApiError, views::BearerToken},
    model::ids::DocumentId,
    rooms::{documents::DocError, room::Room},
    state::AppState,
};

/// How long a REST write waits for its commit.
pub const DURABLE_WAIT: Duration = Duration::from_secs(30);

/// Run `work` on the document's room, loaded, keeping it from being unloaded meanwhile.
pub async fn with_document<T>(
    state: &AppState,
    document_id: &DocumentId,
    work: impl AsyncFnOnce(&Arc<Room>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let hub = &state.hub;
    let room = hub.begin_join(document_id);
    let permit = if room.state().doc.is_none() {
        let wait = state.rest_loads.acquire();
        match tokio::time::timeout(crate::limits::REST_LOAD_WAIT, wait).await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                hub.abort_join(&room);
                return Err(ApiError::unavailable(
                    "the server is busy loading documents; retry shortly",
                ));
            }
        }
    } else {
        None
    };
    let loaded = state.docs.ensure_loaded(&room).await;
    drop(permit);
    let result = match loaded {
        Ok(()) => work(&room).await,
        Err(error) => {
            tracing::warn!(%document_id, error = format!("{:#}", anyhow::Error::from(error)), "document load failed");
            Err(ApiError::unavailable(
                "the document could not be loaded; try again",
            ))
        }
    };
    hub.abort_join(&room);
    result
}

/// [`with_document`] for a read: a room nobody is in is dropped right
/// after, so reads do not pile up rooms until the grace period.
pub async fn read_document<T>(
    state: &AppState,
    document_id: &DocumentId,
    work: impl AsyncFnOnce(&Arc<Room>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let result = with_document(state, document_id, work).await;
    state.hub.release_if_idle(document_id);
    result
}

/// The caller's identity, if its token may open `document_id`.
pub async fn authorize(
    state: &AppState,
    auth: &BearerToken,
    document_id: &str,
) -> Result<(Identity, DocumentId), ApiError> {
    let identity = auth.identity(state).await?;
    let document_id = parse_document_id(document_id)?;
    if !identity.may_access(&document_id) {
        return Err(ApiError::forbidden("this token may not open this document"));
    }
    Ok((identity, document_id))
}

/// [`authorize`], and the token must be allowed to write.
pub async fn authorize_write(
    state: &AppState,
    auth: &BearerToken,
    document_id: &str,
    what: &str,
) -> Result<(Identity, DocumentId), ApiError> {
    let (identity, document_id) = authorize(state, auth, document_id).await?;
    if !identity.may_write() {
        return Err(ApiError::forbidden(format!(
            "this token has the viewer role: {what} are refused"
        )));
    }
    Ok((identity, document_id))
}

/// Wait for a write's commit, at most [`DURABLE_WAIT`].
pub async fn committed(done: oneshot::Receiver<()>) -> Result<(), ApiError> {
    match tokio::time::timeout(DURABLE_WAIT, done).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(ApiError::unavailable(
            "the update was applied but is not yet durable; retry",
        )),
    }
}

/// The loaded document's state vector.
pub fn state_vector(room: &Room) -> Vec<u8> {
    let guard = room.state();
    guard
        .doc
        .as_ref()
        .map(crate::crdt::sync::state_vector)
        .unwrap_or_default()
}

/// Map a document error to its HTTP status.
pub fn doc_error(error: DocError) -> ApiError {
    match error {
        DocError::Sync(e @ crate::crdt::sync::SyncError::ForeignClient(_)) => {
            ApiError::forbidden(e.to_string())
        }
        DocError::Sync(e) => ApiError::bad_request("invalid_update", e.to_string()),
        DocError::Awareness(e) => ApiError::bad_request("invalid_update", e.to_string()),
        DocError::Busy => ApiError::unavailable("the server is busy persisting updates; retry shortly"),
        DocError::Unavailable(e) => {
            tracing::warn!(error = format!("{e:#}"), "document unavailable");
            ApiError::unavailable("the document could not be loaded; try again")
        }
    }
}

pub fn parse_document_id(raw: &str) -> Result<DocumentId, ApiError> {
    DocumentId::parse(raw).map_err(|e| ApiError::bad_request("invalid_document_id", e.0))
}
