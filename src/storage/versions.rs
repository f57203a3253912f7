//! `document_versions`: save, list, read and prune versions. Automatic
//! versions (quiet time, compaction) are written inside the transaction
//! that causes them (see [`super::document_log`]); labelled ones by the
//! versions API. Only automatic versions are pruned past `--keep-versions`.

use anyhow::Context;
use chrono::Utc;
use entity::document_versions;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use crate::{
    model::ids::DocumentId,
    storage::webhooks::{self, Event},
};

/// A version to save.
pub struct NewVersion<'a> {
    pub document_id: &'a DocumentId,
    pub label: Option<String>,
    pub automatic: bool,
    pub created_by: &'a str,
    pub state: Vec<u8>,
    pub state_vector: Vec<u8>,
}

/// A version without its state (for lists).
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub id: Uuid,
    pub document_id: String,
    pub label: Option<String>,
    pub automatic: bool,
    pub created_at: chrono::DateTime<Utc>,
    pub created_by: String,
    pub state_vector: Vec<u8>,
}

/// Save a version (on `db`, a connection or a transaction), prune the
/// document's automatic versions to `keep`, and queue `document.version_created`
/// for `hooks` in the same transaction.
pub async fn save<C: ConnectionTrait>(
    db: &C,
    version: NewVersion<'_>,
    keep: u64,
    hooks: Option<&webhooks::Hooks>,
) -> anyhow::Result<document_versions::Model> {
    let row = document_versions::Model {
        id: Uuid::now_v7(),
        document_id: version.document_id.as_str().to_owned(),
        label: version.label,
        automatic: version.automatic,
        created_at: Utc::now(),
        created_by: version.created_by.to_owned(),
        state: version.state,
        state_vector: version.state_vector,
    };
    let saved = row
        .into_active_model()
        .reset_all()
        .insert(db)
        .await
        .context("insert version")?;
    if saved.automatic {
        prune(db, version.document_id, keep).await?;
    }
    if let Some(hooks) = hooks {
        let data = serde_json::json!({
            "document_id": saved.document_id,
            "version_id": saved.id.to_string(),
            "label": saved.label,
            "automatic": saved.automatic,
            "created_by": saved.created_by,
        });
        webhooks::enqueue(
            db,
            hooks,
            &Event::document("document.version_created", version.document_id, data),
        )
        .await?;
    }
    Ok(saved)
}

/// Delete the document's automatic versions older than its newest `keep`.
async fn prune<C: ConnectionTrait>(db: &C, document_id: &DocumentId, keep: u64) -> anyhow::Result<()> {
    let stale: Vec<Uuid> = document_versions::Entity::find()
        .select_only()
        .column(document_versions::Column::Id)
        .filter(document_versions::Column::DocumentId.eq(document_id.as_str()))
        .filter(document_versions::Column::Automatic.eq(true))
        .order_by_desc(document_versions::Column::Id)
        .offset(keep)
        .limit(1000)
        .into_tuple()
        .all(db)
        .await
        .context("find versions to prune")?;
    if !stale.is_empty() {
        document_versions::Entity::delete_many()
            .filter(document_versions::Column::Id.is_in(stale))
            .exec(db)
            .await
            .context("prune versions")?;
    }
    Ok(())
}

/// The document's versions, newest first, `limit` of them after `before`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    document_id: &DocumentId,
    before: Option<Uuid>,
    limit: u64,
) -> anyhow::Result<Vec<VersionInfo>> {
    let mut query = document_versions::Entity::find()
        .select_only()
        .columns([
            document_versions::Column::Id,
            document_versions::Column::DocumentId,
            document_versions::Column::Label,
            document_versions::Column::Automatic,
            document_versions::Column::CreatedAt,
            document_versions::Column::CreatedBy,
            document_versions::Column::StateVector,
        ])
        .filter(document_versions::Column::DocumentId.eq(document_id.as_str()));
    if let Some(before) = before {
        query = query.filter(document_versions::Column::Id.lt(before));
    }
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        String,
        Option<String>,
        bool,
        chrono::DateTime<Utc>,
        String,
        Vec<u8>,
    )> = query
        .order_by_desc(document_versions::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
        .context("list versions")?;
    Ok(rows
        .into_iter()
        .map(
            |(id, document_id, label, automatic, created_at, created_by, state_vector)| VersionInfo {
                id,
                document_id,
                label,
                automatic,
                created_at,
                created_by,
                state_vector,
            },
        )
        .collect())
}

/// One version of the document, with its state.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    document_id: &DocumentId,
    id: Uuid,
) -> anyhow::Result<Option<document_versions::Model>> {
    document_versions::Entity::find_by_id(id)
        .filter(document_versions::Column::DocumentId.eq(document_id.as_str()))
        .one(db)
        .await
        .context("read version")
}
