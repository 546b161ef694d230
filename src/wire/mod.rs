//! The management protocol: messages, framing and limits, shared by the device
//! and the CLI. No I/O here; `docs/protocol.md` is the byte-level spec.

pub mod envelope;
mod error;
mod frame;
pub mod logtext;
mod request;
mod response;
pub mod revocation;
pub mod seal;
pub mod serial;

pub use error::{DecodeError, WireError};
pub use frame::{encode_frame, FeedResult, FrameDecoder, FrameError};
pub use request::{ApplyMode, LogSource, Request, RequestFrame, Role, ServiceAction};
pub use response::*;

/// Version of the protocol spoken by this build. A peer states its version in
/// `Request::Version`; the device answers with the newest both understand.
pub const PROTOCOL_VERSION: u16 = 1;
/// Oldest protocol version this build still understands.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Largest request frame the device accepts (payload bytes, without the length
/// prefix): an upload chunk of `MAX_CHUNK` plus its header fits.
pub const MAX_REQUEST_FRAME: usize = 16 * 1024;
/// Largest upload chunk: 8 KiB keeps a lost TLS record cheap on LTE while the
/// per-chunk overhead (~12 bytes) stays under 0.2 %.
pub const MAX_CHUNK: usize = 8 * 1024;
/// Largest response frame (logs and dmesg are cut to fit).
pub const MAX_RESPONSE_FRAME: usize = 64 * 1024;
/// Requests one connection may have in flight; more are answered `Busy`.
pub const MAX_IN_FLIGHT: usize = 8;
/// TLS port the device API listens on (the same as Talos's apid).
pub const DEFAULT_API_PORT: u16 = 50000;
