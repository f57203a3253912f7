//! Schema migrations, run by the gateway at start-up and by the `migration` CLI.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_session_tables;
mod m20261123_000002_create_document_tables;
mod m20261125_000001_create_health_probes;
mod m20261125_000002_create_document_authors;
mod m20261125_000003_create_api_keys;
mod m20261207_000001_add_resumed_count;
mod m20261207_000002_create_document_versions;
mod m20261207_000003_create_webhook_outbox;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_session_tables::Migration),
            Box::new(m20261123_000002_create_document_tables::Migration),
            Box::new(m20261125_000001_create_health_probes::Migration),
            Box::new(m20261125_000002_create_document_authors::Migration),
            Box::new(m20261125_000003_create_api_keys::Migration),
            Box::new(m20261207_000001_add_resumed_count::Migration),
            Box::new(m20261207_000002_create_document_versions::Migration),
            Box::new(m20261207_000003_create_webhook_outbox::Migration),
        ]
    }
}
