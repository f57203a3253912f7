//! Plain data shared by every layer: ids, presence and cursors, leave
//! reasons, device types. No I/O and no wire format.

pub mod device;
pub mod ids;
pub mod log;
pub mod presence;
pub mod text;
