//! Request and response messages (postcard). Enum variant order is the wire
//! tag: append new variants at the end, never reorder (docs/protocol.md).

use serde::{Deserialize, Serialize};

/// One request: `id` pairs it with its response (many may be in flight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u32,
    pub body: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The client's protocol version; the device answers with `Response::Version`.
    Version {
        protocol: u16,
    },
    Status,
    /// The last `lines` lines of the system log ring buffer.
    Logs {
        lines: u16,
    },
    /// The kernel log, at most `max_bytes` from its end.
    Dmesg {
        max_bytes: u32,
    },
    Reboot,
    Poweroff,
}

/// What a client may do, from its certificate (subject `O=os:<role>`).
/// Ordered: each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Reads state: version, status, logs, dmesg.
    Reader,
    /// Also reboots, powers off, restarts services.
    Operator,
    /// Also upgrades, rolls back, applies config.
    Admin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl Request {
    /// The least role allowed to make this request.
    pub fn required_role(&self) -> Role {
        match self {
            Request::Version { .. }
            | Request::Status
            | Request::Logs { .. }
            | Request::Dmesg { .. } => Role::Reader,
            Request::Reboot | Request::Poweroff => Role::Operator,
        }
    }

    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Version { .. } => "version",
            Request::Status => "status",
            Request::Logs { .. } => "logs",
            Request::Dmesg { .. } => "dmesg",
            Request::Reboot => "reboot",
            Request::Poweroff => "poweroff",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u32,
    pub body: Result<Response, WireError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Version(VersionInfo),
    Status(Status),
    Logs(Vec<LogLine>),
    Dmesg(String),
    /// The action was accepted and is under way (reboot, poweroff).
    Accepted,
}

/// The small, stable error vocabulary peers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    #[error("request could not be decoded")]
    DecodeFailed,
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    #[error("not supported by this device yet")]
    NotSupported,
    #[error("permission denied for this client's role")]
    PermissionDenied,
    #[error("device error: {0}")]
    Device(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub protocol: u16,
    pub min_protocol: u16,
    /// outpost-init's version (semver string).
    pub init_version: String,
    /// Version of the OS image the device booted (from its manifest).
    pub os_version: String,
    pub board: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub hostname: String,
    /// Slot the device booted from ("A" or "B"); empty in host mode.
    pub slot: String,
    pub os_version: String,
    /// The kernel's boot id (changes on every boot).
    pub boot_id: String,
    pub uptime_ms: u64,
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    /// 1, 5 and 15 minute load averages, times 100.
    pub load_x100: [u32; 3],
    /// Interface addresses as "eth0 10.0.2.15/24".
    pub addresses: Vec<String>,
    /// Resident set size of PID 1 (outpost-init) itself.
    pub init_rss_kib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since boot.
    pub at_ms: u64,
    pub level: LogLevel,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl core::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
        })
    }
}

/// Errors decoding a message that arrived in a whole frame.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {source}")]
pub struct DecodeError {
    what: &'static str,
    #[source]
    source: postcard::Error,
}

impl RequestFrame {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing our own in-memory types into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }
    /// Decode exactly one request; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_exact(bytes, "request")
    }
}

impl ResponseFrame {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_exact(bytes, "response")
    }
}

fn decode_exact<'a, T: Deserialize<'a>>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned bytes: these are the wire format; changing them breaks old peers.
    #[test]
    fn request_bytes_are_pinned() {
        let cases: &[(Request, &[u8])] = &[
            (Request::Version { protocol: 1 }, &[5, 0, 1]),
            (Request::Status, &[5, 1]),
            (Request::Logs { lines: 300 }, &[5, 2, 0xac, 0x02]),
            (Request::Dmesg { max_bytes: 100 }, &[5, 3, 100]),
            (Request::Reboot, &[5, 4]),
            (Request::Poweroff, &[5, 5]),
        ];
        for (req, bytes) in cases {
            let frame = RequestFrame {
                id: 5,
                body: req.clone(),
            };
            assert_eq!(frame.encode(), *bytes, "{req:?}");
            assert_eq!(RequestFrame::decode(bytes).unwrap(), frame);
        }
    }

    #[test]
    fn roles_are_ordered_and_required_per_request() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Reader);
        assert_eq!(Request::Status.required_role(), Role::Reader);
        assert_eq!(Request::Reboot.required_role(), Role::Operator);
        for r in [Role::Reader, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn status_request_fits_target() {
        // Length prefix + id + tag: the DESIGN target is <= 8 bytes.
        let framed = crate::wire::encode_frame(
            &RequestFrame {
                id: 1,
                body: Request::Status,
            }
            .encode(),
            64,
        )
        .unwrap();
        assert_eq!(framed, vec![2, 1, 1]);
    }

    #[test]
    fn response_round_trip() {
        let frame = ResponseFrame {
            id: 300,
            body: Ok(Response::Status(Status {
                hostname: "edge-1".into(),
                slot: "A".into(),
                os_version: "0.1.0".into(),
                boot_id: "b".into(),
                uptime_ms: 1234,
                mem_total_kib: 1,
                mem_available_kib: 2,
                load_x100: [1, 2, 3],
                addresses: vec!["eth0 10.0.2.15/24".into()],
                init_rss_kib: 900,
            })),
        };
        assert_eq!(ResponseFrame::decode(&frame.encode()).unwrap(), frame);
        let err = ResponseFrame {
            id: 1,
            body: Err(WireError::PermissionDenied),
        };
        assert_eq!(err.encode(), vec![1, 1, 3]);
        assert_eq!(ResponseFrame::decode(&err.encode()).unwrap(), err);
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(RequestFrame::decode(&[]).is_err());
        assert!(RequestFrame::decode(&[1]).is_err());
        assert!(
            RequestFrame::decode(&[1, 99]).is_err(),
            "unknown method tag"
        );
        assert!(RequestFrame::decode(&[1, 1, 0]).is_err(), "trailing byte");
        assert!(RequestFrame::decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn every_short_prefix_of_a_response_fails_cleanly() {
        let bytes = ResponseFrame {
            id: 9,
            body: Ok(Response::Dmesg("kernel says hi".into())),
        }
        .encode();
        for n in 0..bytes.len() {
            assert!(ResponseFrame::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }
}
