//! tandem: a presence-first realtime gateway.
//!
//! A client opens one WebSocket (`/ws`), authenticates with a JWT and
//! multiplexes JSON messages for many documents over it. The layers, from the
//! bottom up (each imports only those below it; docs/architecture.md):
//! - [`model`]: plain data: ids, presence, cursors, leave reasons, device types.
//! - [`protocol`]: the wire formats: JSON messages and the y-websocket frames, error and close codes.
//! - [`crdt`]: Yjs on yrs: the strict update validator, sync and awareness (pure).
//! - [`auth`]: tokens (HS256, JWKS) and API keys verified into an identity.
//! - [`rooms`]: members, presence and fan-out, the hub of rooms, document operations.
//! - [`storage`]: every SQL statement: the document log, write-behind rows, cleanup, durability checks.
//! - [`cluster`]: the Redis bus between instances.
//! - [`webhooks`]: signed, at-least-once delivery of the webhook outbox.
//! - [`transport`]: the WebSocket upgrade and frames, one connection lifecycle, the JSON and y-websocket handlers.
//! - [`http`]: REST (poem-openapi), the upgrade endpoints, limits, JSON errors.
//! - [`app`]: build, run, graceful shutdown; [`config`]: the typed configuration; [`cli`]: the other subcommands.

pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crdt;
pub mod http;
pub mod limits;
pub mod model;
pub mod protocol;
pub mod rooms;
pub mod state;
pub mod storage;
pub mod transport;
pub mod webhooks;

pub use app::Application;
pub use config::Config;
pub use state::AppState;
