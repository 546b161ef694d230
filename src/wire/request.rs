//! Requests. A request borrows its strings and bytes from the frame it was
//! decoded from, so the device decodes without allocating. Variant order is the
//! wire tag: append new variants at the end, never reorder (docs/protocol.md).

use serde::{Deserialize, Serialize};

use super::error::DecodeError;

/// One request: `id` pairs it with its answer(s); many may be in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame<'a> {
    pub id: u32,
    #[serde(borrow)]
    pub body: Request<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Tag 0: The client's newest protocol version; answered with `Version`.
    Version { protocol: u16 },
    /// Tag 1: Identity, slot, uptime, memory, load, addresses.
    Status,
    /// Tag 2: The newest `lines` lines of the system log (`service: None`) or of one
    /// service; with `follow`, new lines keep coming until `Cancel` or hang-up.
    Logs {
        #[serde(borrow)]
        service: Option<&'a str>,
        lines: u16,
        follow: bool,
    },
    /// Tag 3: The kernel log, at most `max_bytes` from its end.
    Dmesg { max_bytes: u32 },
    /// Tag 4.
    Reboot,
    /// Tag 5.
    Poweroff,
    /// Tag 6: Echo / keepalive; answered with `Pong`.
    Ping,
    /// Tag 7: Stop a streaming request (`Logs { follow }`) of this connection.
    Cancel { id: u32 },
    /// Tag 8: The supervised services.
    Services,
    /// Tag 9: Start, stop or restart one service.
    Service {
        #[serde(borrow)]
        name: &'a str,
        action: ServiceAction,
    },
    /// Tag 10: The machine config in force (TOML).
    ConfigGet,
    /// Tag 11: Apply a machine config (TOML); `dry_run` only reports the changes.
    ConfigApply {
        #[serde(borrow)]
        config: &'a str,
        mode: ApplyMode,
        dry_run: bool,
    },
    /// Tag 12: The device clock and its sync state.
    Time,
    /// Tag 13: CPU, memory, disk and network counters.
    Metrics,
    /// Tag 14: Links, addresses, routes.
    Network,
    /// Tag 15: Start or resume the upload of an artifact named by its SHA-256;
    /// answered with `Upload { handle, offset }`: send from `offset` on.
    UploadBegin { sha256: [u8; 32], size: u64 },
    /// Tag 16: One chunk at `offset` of the upload `handle`.
    UploadChunk {
        handle: u16,
        offset: u64,
        #[serde(borrow, with = "serde_bytes_compat")]
        data: &'a [u8],
    },
    /// Tag 17: Install an uploaded bundle into the inactive slot.
    Upgrade {
        sha256: [u8; 32],
        stage: bool,
        force: bool,
    },
    /// Tag 18: Switch back to the other (good) slot.
    Rollback,
    /// Tag 19: The A/B slots: which booted, which is primary, attempts, last event.
    Slots,
    /// Tag 20: `ConfigApply` with options: `force` applies a config that would
    /// cut the board off its management network; `try_secs` is how long a
    /// `Try` waits for `ConfigConfirm` before it reverts (0 = the default, 60 s).
    ConfigApplyOpts {
        #[serde(borrow)]
        config: &'a str,
        mode: ApplyMode,
        dry_run: bool,
        force: bool,
        try_secs: u16,
    },
    /// Tag 21: Keep the config applied with `Try` (answered `Accepted`).
    ConfigConfirm,
    /// Tag 22: The persisted system or kernel log of an earlier boot (`boot`:
    /// 1 = the previous boot, 0 = this boot as written to DATA), at most
    /// `max_bytes` from its end; answered with `BootLog`.
    BootLogs {
        source: LogSource,
        boot: u8,
        max_bytes: u32,
    },
    /// Tag 23: Blink the status LED in its identify pattern for `seconds`
    /// (0 stops it), so a technician finds this board; answered `Accepted`.
    Identify { seconds: u16 },
    /// Tag 24: The configured links: health, metric, addressing, modem,
    /// data used, watchdog steps; answered with `Links`.
    Links,
    /// Tag 25: Which chunks of a delta upgrade the device can produce itself.
    /// `manifest` names an uploaded artifact: a bundle's preamble, header and
    /// signature. Answered `DeltaPlan` (checked like `Upgrade`, `force` alike).
    DeltaPlan { manifest: [u8; 32], force: bool },
    /// Tag 26: Assemble the inactive slot from local chunks and the uploaded
    /// delta payload `payload` (docs/upgrades.md), then switch as `Upgrade`.
    DeltaInstall {
        manifest: [u8; 32],
        payload: [u8; 32],
        stage: bool,
        force: bool,
    },
    /// Tag 27: The site revocation list the device holds; answered
    /// `Revocations`.
    Revocations,
    /// Tag 28: Install the site's revocation list (a DER X.509 CRL signed by
    /// the site CA, ≤ `revocation::MAX_CRL_BYTES`, not older than the one
    /// held); answered `Revocations` with the list now in force.
    InstallRevocations {
        #[serde(borrow, with = "serde_bytes_compat")]
        crl: &'a [u8],
    },
    /// Tag 29: Raw bytes of the persisted system or kernel log of an earlier
    /// boot (`boot` ≥ 1: its logs no longer change), from `offset` of the
    /// log (`.old` then current file, as one stream), as many as fit a
    /// frame; answered `LogBytes`. Whole logs page with it, pipelined (the
    /// first answer gives the total); the client cuts lines.
    BootLogBytes {
        source: LogSource,
        boot: u8,
        offset: u64,
    },
}

/// Which persisted log `BootLogs` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSource {
    /// outpost-init's own log (tracing).
    System,
    /// The kernel log (/dev/kmsg).
    Kernel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
}

/// How a config is applied (as Talos's apply modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyMode {
    /// Apply now, without a reboot; refused if a change needs one.
    NoReboot,
    /// Apply and reboot.
    Reboot,
    /// Apply at the next boot.
    Staged,
    /// Apply now; revert unless confirmed before a timeout.
    Try,
}

/// `&[u8]` as a postcard byte string (varint length + bytes), borrowed.
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }
    pub(super) fn deserialize<'de: 'a, 'a, D: Deserializer<'de>>(
        d: D,
    ) -> Result<&'a [u8], D::Error> {
        <&[u8]>::deserialize(d)
    }
}

/// What a client may do, from its certificate (subject `O=os:<role>`).
/// Ordered: each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Reads state: version, status, logs, dmesg, services, config, metrics.
    Reader,
    /// Also reboots, powers off, starts/stops/restarts services.
    Operator,
    /// Also uploads, upgrades, rolls back, applies config.
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

impl Request<'_> {
    /// The least role allowed to make this request.
    pub fn required_role(&self) -> Role {
        use Request::*;
        match self {
            Version { .. }
            | Status
            | Logs { .. }
            | Dmesg { .. }
            | Ping
            | Cancel { .. }
            | Services
            | ConfigGet
            | Slots
            | BootLogs { .. }
            | Time
            | Metrics
            | Network
            | Links
            | Revocations
            | BootLogBytes { .. } => Role::Reader,
            Reboot | Poweroff | Service { .. } | Identify { .. } => Role::Operator,
            ConfigApply { .. }
            | ConfigApplyOpts { .. }
            | ConfigConfirm
            | UploadBegin { .. }
            | UploadChunk { .. }
            | Upgrade { .. }
            | DeltaPlan { .. }
            | DeltaInstall { .. }
            | InstallRevocations { .. }
            | Rollback => Role::Admin,
        }
    }

    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        use Request::*;
        match self {
            Version { .. } => "version",
            Status => "status",
            Logs { .. } => "logs",
            Dmesg { .. } => "dmesg",
            Reboot => "reboot",
            Poweroff => "poweroff",
            Ping => "ping",
            Cancel { .. } => "cancel",
            Services => "services",
            Service { .. } => "service",
            ConfigGet => "config get",
            ConfigApply { .. } => "config apply",
            Time => "time",
            Metrics => "metrics",
            Network => "network",
            UploadBegin { .. } => "upload begin",
            UploadChunk { .. } => "upload chunk",
            Upgrade { .. } => "upgrade",
            Rollback => "rollback",
            Slots => "slots",
            ConfigApplyOpts { .. } => "config apply",
            ConfigConfirm => "config confirm",
            BootLogs { .. } => "boot logs",
            Identify { .. } => "identify",
            Links => "links",
            DeltaPlan { .. } => "delta plan",
            DeltaInstall { .. } => "delta install",
            Revocations => "revocations",
            InstallRevocations { .. } => "install revocations",
            BootLogBytes { .. } => "boot log bytes",
        }
    }
}

impl<'a> RequestFrame<'a> {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing our own in-memory types into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }
    /// Decode exactly one request, borrowing from `bytes`; trailing bytes are an error.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        super::error::decode_exact(bytes, "request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned bytes: these are the wire format; changing them breaks old peers.
    #[test]
    fn request_bytes_are_pinned() {
        let sha = [0xab; 32];
        let chunk = [7u8; 3];
        let cases: &[(Request, &[u8])] = &[
            (Request::Version { protocol: 1 }, &[5, 0, 1]),
            (Request::Status, &[5, 1]),
            (
                Request::Logs {
                    service: None,
                    lines: 300,
                    follow: false,
                },
                &[5, 2, 0, 0xac, 0x02, 0],
            ),
            (
                Request::Logs {
                    service: Some("web"),
                    lines: 1,
                    follow: true,
                },
                &[5, 2, 1, 3, b'w', b'e', b'b', 1, 1],
            ),
            (Request::Dmesg { max_bytes: 100 }, &[5, 3, 100]),
            (Request::Reboot, &[5, 4]),
            (Request::Poweroff, &[5, 5]),
            (Request::Ping, &[5, 6]),
            (Request::Cancel { id: 4 }, &[5, 7, 4]),
            (Request::Services, &[5, 8]),
            (
                Request::Service {
                    name: "db",
                    action: ServiceAction::Restart,
                },
                &[5, 9, 2, b'd', b'b', 2],
            ),
            (Request::ConfigGet, &[5, 10]),
            (
                Request::ConfigApply {
                    config: "x",
                    mode: ApplyMode::Try,
                    dry_run: true,
                },
                &[5, 11, 1, b'x', 3, 1],
            ),
            (Request::Time, &[5, 12]),
            (Request::Metrics, &[5, 13]),
            (Request::Network, &[5, 14]),
            (
                Request::UploadChunk {
                    handle: 1,
                    offset: 512,
                    data: &chunk,
                },
                &[5, 16, 1, 0x80, 0x04, 3, 7, 7, 7],
            ),
            (Request::Rollback, &[5, 18]),
            (Request::Slots, &[5, 19]),
            (
                Request::ConfigApplyOpts {
                    config: "x",
                    mode: ApplyMode::Staged,
                    dry_run: false,
                    force: true,
                    try_secs: 300,
                },
                &[5, 20, 1, b'x', 2, 0, 1, 0xac, 0x02],
            ),
            (Request::ConfigConfirm, &[5, 21]),
            (Request::Identify { seconds: 300 }, &[5, 23, 0xac, 0x02]),
            (Request::Revocations, &[5, 27]),
            (
                Request::InstallRevocations { crl: &[0x30, 0] },
                &[5, 28, 2, 0x30, 0],
            ),
            (
                Request::BootLogBytes {
                    source: LogSource::System,
                    boot: 1,
                    offset: 300,
                },
                &[5, 29, 0, 1, 0xac, 0x02],
            ),
        ];
        for (req, bytes) in cases {
            let frame = RequestFrame {
                id: 5,
                body: req.clone(),
            };
            assert_eq!(frame.encode(), *bytes, "{req:?}");
            assert_eq!(RequestFrame::decode(bytes).unwrap(), frame);
        }
        let begin = RequestFrame {
            id: 5,
            body: Request::UploadBegin {
                sha256: sha,
                size: 1,
            },
        }
        .encode();
        assert_eq!(begin.len(), 2 + 32 + 1);
        assert_eq!(
            RequestFrame::decode(&begin).unwrap().body,
            Request::UploadBegin {
                sha256: sha,
                size: 1
            }
        );
    }

    #[test]
    fn frugal_targets() {
        // DESIGN targets: echo and status requests <= 8 bytes on the stream,
        // a 512-byte upload chunk <= 530 bytes.
        let framed = |body| {
            crate::wire::encode_frame(&RequestFrame { id: 1, body }.encode(), 1 << 16)
                .unwrap()
                .len()
        };
        assert_eq!(framed(Request::Ping), 3);
        assert_eq!(framed(Request::Status), 3);
        let data = [0u8; 512];
        // Offset of a 16 MiB artifact's last chunk, id of a busy connection.
        let chunk = RequestFrame {
            id: 70_000,
            body: Request::UploadChunk {
                handle: 300,
                offset: 16 << 20,
                data: &data,
            },
        };
        let n = crate::wire::encode_frame(&chunk.encode(), 1 << 16)
            .unwrap()
            .len();
        assert!(n <= 530, "{n}");
    }

    #[test]
    fn roles_are_ordered_and_required_per_request() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Reader);
        assert_eq!(Request::Status.required_role(), Role::Reader);
        assert_eq!(Request::Reboot.required_role(), Role::Operator);
        assert_eq!(
            Request::Service {
                name: "x",
                action: ServiceAction::Stop
            }
            .required_role(),
            Role::Operator
        );
        assert_eq!(Request::Rollback.required_role(), Role::Admin);
        assert_eq!(
            Request::Identify { seconds: 1 }.required_role(),
            Role::Operator
        );
        assert_eq!(
            Request::UploadChunk {
                handle: 0,
                offset: 0,
                data: &[]
            }
            .required_role(),
            Role::Admin
        );
        for r in [Role::Reader, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
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
        assert!(
            RequestFrame::decode(&[1, 9, 200, b'a']).is_err(),
            "string longer than the frame"
        );
        assert!(
            RequestFrame::decode(&[1, 9, 2, 0xff, 0xfe, 0]).is_err(),
            "invalid UTF-8"
        );
        assert!(
            RequestFrame::decode(&[1, 16, 1, 0, 5, 1]).is_err(),
            "chunk shorter than its length"
        );
    }
}
