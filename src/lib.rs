//! tandem: a presence-first realtime gateway.
//!
//! A client opens one WebSocket (`/ws`), authenticates with a JWT and
//! multiplexes JSON messages for many documents over it. The layers:
//! - [`protocol`]: wire types, decode/validate once, error and close codes (pure).
//! - [`room`] / [`hub`]: in-memory rooms, members and fan-out (pure state + non-blocking sends).
//! - [`sync`] / [`awareness`]: Yjs updates and awareness on yrs, validated (pure).
//! - [`documents`] / [`store`]: load on first join, apply and relay, group-committed persistence, compaction.
//! - [`durability`]: the connection acknowledged updates commit on, and whether writes really land.
//! - [`session`]: one socket: reader, bounded writer queue, liveness, rate limit.
//! - [`yws`] / [`yjs_session`]: the y-websocket binary endpoint on the same rooms.
//! - [`write_behind`]: coalesced session/presence rows flushed to the database.
//! - [`bus`]: fan-out between instances through Redis (optional), liveness of instances.
//! - [`cleanup`]: the stale-session sweep, which also clears a crashed process's rows.
//! - [`http`]: REST (poem-openapi), the `/ws` upgrade, JSON errors.
//! - [`listener`] / [`limits`]: handshake deadline and cap, connection caps per IP and user, REST rate limit.
//! - [`app`]: build, run, graceful shutdown; [`config`]: the typed configuration.

pub mod app;
pub mod auth;
pub mod awareness;
pub mod bus;
pub mod cleanup;
pub mod config;
pub mod db;
pub mod device;
pub mod documents;
pub mod durability;
pub mod error;
pub mod http;
pub mod hub;
pub mod limits;
pub mod listener;
pub mod presence;
pub mod protocol;
pub mod room;
pub mod session;
pub mod store;
pub mod sync;
pub mod validate;
pub mod write_behind;
pub mod ws;
pub mod yjs_session;
pub mod yws;

pub use app::{AppState, Application};
pub use config::Config;
