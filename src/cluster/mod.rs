//! Several instances as one: the Redis bus that carries room events between
//! them, and the delivery of other instances' events into local rooms.

pub mod bus;
pub mod delivery;
