//! Yjs documents on yrs: the strict validator in front of yrs ([`validate`]),
//! applying, diffing and loading updates ([`sync`]), and awareness states
//! ([`awareness`]). Pure: no sockets, no database.

pub mod awareness;
pub mod craft;
pub mod json;
pub mod lib0;
pub mod ops;
pub mod restore;
pub mod sync;
pub mod validate;
