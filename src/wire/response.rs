//! Responses. A request gets one response, or for a stream (`Logs { follow }`)
//! several with the same id and then `End`. Variant order is the wire tag:
//! append only (docs/protocol.md).

use serde::{Deserialize, Serialize};

use super::error::{DecodeError, WireError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u32,
    pub body: Result<Response, WireError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Tag 0.
    Version(VersionInfo),
    /// Tag 1.
    Status(Status),
    /// Tag 2: Log lines, oldest first.
    Logs(Vec<LogLine>),
    /// Tag 3: Kernel log text.
    Dmesg(String),
    /// Tag 4: The action was accepted and is under way (reboot, poweroff, service action).
    Accepted,
    /// Tag 5: Answer to `Ping`.
    Pong,
    /// Tag 6: The end of a stream.
    End,
    /// Tag 7.
    Services(Vec<ServiceInfo>),
    /// Tag 8: The machine config in force (TOML).
    Config(String),
    /// Tag 9: What a config apply changes (or, with dry run, would change).
    ConfigPlan(ConfigPlan),
    /// Tag 10.
    Time(TimeInfo),
    /// Tag 11.
    Metrics(Metrics),
    /// Tag 12.
    Network(NetworkInfo),
    /// Tag 13: Upload progress: the next offset the device wants.
    Upload(UploadState),
    /// Tag 14: The A/B slots.
    Slots(SlotsInfo),
    /// Tag 15: A persisted log of an earlier boot (answer to `BootLogs`):
    /// whole lines, oldest first.
    BootLog(String),
    /// Tag 16: The configured links (answer to `Links`).
    Links(Vec<LinkInfo>),
    /// Tag 17: Answer to `DeltaPlan`: bit i (LSB first) set = the device
    /// holds chunk i of the new image; only the others need to be sent.
    DeltaPlan { have: Vec<u8> },
    /// Tag 18: The site revocation list in force on the device, if any
    /// (answer to `Revocations` and `InstallRevocations`).
    Revocations(Option<RevocationInfo>),
    /// Tag 19: Answer to `BootLogBytes`: `bytes` of the log from `offset`
    /// (empty at or past its end), and the log's `total` length.
    LogBytes {
        total: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
}

/// A site revocation list a device holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationInfo {
    /// When the site issued it (`thisUpdate`, `YYYYMMDDHHMMSSZ`).
    pub issued: String,
    /// Certificates on it.
    pub revoked: u32,
}

/// One configured link (docs/network.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The config's name ("wan", "lte").
    pub name: String,
    /// Its interface ("" while none matched yet).
    pub iface: String,
    /// The metric its routes have now (priority; + 10000 while down).
    pub metric: u32,
    pub healthy: bool,
    pub carrier: bool,
    /// Probe misses in a row.
    pub probe_misses: u32,
    /// Times it went down since boot.
    pub downs: u32,
    /// "10.0.2.15/24 via 10.0.2.2", or "".
    pub address: String,
    pub dns: Vec<String>,
    /// How it is addressed, or why it is not.
    pub note: String,
    /// Bytes received and sent since boot.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Bytes this calendar month (UTC), across boots.
    pub month_bytes: u64,
    /// The monthly budget in bytes, if one is set.
    pub budget_bytes: Option<u64>,
    pub modem: Option<ModemInfo>,
    /// Watchdog steps and state changes, newest last.
    pub events: Vec<String>,
}

/// A modem's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModemInfo {
    /// "connected", "dialling", or the last error.
    pub state: String,
    pub sim: String,
    pub registration: String,
    pub operator: String,
    pub signal_dbm: Option<i16>,
    pub rsrp_dbm: Option<i16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub protocol: u16,
    pub min_protocol: u16,
    /// outpost-init's version (semver string).
    pub init_version: String,
    /// Version of the OS image the device booted (from its release file).
    pub os_version: String,
    pub board: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub hostname: String,
    /// Slot the device booted from ("A" or "B").
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    /// "running", "stopped", "failed", "backoff", ...
    pub state: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Exit code or signal of the last run, as text ("exit 1", "signal 9").
    pub last_exit: Option<String>,
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPlan {
    /// One line per changed field: "network.mode: dhcp -> static".
    pub changes: Vec<String>,
    pub needs_reboot: bool,
    /// False for a dry run.
    pub applied: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeInfo {
    /// Device clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// "rtc", "restored", "build-time" or "sntp" (docs/time.md).
    pub source: String,
    pub synced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub uptime_ms: u64,
    /// Cumulative CPU time in ms: user, nice, system, idle, iowait (all CPUs).
    pub cpu_ms: [u64; 5],
    pub cpus: u32,
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub load_x100: [u32; 3],
    /// DATA filesystem, KiB.
    pub disk_total_kib: u64,
    pub disk_free_kib: u64,
    pub net: Vec<NetCounters>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    pub iface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// "eth0 up 52:54:00:12:34:56 mtu 1500"
    pub links: Vec<String>,
    /// "eth0 10.0.2.15/24"
    pub addresses: Vec<String>,
    /// "default via 10.0.2.2 dev eth0"
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// Names this upload in `UploadChunk` (2 bytes instead of a 32-byte hash).
    pub handle: u16,
    /// Bytes received and verified so far: send from here.
    pub offset: u64,
    pub size: u64,
    /// All bytes received and the SHA-256 matched.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsInfo {
    /// The slot this boot came from.
    pub booted: String,
    /// The slot U-Boot tries first.
    pub primary: String,
    pub slots: Vec<SlotInfo>,
    /// What the last upgrade or fallback did, in words ("committed 1.2.0 in B",
    /// "B did not come up healthy (watchdog); back on A").
    pub last_event: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub name: String,
    /// "active", "good", "trial" (booting with attempts, not yet healthy), "bad" (no attempts left), "empty".
    pub state: String,
    pub attempts_left: u8,
    pub version: Option<String>,
}

impl ResponseFrame {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        super::error::decode_exact(bytes, "response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
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
        }
    }

    #[test]
    fn response_bytes_are_pinned() {
        let cases: &[(Result<Response, WireError>, &[u8])] = &[
            (Ok(Response::Pong), &[1, 0, 5]),
            (Ok(Response::Accepted), &[1, 0, 4]),
            (Ok(Response::End), &[1, 0, 6]),
            (Err(WireError::PermissionDenied), &[1, 1, 3]),
            (Err(WireError::Busy), &[1, 1, 5]),
            (
                Ok(Response::Upload(UploadState {
                    handle: 2,
                    offset: 512,
                    size: 1024,
                    complete: false,
                })),
                &[1, 0, 13, 2, 0x80, 0x04, 0x80, 0x08, 0],
            ),
            (Ok(Response::Revocations(None)), &[1, 0, 18, 0]),
            (
                Ok(Response::Revocations(Some(RevocationInfo {
                    issued: "20261207120000Z".into(),
                    revoked: 3,
                }))),
                b"\x01\x00\x12\x01\x0f20261207120000Z\x03",
            ),
        ];
        for (body, bytes) in cases {
            let frame = ResponseFrame {
                id: 1,
                body: body.clone(),
            };
            assert_eq!(frame.encode(), *bytes, "{body:?}");
            assert_eq!(ResponseFrame::decode(bytes).unwrap(), frame);
        }
    }

    #[test]
    fn round_trips() {
        let bodies = vec![
            Response::Status(status()),
            Response::Services(vec![ServiceInfo {
                name: "web".into(),
                state: "running".into(),
                pid: Some(42),
                restarts: 1,
                last_exit: Some("exit 1".into()),
                uptime_ms: 5,
            }]),
            Response::ConfigPlan(ConfigPlan {
                changes: vec!["a: 1 -> 2".into()],
                needs_reboot: true,
                applied: false,
            }),
            Response::Time(TimeInfo {
                unix_ms: 1,
                source: "rtc".into(),
                synced: false,
            }),
            Response::Network(NetworkInfo {
                links: vec!["eth0 up".into()],
                addresses: vec![],
                routes: vec!["default via 10.0.2.2 dev eth0".into()],
            }),
            Response::Logs(vec![LogLine {
                at_ms: 1,
                level: LogLevel::Warn,
                text: "w".into(),
            }]),
        ];
        for body in bodies {
            let frame = ResponseFrame {
                id: 300,
                body: Ok(body),
            };
            assert_eq!(ResponseFrame::decode(&frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn every_short_prefix_of_a_response_fails_cleanly() {
        let bytes = ResponseFrame {
            id: 9,
            body: Ok(Response::Status(status())),
        }
        .encode();
        for n in 0..bytes.len() {
            assert!(ResponseFrame::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }
}
