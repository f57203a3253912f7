//! Every SQL statement: the document log and snapshots ([`document_log`]),
//! session and presence rows written behind ([`write_behind`]), cleanup
//! queries ([`cleanup`]), the connection acknowledged writes commit on
//! ([`durability`]), document versions ([`versions`]), the webhook outbox
//! ([`webhooks`]), and the database connection itself ([`db`]).

pub mod api_keys;
pub mod cleanup;
pub mod db;
pub mod document_log;
pub mod durability;
pub mod persister;
pub mod sessions;
pub mod versions;
pub mod webhooks;
pub mod write_behind;
