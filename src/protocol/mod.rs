//! The wire formats: the JSON protocol on `/ws` ([`json`]), its error and
//! close codes ([`codes`]), and the y-websocket binary frames on `/yjs`
//! ([`yjs`]). Pure: bytes in, typed messages out, and back.

pub mod codes;
pub mod json;
pub mod yjs;
