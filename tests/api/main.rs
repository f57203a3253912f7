//! Integration tests: the real gateway on port 0, real sockets and HTTP.

mod api_keys;
mod app_messages;
mod auth;
mod awareness;
mod bad_input;
mod batch;
mod dashboard;
mod demo;
mod documents;
mod durability;
mod helpers;
mod hostile_updates;
mod jwks;
mod limits;
mod metrics;
mod node_peers;
mod presence;
mod provider;
mod rest;
mod resume;
mod revocation;
mod scale_out;
mod slow_readers;
mod storage;
mod token_lifetime;
mod yjs_endpoint;
