//! `user_sessions.resumed_count`: how often a session was resumed after its
//! socket dropped (`/ws?resume=`), so operators can see how many network
//! blips presence absorbed instead of showing as leave and join.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UserSessions::Table)
                    .add_column(integer(UserSessions::ResumedCount).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UserSessions::Table)
                    .drop_column(UserSessions::ResumedCount)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UserSessions {
    Table,
    ResumedCount,
}
