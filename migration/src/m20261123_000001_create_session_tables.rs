//! `user_sessions` and `document_presence`.
//!
//! Indexes, each for a query the gateway runs:
//! - `user_sessions.connection_id` unique: one row per socket, looked up by it.
//! - `idx_user_sessions_user_active (user_id, is_active)`: `GET /api/v1/users/{id}/sessions`.
//! - `idx_user_sessions_active_seen (is_active, last_seen_at)`: the stale-session sweep.
//! - `idx_user_sessions_instance_active (instance_id, is_active)`: shutdown and dead-instance
//!   cleanup deactivate one instance's sessions.
//! - `idx_document_presence_doc_session` unique `(document_id, session_id)`: the upsert key,
//!   and (as its prefix) "who is in this document".
//! - `idx_document_presence_session (session_id)`: deactivating a session's presence rows.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UserSessions::Table)
                    .if_not_exists()
                    .col(uuid(UserSessions::Id).primary_key())
                    .col(string_len(UserSessions::UserId, 256))
                    .col(string_len_null(UserSessions::UserName, 256))
                    .col(uuid_uniq(UserSessions::ConnectionId))
                    .col(boolean(UserSessions::IsActive))
                    .col(string_len_null(UserSessions::UserAgent, 512))
                    .col(string_len_null(UserSessions::IpAddress, 64))
                    .col(string_len(UserSessions::DeviceType, 16))
                    .col(string_len_null(UserSessions::CurrentDocumentId, 256))
                    .col(string_len(UserSessions::InstanceId, 64))
                    .col(timestamp_with_time_zone(UserSessions::CreatedAt))
                    .col(timestamp_with_time_zone(UserSessions::LastSeenAt))
                    .col(timestamp_with_time_zone_null(UserSessions::DisconnectedAt))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "idx_user_sessions_user_active",
                [UserSessions::UserId, UserSessions::IsActive],
            ),
            (
                "idx_user_sessions_active_seen",
                [UserSessions::IsActive, UserSessions::LastSeenAt],
            ),
            (
                "idx_user_sessions_instance_active",
                [UserSessions::InstanceId, UserSessions::IsActive],
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(UserSessions::Table)
                        .col(columns[0])
                        .col(columns[1])
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(DocumentPresence::Table)
                    .if_not_exists()
                    .col(uuid(DocumentPresence::Id).primary_key())
                    .col(string_len(DocumentPresence::DocumentId, 256))
                    .col(string_len(DocumentPresence::UserId, 256))
                    .col(uuid(DocumentPresence::SessionId))
                    .col(boolean(DocumentPresence::IsActive))
                    .col(boolean(DocumentPresence::IsEditing))
                    .col(big_integer_null(DocumentPresence::CursorLine))
                    .col(big_integer_null(DocumentPresence::CursorColumn))
                    .col(big_integer_null(DocumentPresence::SelectionStartLine))
                    .col(big_integer_null(DocumentPresence::SelectionStartColumn))
                    .col(big_integer_null(DocumentPresence::SelectionEndLine))
                    .col(big_integer_null(DocumentPresence::SelectionEndColumn))
                    .col(timestamp_with_time_zone(DocumentPresence::JoinedAt))
                    .col(timestamp_with_time_zone(DocumentPresence::LastSeenAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_document_presence_session")
                            .from(DocumentPresence::Table, DocumentPresence::SessionId)
                            .to(UserSessions::Table, UserSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_document_presence_doc_session")
                    .table(DocumentPresence::Table)
                    .col(DocumentPresence::DocumentId)
                    .col(DocumentPresence::SessionId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_document_presence_session")
                    .table(DocumentPresence::Table)
                    .col(DocumentPresence::SessionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DocumentPresence::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(UserSessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum UserSessions {
    Table,
    Id,
    UserId,
    UserName,
    ConnectionId,
    IsActive,
    UserAgent,
    IpAddress,
    DeviceType,
    CurrentDocumentId,
    InstanceId,
    CreatedAt,
    LastSeenAt,
    DisconnectedAt,
}

#[derive(DeriveIden)]
enum DocumentPresence {
    Table,
    Id,
    DocumentId,
    UserId,
    SessionId,
    IsActive,
    IsEditing,
    CursorLine,
    CursorColumn,
    SelectionStartLine,
    SelectionStartColumn,
    SelectionEndLine,
    SelectionEndColumn,
    JoinedAt,
    LastSeenAt,
}
