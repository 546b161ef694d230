//! Bytes on the wire, TLS included, for the operations the DESIGN compares
//! against Zephyr SMP and Talos: the real rustls client and server configs
//! of the CLI and the device, connected in memory (rustls-test `transfer()`
//! style), every byte between them counted. Prints the table recorded in
//! docs/benchmarks.md and fails if a goal is missed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use outpost::device::api::tls::{server_config, Identity};
use outpost::device::revocation::Revocations;
use outpost::host::client::client_config;
use outpost::host::pki::Site;
use outpost::wire::{encode_frame, Request, RequestFrame, MAX_REQUEST_FRAME};
use rustls::{ClientConnection, ServerConnection};

struct Pair {
    client: ClientConnection,
    server: ServerConnection,
    c2s: usize,
    s2c: usize,
}

impl Pair {
    fn new(client_cfg: Arc<rustls::ClientConfig>, server_cfg: Arc<rustls::ServerConfig>) -> Self {
        let client = ClientConnection::new(client_cfg, "edge-1".try_into().unwrap()).unwrap();
        let server = ServerConnection::new(server_cfg).unwrap();
        Self {
            client,
            server,
            c2s: 0,
            s2c: 0,
        }
    }

    /// Shuttle bytes until neither side has anything to send.
    fn pump(&mut self) {
        loop {
            let mut moved = 0;
            let mut buf = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                moved += buf.len();
                self.c2s += buf.len();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    self.server.read_tls(&mut rd).unwrap();
                    self.server.process_new_packets().unwrap();
                }
            }
            let mut buf = Vec::new();
            while self.server.wants_write() {
                self.server.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                moved += buf.len();
                self.s2c += buf.len();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    self.client.read_tls(&mut rd).unwrap();
                    self.client.process_new_packets().unwrap();
                }
            }
            if moved == 0 {
                return;
            }
        }
    }

    /// Bytes on the wire for one request frame from the client.
    fn request_bytes(&mut self, frame: &[u8]) -> usize {
        use std::io::Write;
        let before = self.c2s;
        self.client.writer().write_all(frame).unwrap();
        self.pump();
        self.c2s - before
    }
}

#[test]
fn bytes_on_the_wire_meet_the_design_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let site = Site::create(&tmp.path().join("site"), "bytes").unwrap();
    let dev = site.issue_device("edge-1", 50000).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("identity")).unwrap();
    std::fs::copy(dev.join("device.crt"), data.join("identity/device.crt")).unwrap();
    std::fs::copy(dev.join("device.key"), data.join("identity/device.key")).unwrap();
    std::fs::copy(site.ca_cert(), data.join("identity/ca.crt")).unwrap();
    let clock = std::sync::Arc::new(rustls::time_provider::DefaultTimeProvider);
    let revocations = std::sync::Arc::new(Revocations::load(&data, clock.clone()));
    let server_cfg = server_config(&Identity::in_data_dir(&data), clock, revocations).unwrap();
    let (crt, key) = site.client_paths("admin");
    let client_cfg = client_config(&site.ca_cert(), &crt, &key).unwrap();

    let mut full = Pair::new(client_cfg.clone(), server_cfg.clone());
    full.pump();
    assert!(!full.client.is_handshaking() && !full.server.is_handshaking());
    let full_bytes = full.c2s + full.s2c;

    let frame =
        |body| encode_frame(&RequestFrame { id: 1, body }.encode(), MAX_REQUEST_FRAME).unwrap();
    let ping_payload = frame(Request::Ping).len();
    let status_payload = frame(Request::Status).len();
    let ping_wire = full.request_bytes(&frame(Request::Ping));
    let status_wire = full.request_bytes(&frame(Request::Status));
    let chunk = [0x5au8; 512];
    let chunk_frame = encode_frame(
        &RequestFrame {
            id: 1000,
            body: Request::UploadChunk {
                handle: 1,
                offset: 8 << 20,
                data: &chunk,
            },
        }
        .encode(),
        MAX_REQUEST_FRAME,
    )
    .unwrap();
    let chunk_payload = chunk_frame.len();
    let chunk_wire = full.request_bytes(&chunk_frame);

    // A second connection with the same client config resumes (ticket from the first).
    let mut resumed = Pair::new(client_cfg, server_cfg);
    resumed.pump();
    assert_eq!(
        resumed.client.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    let resumed_bytes = resumed.c2s + resumed.s2c;

    println!("| op | payload (frame) | on the wire, TLS included | goal |");
    println!("|----|-----------------|---------------------------|------|");
    println!("| ping request | {ping_payload} B | {ping_wire} B | ≤ 8 B payload |");
    println!("| status request | {status_payload} B | {status_wire} B | ≤ 8 B payload |");
    println!("| 512 B upload chunk | {chunk_payload} B | {chunk_wire} B | ≤ 530 B |");
    println!(
        "| mTLS handshake, full | — | {full_bytes} B (c→s {}, s→c {}) | ≤ 1,800 B |",
        full.c2s, full.s2c
    );
    println!(
        "| mTLS handshake, resumed | — | {resumed_bytes} B (c→s {}, s→c {}) | ≤ 800 B |",
        resumed.c2s, resumed.s2c
    );

    assert!(ping_payload <= 8 && status_payload <= 8);
    assert!(chunk_payload <= 530, "{chunk_payload}");
    assert!(full_bytes <= 1800, "full handshake {full_bytes} B");
    assert!(resumed_bytes <= 800, "resumed handshake {resumed_bytes} B");
}

/// Pinned bytes of `BootLogs` (request tag 22) and `BootLog` (response tag 15).
#[test]
fn boot_logs_bytes_are_pinned() {
    use outpost::wire::{LogSource, Response, ResponseFrame};
    let req = RequestFrame {
        id: 5,
        body: Request::BootLogs {
            source: LogSource::Kernel,
            boot: 1,
            max_bytes: 300,
        },
    };
    let bytes = [5, 22, 1, 1, 0xac, 0x02];
    assert_eq!(req.encode(), bytes);
    assert_eq!(RequestFrame::decode(&bytes).unwrap(), req);
    let sys = RequestFrame {
        id: 1,
        body: Request::BootLogs {
            source: LogSource::System,
            boot: 3,
            max_bytes: 1,
        },
    };
    assert_eq!(sys.encode(), [1, 22, 0, 3, 1]);
    // An unknown source is refused, not guessed.
    assert!(RequestFrame::decode(&[1, 22, 2, 3, 1]).is_err());

    let resp = ResponseFrame {
        id: 5,
        body: Ok(Response::BootLog("ab\n".into())),
    };
    let bytes = [5, 0, 15, 3, b'a', b'b', b'\n'];
    assert_eq!(resp.encode(), bytes);
    assert_eq!(ResponseFrame::decode(&bytes).unwrap(), resp);

    // Paging a whole earlier log (tag 29), raw bytes back (tag 19): the
    // bytes as a plain length-prefixed run, one byte each.
    let page = RequestFrame {
        id: 6,
        body: Request::BootLogBytes {
            source: LogSource::System,
            boot: 1,
            offset: 15_360,
        },
    };
    let bytes = [6, 29, 0, 1, 0x80, 0x78];
    assert_eq!(page.encode(), bytes);
    assert_eq!(RequestFrame::decode(&bytes).unwrap(), page);
    let resp = ResponseFrame {
        id: 6,
        body: Ok(Response::LogBytes {
            total: 300,
            offset: 0,
            bytes: b"ab\n".to_vec(),
        }),
    };
    let bytes = [6, 0, 19, 0xac, 0x02, 0, 3, b'a', b'b', b'\n'];
    assert_eq!(resp.encode(), bytes);
    assert_eq!(ResponseFrame::decode(&bytes).unwrap(), resp);
}

/// Pinned bytes of `Identify` (request tag 23), answered `Accepted`.
#[test]
fn identify_bytes_are_pinned() {
    use outpost::wire::{Response, ResponseFrame};
    let req = RequestFrame {
        id: 7,
        body: Request::Identify { seconds: 30 },
    };
    let bytes = [7, 23, 30];
    assert_eq!(req.encode(), bytes);
    assert_eq!(RequestFrame::decode(&bytes).unwrap(), req);
    // u16 varint: 300 takes two bytes; a value past u16 is refused.
    let long = RequestFrame {
        id: 7,
        body: Request::Identify { seconds: 300 },
    };
    assert_eq!(long.encode(), [7, 23, 0xac, 0x02]);
    assert!(RequestFrame::decode(&[7, 23, 0x80, 0x80, 0x04]).is_err());
    let resp = ResponseFrame {
        id: 7,
        body: Ok(Response::Accepted),
    };
    assert_eq!(resp.encode(), [7, 0, 4]);
    assert_eq!(ResponseFrame::decode(&[7, 0, 4]).unwrap(), resp);
}

/// Pinned bytes of `Links` (request tag 24) and `Links` (response tag 16).
#[test]
fn links_bytes_are_pinned() {
    use outpost::wire::{LinkInfo, ModemInfo, Response, ResponseFrame};
    let req = RequestFrame {
        id: 5,
        body: Request::Links,
    };
    assert_eq!(req.encode(), [5, 24]);
    assert_eq!(RequestFrame::decode(&[5, 24]).unwrap(), req);
    let resp = ResponseFrame {
        id: 5,
        body: Ok(Response::Links(vec![LinkInfo {
            name: "lte".into(),
            iface: "wwan0".into(),
            metric: 20,
            healthy: true,
            carrier: true,
            probe_misses: 0,
            downs: 1,
            address: "".into(),
            dns: vec![],
            note: "".into(),
            rx_bytes: 300,
            tx_bytes: 2,
            month_bytes: 302,
            budget_bytes: None,
            modem: Some(ModemInfo {
                state: "ok".into(),
                sim: "".into(),
                registration: "home".into(),
                operator: "".into(),
                signal_dbm: Some(-73),
                rsrp_dbm: None,
            }),
            events: vec![],
        }])),
    };
    let bytes = [
        5, 0, 16, 1, // id, Ok, tag 16, one link
        3, b'l', b't', b'e', 5, b'w', b'w', b'a', b'n', b'0', // name, iface
        20, 1, 1, 0, 1, // metric, healthy, carrier, probe_misses, downs
        0, 0, 0, // address, dns, note
        0xac, 0x02, 2, 0xae, 0x02, 0, // rx, tx, month, budget None
        1, 2, b'o', b'k', 0, 4, b'h', b'o', b'm', b'e',
        0, // modem: state, sim, registration, operator
        1, 0x91, 0x01, 0, // signal Some(-73) (zigzag 145), rsrp None
        0, // events
    ];
    assert_eq!(resp.encode(), bytes);
    assert_eq!(ResponseFrame::decode(&bytes).unwrap(), resp);
}

/// Pinned bytes of the call-home envelopes (`wire::envelope`, not Request or
/// Response tags): the signed command and the signed device message.
#[test]
fn callhome_envelope_bytes_are_pinned() {
    use outpost::wire::envelope::{
        decode, encode, Body, CertRef, Command, DeviceMessage, DeviceSays, SignedByDevice,
        SignedCommand, Target,
    };
    let cmd = Command {
        target: Target::Device("d"),
        topic: "t",
        seq: 300,
        expires: 1,
        request: Body::Plain(&[5, 1]),
    };
    let bytes = [0, 1, b'd', 1, b't', 0xac, 0x02, 1, 0, 2, 5, 1];
    assert_eq!(encode(&cmd), bytes);
    assert_eq!(decode::<Command>(&bytes).unwrap(), cmd);
    // Sealed body: tag 1, the 32-byte ephemeral key (no length), ciphertext.
    let sealed = Command {
        request: Body::Sealed {
            ephemeral: [0xee; 32],
            ciphertext: &[1, 2],
        },
        ..cmd.clone()
    };
    let mut bytes = vec![0, 1, b'd', 1, b't', 0xac, 0x02, 1, 1];
    bytes.extend([0xee; 32]);
    bytes.extend([2, 1, 2]);
    assert_eq!(encode(&sealed), bytes);
    assert_eq!(decode::<Command>(&bytes).unwrap(), sealed);
    let group = Command {
        target: Target::Group("g"),
        ..cmd.clone()
    };
    assert_eq!(encode(&group)[..3], [1, 1, b'g']);
    let signed = SignedCommand {
        cert: CertRef::Full(&[0x30]),
        command: &[9],
        sig: &[7, 7],
    };
    let bytes = [0, 1, 0x30, 1, 9, 2, 7, 7];
    assert_eq!(encode(&signed), bytes);
    assert_eq!(decode::<SignedCommand>(&bytes).unwrap(), signed);
    let known = SignedCommand {
        cert: CertRef::Known([0xaa; 16]),
        ..signed
    };
    let mut bytes = vec![1];
    bytes.extend([0xaa; 16]);
    bytes.extend([1, 9, 2, 7, 7]);
    assert_eq!(encode(&known), bytes);
    assert_eq!(decode::<SignedCommand>(&bytes).unwrap(), known);

    let says = DeviceSays {
        device: "d",
        message: DeviceMessage::Answer {
            seq: 2,
            response: &[5, 0, 5],
        },
    };
    let bytes = [1, b'd', 0, 2, 3, 5, 0, 5];
    assert_eq!(encode(&says), bytes);
    assert_eq!(decode::<DeviceSays>(&bytes).unwrap(), says);
    let online = DeviceSays {
        device: "d",
        message: DeviceMessage::Online {
            boot_id: "b",
            version: "v",
            slot: "A",
        },
    };
    assert_eq!(encode(&online), [1, b'd', 1, 1, b'b', 1, b'v', 1, b'A']);
    let refused = DeviceSays {
        device: "d",
        message: DeviceMessage::Refused {
            seq: 1,
            reason: "x",
        },
    };
    assert_eq!(encode(&refused), [1, b'd', 2, 1, 1, b'x']);
    let presence = DeviceSays {
        device: "d",
        message: DeviceMessage::Presence {
            online: false,
            boot_id: "b",
            version: "v",
            slot: "A",
            since: 300,
        },
    };
    let bytes = [1, b'd', 3, 0, 1, b'b', 1, b'v', 1, b'A', 0xac, 0x02];
    assert_eq!(encode(&presence), bytes);
    assert_eq!(decode::<DeviceSays>(&bytes).unwrap(), presence);
    let key = DeviceSays {
        device: "d",
        message: DeviceMessage::SealKey { public: [0xab; 32] },
    };
    let mut bytes = vec![1, b'd', 4];
    bytes.extend([0xab; 32]);
    assert_eq!(encode(&key), bytes);
    assert_eq!(decode::<DeviceSays>(&bytes).unwrap(), key);
    let sealed_answer = DeviceSays {
        device: "d",
        message: DeviceMessage::SealedAnswer {
            seq: 2,
            ciphertext: &[9],
        },
    };
    let bytes = [1, b'd', 5, 2, 1, 9];
    assert_eq!(encode(&sealed_answer), bytes);
    assert_eq!(decode::<DeviceSays>(&bytes).unwrap(), sealed_answer);
    let sealed_stream = DeviceSays {
        device: "d",
        message: DeviceMessage::SealedStream {
            seq: 2,
            n: 300,
            ciphertext: &[9],
        },
    };
    let bytes = [1, b'd', 6, 2, 0xac, 0x02, 1, 9];
    assert_eq!(encode(&sealed_stream), bytes);
    assert_eq!(decode::<DeviceSays>(&bytes).unwrap(), sealed_stream);
    let by_device = SignedByDevice {
        says: &[1],
        sig: &[2],
    };
    assert_eq!(encode(&by_device), [1, 1, 1, 2]);
}

/// Pinned bytes of `DeltaPlan` / `DeltaInstall` (request tags 25, 26) and
/// `DeltaPlan` (response tag 17).
#[test]
fn delta_bytes_are_pinned() {
    use outpost::wire::{Response, ResponseFrame};
    let plan = RequestFrame {
        id: 3,
        body: Request::DeltaPlan {
            manifest: [0xab; 32],
            force: true,
        },
    };
    let mut bytes = vec![3, 25];
    bytes.extend([0xab; 32]);
    bytes.push(1);
    assert_eq!(plan.encode(), bytes);
    assert_eq!(RequestFrame::decode(&bytes).unwrap(), plan);
    let install = RequestFrame {
        id: 4,
        body: Request::DeltaInstall {
            manifest: [1; 32],
            payload: [2; 32],
            stage: false,
            force: true,
        },
    };
    let mut bytes = vec![4, 26];
    bytes.extend([1; 32]);
    bytes.extend([2; 32]);
    bytes.extend([0, 1]);
    assert_eq!(install.encode(), bytes);
    assert_eq!(RequestFrame::decode(&bytes).unwrap(), install);
    // A bool other than 0/1 is refused.
    bytes[67] = 2;
    assert!(RequestFrame::decode(&bytes).is_err());

    let resp = ResponseFrame {
        id: 3,
        body: Ok(Response::DeltaPlan {
            have: vec![0b1010_0101, 0x01],
        }),
    };
    let bytes = [3, 0, 17, 2, 0b1010_0101, 0x01];
    assert_eq!(resp.encode(), bytes);
    assert_eq!(ResponseFrame::decode(&bytes).unwrap(), resp);
}
