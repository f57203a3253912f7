//! Plain data shared by every layer: ids, presence and cursors, leave
//! reasons, device types, a log throttle. No I/O and no wire format.

pub mod device;
pub mod ids;
pub mod log;
pub mod presence;
pub mod revocation;
pub mod text;
pub mod throttle;
