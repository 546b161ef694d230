//! Two error vocabularies: `WireError` is what peers see (small, stable);
//! `DecodeError` is ours, with the postcard detail.

use serde::{Deserialize, Serialize};

/// The small, stable error vocabulary peers see. Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// Tag 0: The request frame did not decode (unknown method, bad fields).
    #[error("request could not be decoded")]
    DecodeFailed,
    /// Tag 1.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// Tag 2: The method exists but this device does not implement it yet.
    #[error("not supported by this device yet")]
    NotSupported,
    /// Tag 3.
    #[error("permission denied for this client's role")]
    PermissionDenied,
    /// Tag 4: The device tried and failed; the text says why.
    #[error("device error: {0}")]
    Device(String),
    /// Tag 5: Too many requests in flight on this connection; retry later.
    #[error("too many requests in flight")]
    Busy,
    /// Tag 6: The request is valid but wrong now or for its arguments; the text says why.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Errors decoding a message that arrived in a whole frame.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {source}")]
pub struct DecodeError {
    what: &'static str,
    #[source]
    source: postcard::Error,
}

/// Decode exactly one `T`; trailing bytes are an error.
pub(super) fn decode_exact<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|source| DecodeError { what, source })?;
    if !rest.is_empty() {
        return Err(DecodeError {
            what,
            source: postcard::Error::DeserializeBadEncoding,
        });
    }
    Ok(value)
}
