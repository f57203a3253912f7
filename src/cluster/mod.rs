//! Several instances as one: the Redis bus that carries room events between
//! them, the delivery of other instances' events into local rooms, and
//! revocations that reach every instance.

pub mod bus;
pub mod delivery;
pub mod revoke;
