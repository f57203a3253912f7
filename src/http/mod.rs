//! The HTTP edge: REST handlers and views ([`api`]), the error mapping
//! ([`error`]), and per-client limits ([`limits`]).

pub mod api;
pub mod error;
pub mod limits;
pub mod upgrade;
pub mod views;
