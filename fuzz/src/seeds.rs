//! Seed inputs: a few valid encodings per target, built with the real
//! encoders (and two DHCP replies captured from QEMU's slirp), in each
//! target's input layout. `cargo run --example seeds` writes them to
//! `fuzz/seeds/<target>/`; the fuzzers start from there.

use std::net::Ipv4Addr;

use outpost::bootstate::{BootState, Env, Layout, Slot, VAR_SEQ};
use outpost::bundle::{FileEntry, Manifest};
use outpost::config::{MachineConfig, NetworkMode, Release};
use outpost::device::net::dhcp;
use outpost::wire::*;

/// One target's seeds: (file name, bytes).
pub type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Every target and its seeds.
pub fn all() -> Vec<(&'static str, Seeds)> {
    vec![
        ("frame", frame()),
        ("response", response()),
        ("bootstate", bootstate()),
        ("config", config()),
        ("role", role()),
        ("dhcp", dhcp()),
        ("netlink", netlink()),
        ("bundle", bundle()),
        ("serial", serial()),
        ("sntp", sntp()),
        ("mqtt", mqtt()),
        ("envelope", envelope()),
    ]
}

/// The check a target runs.
pub fn check_for(target: &str) -> fn(&[u8]) {
    match target {
        "frame" => crate::frame,
        "response" => crate::response,
        "bootstate" => crate::bootstate,
        "config" => crate::config,
        "role" => crate::role,
        "dhcp" => crate::dhcp,
        "netlink" => crate::netlink,
        "bundle" => crate::bundle,
        "serial" => crate::serial,
        "sntp" => crate::sntp,
        "mqtt" => crate::mqtt,
        "envelope" => crate::envelope,
        other => panic!("no fuzz target {other}"),
    }
}

fn framed(id: u32, body: Request) -> Vec<u8> {
    let payload = RequestFrame { id, body }.encode();
    encode_frame(&payload, MAX_REQUEST_FRAME).unwrap_or_default()
}

fn frame() -> Seeds {
    let chunk = [0x5a; 40];
    let stream = |splits: &[u8], frames: Vec<Vec<u8>>| -> Vec<u8> {
        let mut out = vec![u8::try_from(splits.len()).unwrap_or(0)];
        out.extend_from_slice(splits);
        out.extend(frames.concat());
        out
    };
    vec![
        ("ping", stream(&[], vec![framed(1, Request::Ping)])),
        (
            "status-version",
            stream(
                &[],
                vec![
                    framed(1, Request::Version { protocol: 1 }),
                    framed(2, Request::Status),
                ],
            ),
        ),
        (
            "logs-service",
            stream(
                &[1, 3],
                vec![
                    framed(
                        3,
                        Request::Logs {
                            service: Some("web"),
                            lines: 300,
                            follow: true,
                        },
                    ),
                    framed(4, Request::Cancel { id: 3 }),
                ],
            ),
        ),
        (
            "service-config",
            stream(
                &[7],
                vec![
                    framed(
                        5,
                        Request::Service {
                            name: "db",
                            action: ServiceAction::Restart,
                        },
                    ),
                    framed(
                        6,
                        Request::ConfigApply {
                            config: "hostname = \"edge-1\"\n",
                            mode: ApplyMode::Try,
                            dry_run: true,
                        },
                    ),
                ],
            ),
        ),
        (
            "upload",
            stream(
                &[2, 200],
                vec![
                    framed(
                        70_000,
                        Request::UploadBegin {
                            sha256: [0xab; 32],
                            size: 16 << 20,
                        },
                    ),
                    framed(
                        70_001,
                        Request::UploadChunk {
                            handle: 300,
                            offset: 8192,
                            data: &chunk,
                        },
                    ),
                    framed(
                        70_002,
                        Request::Upgrade {
                            sha256: [0xab; 32],
                            stage: true,
                            force: false,
                        },
                    ),
                ],
            ),
        ),
        (
            "the-rest",
            stream(
                &[],
                vec![
                    framed(7, Request::Dmesg { max_bytes: 4096 }),
                    framed(8, Request::Services),
                    framed(9, Request::ConfigGet),
                    framed(10, Request::Time),
                    framed(11, Request::Metrics),
                    framed(12, Request::Network),
                    framed(13, Request::Reboot),
                    framed(14, Request::Poweroff),
                    framed(15, Request::Rollback),
                ],
            ),
        ),
    ]
}

fn response() -> Seeds {
    let ok = |body| {
        ResponseFrame {
            id: 7,
            body: Ok(body),
        }
        .encode()
    };
    let err = |e| {
        ResponseFrame {
            id: 7,
            body: Err(e),
        }
        .encode()
    };
    vec![
        ("pong", ok(Response::Pong)),
        ("end", ok(Response::End)),
        ("denied", err(WireError::PermissionDenied)),
        ("device-error", err(WireError::Device("no space".into()))),
        (
            "version",
            ok(Response::Version(VersionInfo {
                protocol: 1,
                min_protocol: 1,
                init_version: "0.1.0".into(),
                os_version: "0.1.0".into(),
                board: "qemu-virt".into(),
            })),
        ),
        (
            "status",
            ok(Response::Status(Status {
                hostname: "edge-1".into(),
                slot: "A".into(),
                os_version: "0.1.0".into(),
                boot_id: "1b4e28ba".into(),
                uptime_ms: 123_456,
                mem_total_kib: 250_000,
                mem_available_kib: 200_000,
                load_x100: [1, 5, 15],
                addresses: vec!["eth0 10.0.2.15/24".into()],
                init_rss_kib: 1800,
            })),
        ),
        (
            "logs",
            ok(Response::Logs(vec![LogLine {
                at_ms: 1500,
                level: LogLevel::Warn,
                text: "dhcp: lease renewed".into(),
            }])),
        ),
        (
            "services",
            ok(Response::Services(vec![ServiceInfo {
                name: "web".into(),
                state: "running".into(),
                pid: Some(42),
                restarts: 1,
                last_exit: Some("exit 1".into()),
                uptime_ms: 5000,
            }])),
        ),
        (
            "config-plan",
            ok(Response::ConfigPlan(ConfigPlan {
                changes: vec!["network.mode: dhcp -> static".into()],
                needs_reboot: true,
                applied: false,
            })),
        ),
        (
            "metrics",
            ok(Response::Metrics(Metrics {
                uptime_ms: 1,
                cpu_ms: [1, 2, 3, 4, 5],
                cpus: 1,
                mem_total_kib: 2,
                mem_available_kib: 1,
                load_x100: [0, 0, 0],
                disk_total_kib: 1 << 20,
                disk_free_kib: 1 << 19,
                net: vec![NetCounters {
                    iface: "eth0".into(),
                    rx_bytes: 1000,
                    tx_bytes: 2000,
                    rx_packets: 10,
                    tx_packets: 20,
                }],
            })),
        ),
        (
            "time",
            ok(Response::Time(TimeInfo {
                unix_ms: 1_700_000_000_000,
                source: "sntp".into(),
                synced: true,
            })),
        ),
        (
            "network",
            ok(Response::Network(NetworkInfo {
                links: vec!["eth0 up 52:54:00:12:34:56 mtu 1500".into()],
                addresses: vec!["eth0 10.0.2.15/24".into()],
                routes: vec!["default via 10.0.2.2 dev eth0".into()],
            })),
        ),
        (
            "upload",
            ok(Response::Upload(UploadState {
                handle: 2,
                offset: 512,
                size: 1024,
                complete: false,
            })),
        ),
    ]
}

fn bootstate() -> Seeds {
    let with_mode = |mode: u8, blob: Vec<u8>| {
        let mut out = vec![mode];
        out.extend(blob);
        out
    };
    let initial = BootState::initial().to_env();
    let trying_b = {
        let mut state = BootState::initial();
        state.order = vec![Slot::B, Slot::A];
        state.b_left = 2;
        state.to_env()
    };
    let mut extra = initial.clone();
    extra.set("bootcmd", "run boot_outpost");
    let blob = |env: &Env, size, layout| env.encode(size, layout).unwrap_or_default();
    let flags = |flags| Layout::Redundant { flags };
    // Two copies as `Current::read` takes them (the target pads each half to
    // STATE_SIZE and, with mode bit 1, fixes its CRC), with sequence numbers.
    let with_seq = |env: &Env, seq: &str| {
        let mut env = env.clone();
        env.set(VAR_SEQ, seq);
        blob(&env, 96, Layout::Single)
    };
    let good_b = {
        let mut env = trying_b.clone();
        env.set("BOOT_GOOD", "A B");
        env
    };
    let copies = |event: u8, attempts: u8| 4 | 2 | 1 | event << 3 | attempts << 6;
    vec![
        ("single", with_mode(0, blob(&initial, 64, Layout::Single))),
        ("redundant", with_mode(1, blob(&trying_b, 64, flags(7)))),
        (
            "single-fixcrc",
            with_mode(2, blob(&extra, 96, Layout::Single)),
        ),
        (
            "pair",
            with_mode(
                4,
                [
                    blob(&initial, 64, flags(255)),
                    blob(&trying_b, 64, flags(0)),
                ]
                .concat(),
            ),
        ),
        (
            "copies-boot",
            with_mode(
                copies(0, 0),
                [with_seq(&initial, "0x0"), with_seq(&trying_b, "0x1")].concat(),
            ),
        ),
        (
            "copies-mark-good",
            with_mode(
                copies(2, 0),
                [with_seq(&trying_b, "0xff"), with_seq(&initial, "0xfe")].concat(),
            ),
        ),
        (
            "copies-switch",
            with_mode(
                copies(4, 1),
                [with_seq(&initial, "0x7"), with_seq(&good_b, "0x8")].concat(),
            ),
        ),
        (
            "copies-rollback",
            with_mode(
                copies(5, 0),
                [with_seq(&good_b, "0x3"), with_seq(&initial, "0x2")].concat(),
            ),
        ),
    ]
}

fn config() -> Seeds {
    let mut fixed = MachineConfig::new("edge-1.example");
    fixed.api.port = 50001;
    fixed.network.interface = "eth0".into();
    fixed.network.mode = NetworkMode::Static;
    fixed.network.address = Some("192.0.2.10/24".into());
    fixed.network.gateway = Some("192.0.2.1".into());
    let release = Release {
        board: "qemu-virt".into(),
        version: "0.1.0".into(),
        build_time: 1_700_000_000,
    };
    let manifest = Manifest {
        board: "qemu-virt".into(),
        version: "0.1.0".into(),
        build_time: 1_700_000_000,
        kernel_package: "linux-image-arm64 6.1.0".into(),
        files: vec![FileEntry {
            name: "Image.gz".into(),
            size: 9_000_000,
            sha256: "ab".repeat(32),
        }],
    };
    vec![
        (
            "dhcp.toml",
            MachineConfig::new("edge-1").to_toml().into_bytes(),
        ),
        ("static.toml", fixed.to_toml().into_bytes()),
        ("release.toml", release.to_toml().into_bytes()),
        ("manifest.toml", manifest.to_toml().into_bytes()),
    ]
}

/// DER tag-length-value (short or long form length).
fn der(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    let mut out = vec![tag];
    match u8::try_from(body.len()) {
        Ok(n) if n < 0x80 => out.push(n),
        _ => {
            let len = u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes();
            out.extend([0x82, len[0], len[1]]);
        }
    }
    out.extend(body);
    out
}

/// The shape of an X.509 certificate as `role_of` walks it, with
/// `O=<organization>` in the subject.
fn certificate(organization: &str, v3: bool) -> Vec<u8> {
    let oid = |bytes: &[u8]| der(0x06, &[bytes]);
    let atv = |oid_bytes: &[u8], value: &str| {
        der(
            0x31,
            &[&der(
                0x30,
                &[&oid(oid_bytes), &der(0x0c, &[value.as_bytes()])],
            )],
        )
    };
    let ecdsa_sha256 = der(
        0x30,
        &[&oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])],
    );
    let issuer = der(0x30, &[&atv(&[0x55, 0x04, 0x03], "outpost site CA")]);
    let validity = der(
        0x30,
        &[
            &der(0x17, &[b"250101000000Z"]),
            &der(0x17, &[b"350101000000Z"]),
        ],
    );
    let subject = der(
        0x30,
        &[
            &atv(&[0x55, 0x04, 0x03], "operator laptop"),
            &atv(&[0x55, 0x04, 0x0a], organization),
        ],
    );
    let version = der(0xa0, &[&der(0x02, &[&[2]])]);
    let serial = der(0x02, &[&[0x01, 0x23, 0x45]]);
    let spki = der(0x30, &[&ecdsa_sha256, &der(0x03, &[&[0; 9]])]);
    let mut tbs: Vec<&[u8]> = Vec::new();
    if v3 {
        tbs.push(&version);
    }
    tbs.extend([
        &serial[..],
        &ecdsa_sha256,
        &issuer,
        &validity,
        &subject,
        &spki,
    ]);
    let tbs = der(0x30, &tbs);
    der(0x30, &[&tbs, &ecdsa_sha256, &der(0x03, &[&[0; 9]])])
}

fn role() -> Seeds {
    vec![
        ("admin.der", certificate("os:admin", true)),
        ("operator.der", certificate("os:operator", true)),
        ("reader-v1.der", certificate("os:reader", false)),
        ("no-role.der", certificate("example corp", true)),
    ]
}

fn dhcp() -> Seeds {
    let mut nak = dhcp::Packet {
        op: 2,
        htype: 1,
        hlen: 6,
        xid: 0x1234_5678,
        chaddr: [
            0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        ..dhcp::Packet::default()
    };
    nak.options.message_type = Some(dhcp::MessageType::Nak);
    nak.options.server = Some(Ipv4Addr::new(10, 0, 2, 2));
    nak.options.message = Some("address not available".into());
    vec![
        (
            "slirp-offer.bin",
            include_bytes!("../../src/device/net/testdata/slirp-offer.bin").to_vec(),
        ),
        (
            "slirp-ack.bin",
            include_bytes!("../../src/device/net/testdata/slirp-ack.bin").to_vec(),
        ),
        ("nak.bin", nak.encode()),
    ]
}

/// One netlink message as the kernel sends it (port id 0, padded to 4).
fn nlmsg(kind: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
    let mut out = outpost::device::net::netlink::Request {
        kind,
        flags: 0x2, // NLM_F_MULTI
        body: body.to_vec(),
    }
    .encode(sequence);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// One attribute, padded to 4.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    let mut out = [&len.to_ne_bytes()[..], &kind.to_ne_bytes(), value].concat();
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn netlink() -> Seeds {
    use outpost::device::net::netlink::{RTM_NEWADDR, RTM_NEWLINK};
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let seq = 7;
    let link = |index: u32, link_type: u16, flags: u32, name: &[u8], mac: &[u8]| {
        let mut body = vec![0, 0];
        body.extend(link_type.to_ne_bytes());
        body.extend(index.to_ne_bytes());
        body.extend(flags.to_ne_bytes());
        body.extend(0u32.to_ne_bytes());
        body.extend(nla(3, name)); // IFLA_IFNAME
        body.extend(nla(1, mac)); // IFLA_ADDRESS
        nlmsg(RTM_NEWLINK, seq, &body)
    };
    let addr = |family: u8, prefix: u8, index: u32, kind: u16, ip: &[u8]| {
        let mut body = vec![family, prefix, 0, 0];
        body.extend(index.to_ne_bytes());
        body.extend(nla(kind, ip));
        nlmsg(RTM_NEWADDR, seq, &body)
    };
    let done = nlmsg(NLMSG_DONE, seq, &0i32.to_ne_bytes());
    // A datagram pair in the target's layout: first's length / 4, first, second.
    let pair = |first: Vec<u8>, second: Vec<u8>| {
        let mut out = vec![u8::try_from(first.len() / 4).unwrap_or(u8::MAX)];
        out.extend(first);
        out.extend(second);
        out
    };
    let lo = link(1, 772, 0x49, b"lo\0", &[0; 6]);
    let eth0 = link(
        2,
        1,
        0x1_1043,
        b"eth0\0",
        &[0x52, 0x54, 0, 0x12, 0x34, 0x56],
    );
    let v4 = addr(2, 24, 2, 2, &[10, 0, 2, 15]); // IFA_LOCAL
    let mut v6_ip = [0u8; 16];
    v6_ip[0] = 0xfe;
    v6_ip[1] = 0x80;
    v6_ip[15] = 1;
    let v6 = addr(10, 64, 2, 1, &v6_ip); // IFA_ADDRESS
    let mut ack_body = 0i32.to_ne_bytes().to_vec();
    ack_body.extend(nlmsg(RTM_NEWADDR, seq, &[]));
    let eexist = [
        (-17i32).to_ne_bytes().to_vec(),
        nlmsg(RTM_NEWADDR, seq, &[]),
    ]
    .concat();
    vec![
        ("links", pair([lo, eth0].concat(), done.clone())),
        ("addresses", pair([v4, v6].concat(), done)),
        ("ack", pair(nlmsg(NLMSG_ERROR, seq, &ack_body), Vec::new())),
        ("eexist", pair(nlmsg(NLMSG_ERROR, seq, &eexist), Vec::new())),
    ]
}

fn bundle() -> Seeds {
    use outpost::bundle::format::{encode_signed_part, BundleHeader, ChunkEntry, PREAMBLE_LEN};
    // Chunks of these lengths, each compressed to half (stored when 1 byte).
    let header = |lens: &[u32]| {
        let chunks: Vec<ChunkEntry> = lens
            .iter()
            .map(|&len| ChunkEntry {
                sha256: [0x22; 32],
                len,
                clen: (len / 2).max(1),
            })
            .collect();
        BundleHeader {
            board: "qemu-virt".into(),
            version: "0.2.0".into(),
            min_version: "0.1.0".into(),
            build_time: 1_700_000_000,
            image_size: lens.iter().map(|&l| u64::from(l)).sum(),
            image_sha256: [0x11; 32],
            payload_size: chunks.iter().map(|c| u64::from(c.clen)).sum(),
            chunks,
        }
    };
    let one = encode_signed_part(&header(&[4096]));
    let three = encode_signed_part(&header(&[8192, 1, 30_000]));
    // Mode 1: the header body alone (the target signs it).
    let body =
        |signed: &[u8]| [&[1u8][..], signed.get(PREAMBLE_LEN..).unwrap_or_default()].concat();
    // Mode 0: a whole bundle start, signed with the target's key.
    let key = crate::bundle_key();
    let whole = |signed: &[u8]| [&[0u8][..], signed, key.sign(signed).as_ref()].concat();
    vec![
        ("one-chunk-body", body(&one)),
        ("three-chunks-body", body(&three)),
        ("one-chunk-signed", whole(&one)),
        ("three-chunks-signed", whole(&three)),
    ]
}

fn serial() -> Seeds {
    use outpost::wire::serial::LinkMsg;
    let line = |splits: &[u8], msgs: &[LinkMsg]| {
        let mut out = vec![u8::try_from(splits.len()).unwrap_or(0)];
        out.extend_from_slice(splits);
        for msg in msgs {
            let _ = msg.encode(&mut out);
        }
        out
    };
    // A TLS record's start (zeros inside), and a run of 300 non-zero bytes
    // (a full COBS block).
    let record = [
        0x16, 0x03, 0x03, 0x00, 0x2a, 0x01, 0x00, 0x00, 0x26, 0x03, 0x03,
    ];
    let run: Vec<u8> = (1..=255u8).chain(1..=45).collect();
    let mut idle = line(&[], &[LinkMsg::Close]);
    idle.splice(1..1, [0, 0, 0]);
    vec![
        (
            "session",
            line(
                &[],
                &[
                    LinkMsg::Open { nonce: 0x1234_5678 },
                    LinkMsg::Opened { nonce: 0x1234_5678 },
                    LinkMsg::Data(&record),
                    LinkMsg::Close,
                ],
            ),
        ),
        ("long-data", line(&[3, 100], &[LinkMsg::Data(&run)])),
        ("idle-then-close", idle),
    ]
}

/// Cookie (8 bytes) + a server reply echoing it, and a kiss-of-death.
fn sntp() -> Seeds {
    use outpost::device::clock::sntp::unix_ns_to_ntp;
    let cookie = [7u8, 1, 2, 3, 4, 5, 6, 9];
    let reply = |first: u8, stratum: u8, refid: &[u8; 4]| {
        let mut p = cookie.to_vec();
        let mut r = [0u8; 48];
        r[0] = first;
        r[1] = stratum;
        r[12..16].copy_from_slice(refid);
        r[24..32].copy_from_slice(&cookie);
        r[32..40].copy_from_slice(&unix_ns_to_ntp(1_700_000_000_123_456_789));
        r[40..48].copy_from_slice(&unix_ns_to_ntp(1_700_000_000_223_456_789));
        p.extend_from_slice(&r);
        p
    };
    vec![
        ("reply.bin", reply(0x24, 1, b"GPS\0")),
        ("kod-rate.bin", reply(0x24, 0, b"RATE")),
        ("unsynced.bin", reply(0xe4, 2, b"\x7f\0\0\x01")),
    ]
}

fn mqtt() -> Seeds {
    use outpost::mqtt::{encode, Packet, Publish, QoS};
    let enc = |p: Packet| {
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap_or_default();
        out
    };
    vec![
        (
            "connack",
            enc(Packet::Connack {
                session_present: true,
                code: 0,
            }),
        ),
        (
            "suback",
            enc(Packet::Suback {
                pid: 1,
                codes: &[1, 0x80],
            }),
        ),
        ("pingresp", enc(Packet::Pingresp)),
        ("puback", enc(Packet::Puback { pid: 7 })),
        (
            "publish-qos1",
            enc(Packet::Publish(Publish {
                topic: "outpost/edge-1/req",
                qos: QoS::AtLeastOnce,
                pid: 3,
                retain: false,
                dup: true,
                payload: &[1, 2, 3],
            })),
        ),
        (
            "publish-large",
            enc(Packet::Publish(Publish {
                topic: "outpost/group/north/req",
                qos: QoS::AtMostOnce,
                pid: 0,
                retain: true,
                dup: false,
                payload: &[0x5a; 300],
            })),
        ),
    ]
}

fn envelope() -> Seeds {
    use outpost::wire::envelope::{encode, Body, CertRef, Command, SignedCommand, Target};
    let request = RequestFrame {
        id: 1,
        body: Request::Status,
    }
    .encode();
    let command = encode(&Command {
        target: Target::Device("edge-1"),
        topic: "outpost/edge-1/req",
        seq: 1_795_820_531_030_261,
        expires: 1_795_820_831,
        request: Body::Plain(&request),
    });
    let group = encode(&Command {
        target: Target::Group("north"),
        topic: "outpost/group/north/req",
        seq: 2,
        expires: 3,
        request: Body::Plain(&request),
    });
    let sealed = encode(&Command {
        target: Target::Device("edge-1"),
        topic: "outpost/edge-1/req",
        seq: 4,
        expires: 5,
        request: Body::Sealed {
            ephemeral: [0x9e; 32],
            ciphertext: &[0xc1; 19],
        },
    });
    let sign = |command: &[u8], cert: CertRef| {
        encode(&SignedCommand {
            cert,
            command,
            sig: &[0x11; 64],
        })
    };
    vec![
        (
            "device",
            sign(&command, CertRef::Full(&[0x30, 0x03, 0x02, 0x01, 0x00])),
        ),
        ("group", sign(&group, CertRef::Known([0x42; 16]))),
        ("sealed", sign(&sealed, CertRef::Known([0x43; 16]))),
    ]
}
