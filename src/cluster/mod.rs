//! Several instances as one: the Redis bus that carries room events between
//! them, the delivery of other instances' events into local rooms, and
//! revocations that reach every instance, and sessions that move to the
//! instance their client reconnected to; each instance subscribes only to
//! the documents it holds.

pub mod bus;
pub mod claims;
pub mod delivery;
pub mod resume;
pub mod revoke;
pub(crate) mod subscriptions;
