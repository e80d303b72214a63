//! Size limits both sides of a Volt connection apply.

/// The largest protobuf message (native gRPC): the API's 64 MiB of file content, and 64 KiB
/// for the rest of the message.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024 + 64 * 1024;

pub use super::frame::MAX_FRAME_LEN;
