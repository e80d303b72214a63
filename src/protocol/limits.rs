//! Size limits both sides of a Volt connection apply.

/// The largest message a Volt takes, and the client's default for what it sends: 16 MiB.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;

pub use super::frame::MAX_FRAME_LEN;
