//! Session reads for REST: a user's active sessions a page at a time, and the
//! database round trip `/health` makes.

use anyhow::Context;
use entity::user_sessions;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

/// Up to `limit` active sessions of `user_id` whose id is after `after`, by id.
pub async fn active_sessions_page(
    db: &DatabaseConnection,
    user_id: &str,
    after: Option<Uuid>,
    limit: u64,
) -> anyhow::Result<Vec<user_sessions::Model>> {
    let mut query = user_sessions::Entity::find()
        .filter(user_sessions::Column::UserId.eq(user_id))
        .filter(user_sessions::Column::IsActive.eq(true));
    if let Some(after) = after {
        query = query.filter(user_sessions::Column::Id.gt(after));
    }
    query
        .order_by_asc(user_sessions::Column::Id)
        .limit(limit)
        .all(db)
        .await
        .context("read a page of sessions")
}

/// One round trip to the database.
pub async fn ping(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared("SELECT 1").await.context("SELECT 1")?;
    Ok(())
}
