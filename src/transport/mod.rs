//! The WebSocket transport: the upgrade and frames ([`ws`]), the TCP
//! acceptor ([`listener`]), one connection lifecycle shared by both
//! protocols ([`connection`]), and the per-protocol handlers ([`json`],
//! [`yjs`]).

pub mod connection;
pub mod json;
pub mod listener;
pub mod ws;
pub mod yjs;
