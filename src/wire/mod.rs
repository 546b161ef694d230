//! The management protocol: messages, framing and limits, shared by the device
//! and the CLI. No I/O here; see `docs/protocol.md` for the byte-level spec.

mod frame;
mod message;

pub use frame::{encode_frame, FeedResult, FrameDecoder, FrameError};
pub use message::*;

/// Version of the protocol spoken by this build. A peer states its version in
/// `Request::Version`; the device answers with the range it supports.
pub const PROTOCOL_VERSION: u16 = 1;
/// Oldest protocol version this build still understands.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Largest request frame the device accepts (payload bytes, without the length
/// prefix). Requests are tiny; the cap leaves room for upload chunks later.
pub const MAX_REQUEST_FRAME: usize = 16 * 1024;
/// Largest response frame (logs and dmesg are cut to fit).
pub const MAX_RESPONSE_FRAME: usize = 64 * 1024;
/// TLS port the device API listens on (the same as Talos's apid).
pub const DEFAULT_API_PORT: u16 = 50000;
