//! Document versions over REST: save one (`POST .../versions`), list them
//! newest first, read one with its content, and restore one with a forward
//! update (`POST .../versions/{id}/restore`), which first saves the live
//! document as a version labelled `before restore`. Viewers may list and
//! read, not save or restore.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use chrono::{DateTime, Utc};
use poem_openapi::{
    Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use crate::{
    auth::Identity,
    http::{
        access::{authorize, authorize_write, committed, doc_error, state_vector, with_document},
        error::ApiError,
        views::BearerToken,
    },
    model::ids::DocumentId,
    rooms::documents::{Durable, EditError, Origin},
    state::AppState,
    storage::versions::{self, NewVersion, VersionInfo},
};

/// Versions per page by default, and at most.
const PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// Longest label.
const MAX_LABEL: usize = 256;
/// The label of the version a restore saves first.
pub const BEFORE_RESTORE: &str = "before restore";

pub struct VersionsApi {
    pub state: AppState,
}

/// One version, without its state.
#[derive(Debug, Clone, Object)]
pub struct VersionView {
    pub id: String,
    pub document_id: String,
    pub label: Option<String>,
    /// Saved by the gateway (quiet time, compaction), not by a request; only
    /// these are pruned past `--keep-versions`.
    pub automatic: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Standard base64.
    pub state_vector: String,
}

impl From<VersionInfo> for VersionView {
    fn from(v: VersionInfo) -> Self {
        Self {
            id: v.id.to_string(),
            document_id: v.document_id,
            label: v.label,
            automatic: v.automatic,
            created_at: v.created_at,
            created_by: v.created_by,
            state_vector: BASE64.encode(v.state_vector),
        }
    }
}

impl From<entity::document_versions::Model> for VersionView {
    fn from(v: entity::document_versions::Model) -> Self {
        Self {
            id: v.id.to_string(),
            document_id: v.document_id,
            label: v.label,
            automatic: v.automatic,
            created_at: v.created_at,
            created_by: v.created_by,
            state_vector: BASE64.encode(v.state_vector),
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct CreateVersionRequest {
    /// Up to 256 characters.
    pub label: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct VersionsPage {
    pub document_id: String,
    /// Newest first.
    pub versions: Vec<VersionView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_before: Option<String>,
}

/// One version with its state and its content as JSON (as `GET .../json`).
#[derive(Debug, Clone, Object)]
pub struct VersionDetail {
    #[oai(flatten)]
    pub version: VersionView,
    /// The whole document as one Yjs v1 update, standard base64.
    pub state: String,
    pub content: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Object)]
pub struct RestoreResponse {
    pub document_id: String,
    /// The live document's state vector after the restore, standard base64.
    pub state_vector: String,
    /// The version restored.
    pub restored: VersionView,
    /// The version saved of the document as it was just before.
    pub before_restore: VersionView,
}

fn parse_version_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request("invalid_version_id", "a version id is a UUID"))
}

impl VersionsApi {
    /// Save the live document as a version.
    async fn save_live(
        &self,
        identity: &Identity,
        document_id: &DocumentId,
        label: Option<String>,
    ) -> Result<entity::document_versions::Model, ApiError> {
        let (state, state_vector) = with_document(&self.state, document_id, async |room| {
            let (raw, _) = self.state.docs.whole_state(room).map_err(doc_error)?;
            Ok((raw.to_vec(), state_vector(room)))
        })
        .await?;
        let history = &self.state.store.history;
        let version = NewVersion {
            document_id,
            label,
            automatic: false,
            created_by: &identity.user_id,
            state,
            state_vector,
        };
        versions::save(
            self.state.store.db(),
            version,
            history.keep_versions,
            history.hooks.as_ref(),
        )
        .await
        .map_err(ApiError::internal)
    }

    async fn find(
        &self,
        document_id: &DocumentId,
        version_id: &str,
    ) -> Result<entity::document_versions::Model, ApiError> {
        let id = parse_version_id(version_id)?;
        versions::get(self.state.store.db(), document_id, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("this document has no such version"))
    }
}

#[OpenApi]
impl VersionsApi {
    /// Save the document as it is now, optionally labelled. Labelled or not,
    /// a version saved here is never pruned. Viewers get 403.
    #[oai(path = "/api/v1/documents/:document_id/versions", method = "post")]
    async fn create_version(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        body: Json<CreateVersionRequest>,
    ) -> Result<Json<VersionView>, ApiError> {
        let (identity, document_id) = authorize_write(&self.state, &auth, &document_id, "versions").await?;
        let label = body
            .0
            .label
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty());
        if label.as_ref().is_some_and(|l| l.chars().count() > MAX_LABEL) {
            return Err(ApiError::bad_request(
                "invalid_label",
                format!("a label is at most {MAX_LABEL} characters"),
            ));
        }
        let saved = self.save_live(&identity, &document_id, label).await?;
        Ok(Json(saved.into()))
    }

    /// The document's versions, newest first, a page at a time.
    #[oai(path = "/api/v1/documents/:document_id/versions", method = "get")]
    async fn list_versions(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        /// Versions per page, 1 to 500 (default 50).
        limit: Query<Option<u32>>,
        /// The `next_before` of the previous page.
        before: Query<Option<String>>,
    ) -> Result<Json<VersionsPage>, ApiError> {
        let (_, document_id) = authorize(&self.state, &auth, &document_id).await?;
        let limit = limit.0.unwrap_or(PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be 1 to {MAX_PAGE}"),
            ));
        }
        let before = before.0.as_deref().map(parse_version_id).transpose()?;
        let mut rows = versions::list(self.state.store.db(), &document_id, before, u64::from(limit) + 1)
            .await
            .map_err(ApiError::internal)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_before = more.then(|| rows.last().map(|v| v.id.to_string())).flatten();
        Ok(Json(VersionsPage {
            document_id: document_id.to_string(),
            versions: rows.into_iter().map(Into::into).collect(),
            next_before,
        }))
    }

    /// One version: its state and its content as JSON.
    #[oai(path = "/api/v1/documents/:document_id/versions/:version_id", method = "get")]
    async fn get_version(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        version_id: Path<String>,
    ) -> Result<Json<VersionDetail>, ApiError> {
        let (_, document_id) = authorize(&self.state, &auth, &document_id).await?;
        let version = self.find(&document_id, &version_id).await?;
        let state = version.state.clone();
        let content = tokio::task::spawn_blocking(move || {
            let doc = crate::crdt::ops::scratch(&state, 1)?;
            crate::crdt::sync::contained(|| crate::crdt::json::render(&doc, &Default::default(), None))
                .flatten()
        })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("a stored version did not render"))?;
        let state = BASE64.encode(&version.state);
        Ok(Json(VersionDetail {
            version: version.into(),
            state,
            content: content.into_iter().collect(),
        }))
    }

    /// Make the live document's content equal to the version's with a
    /// forward update (history is kept; connected clients converge without
    /// reloading), durable before the answer. The document as it was is
    /// saved first as a version labelled `before restore`. Viewers get 403.
    #[oai(
        path = "/api/v1/documents/:document_id/versions/:version_id/restore",
        method = "post"
    )]
    async fn restore_version(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        version_id: Path<String>,
    ) -> Result<Json<RestoreResponse>, ApiError> {
        let (identity, document_id) = authorize_write(&self.state, &auth, &document_id, "restores").await?;
        let version = self.find(&document_id, &version_id).await?;
        let before = self
            .save_live(&identity, &document_id, Some(BEFORE_RESTORE.to_owned()))
            .await?;
        let origin = Origin {
            connection_id: None,
            user_id: identity.user_id.clone(),
        };
        let target = version.state.clone();
        let state_vector = with_document(&self.state, &document_id, async |room| {
            let (done, committed_rx) = tokio::sync::oneshot::channel();
            self.state
                .docs
                .edit(
                    room,
                    &origin,
                    move |doc| crate::crdt::restore::restore(doc, &target),
                    Durable::Notify(done),
                )
                .await
                .map_err(|error| match error {
                    EditError::Build(e) => ApiError::internal(e),
                    EditError::Document(e) => doc_error(e),
                })?;
            let state_vector = state_vector(room);
            committed(committed_rx).await?;
            Ok(state_vector)
        })
        .await?;
        Ok(Json(RestoreResponse {
            document_id: document_id.to_string(),
            state_vector: BASE64.encode(state_vector),
            restored: version.into(),
            before_restore: before.into(),
        }))
    }
}
