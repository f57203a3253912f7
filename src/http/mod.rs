//! The HTTP edge: REST handlers and views ([`api`]), the admin API
//! ([`admin`]: revocation), app messages from backends ([`messages`]), the
//! operator's live view ([`dashboard`]), the demo page ([`demo`]), Prometheus metrics ([`metrics`]), the error mapping
//! ([`error`]), and the upgrade endpoints ([`upgrade`]); the per-client
//! limits they enforce live in [`crate::limits`].

pub mod access;
pub mod admin;
pub mod api;
pub mod dashboard;
pub mod demo;
pub mod document_json;
pub mod error;
pub mod messages;
pub mod metrics;
pub mod upgrade;
pub mod versions;
pub mod views;
