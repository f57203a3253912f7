//! SeaORM entities shared by the gateway and the migrator.
//!
//! The tables are the durable side of tandem: sessions and presence are written
//! behind the in-memory state (the live truth for a running instance), documents
//! are written before an update is acknowledged.

pub mod api_keys;
pub mod document_authors;
pub mod document_presence;
pub mod document_snapshots;
pub mod document_updates;
pub mod document_versions;
pub mod health_probes;
pub mod user_sessions;
pub mod webhook_outbox;

pub mod prelude {
    //! The entities under their table-like names.
    pub use super::api_keys::Entity as ApiKeys;
    pub use super::document_authors::Entity as DocumentAuthors;
    pub use super::document_presence::Entity as DocumentPresence;
    pub use super::document_snapshots::Entity as DocumentSnapshots;
    pub use super::document_updates::Entity as DocumentUpdates;
    pub use super::document_versions::Entity as DocumentVersions;
    pub use super::health_probes::Entity as HealthProbes;
    pub use super::user_sessions::Entity as UserSessions;
    pub use super::webhook_outbox::Entity as WebhookOutbox;
}
