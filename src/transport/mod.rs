//! The WebSocket transport: the upgrade and frames ([`ws`]), the TCP
//! acceptor ([`listener`]), one connection lifecycle shared by both
//! protocols ([`connection`]: open, join, close; [`read_loop`]: liveness,
//! rate limit, frames), and the per-protocol handlers ([`json`], [`yjs`]).

pub mod connection;
pub(crate) mod expiry;
pub mod json;
pub mod listener;
pub mod read_loop;
pub mod writer;
pub mod ws;
pub mod yjs;
