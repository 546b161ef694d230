//! Uploads end to end: a host-mode device (the real outpost-init binary, DATA
//! in a temp dir), the CLI's upload code, and the link emulator between them:
//! a cut at half way, a second connection hammering, a device restart.
//!
//! `bench_upload_over_emulated_lte` (ignored; `scripts/bench-protocol` runs
//! it) measures goodput at 1 Mbit/s with 100 ms RTT and what a cut costs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::HostDevice;
use outpost::bundle::hex;
use outpost::host::client::{client_config, Client};
use outpost::host::context::Node;
use outpost::host::linkemu::{LinkConfig, LinkEmu};
use outpost::host::upload::{upload, UploadReport};
use outpost::wire::{self, Request, Response, UploadState, MAX_CHUNK};

/// A TLS 1.3 record around one frame: 5-byte header, 1 content-type byte,
/// 16-byte AEAD tag.
const TLS_RECORD_OVERHEAD: u64 = 22;
/// The close_notify alert a client sends when it hangs up, in its record.
const CLOSE_NOTIFY: u64 = 2 + TLS_RECORD_OVERHEAD;

/// Where the device keeps a finished upload.
fn staged(dev: &HostDevice, sha256: &[u8; 32]) -> PathBuf {
    dev.data.join("staging").join(hex(sha256))
}

/// A connection factory to `address` that always uses `tls` (so reconnects
/// resume the TLS session).
fn connector(
    tls: Arc<rustls::ClientConfig>,
    address: String,
) -> impl FnMut() -> anyhow::Result<Client> {
    let node = Node {
        address,
        server_name: "edge-1".into(),
    };
    move || Client::connect_with(tls.clone(), &node)
}

fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut data).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// The device's finished artifact has exactly these bytes.
fn assert_stored(dev: &HostDevice, data: &[u8]) {
    let stored = std::fs::read(staged(dev, &sha256(data))).unwrap();
    assert!(stored.len() == data.len() && sha256(&stored) == sha256(data));
    assert!(!dev
        .data
        .join("staging")
        .join(format!("{}.part", hex(&sha256(data))))
        .exists());
}

/// Bytes one chunk request takes on the link: its frame in one TLS record.
/// (The handle is 1 byte on the wire for handles below 128.)
fn chunk_record(id: u32, offset: u64, len: usize) -> u64 {
    let data = vec![0u8; len];
    let frame = wire::RequestFrame {
        id,
        body: Request::UploadChunk {
            handle: 1,
            offset,
            data: &data,
        },
    };
    let framed = wire::encode_frame(&frame.encode(), wire::MAX_REQUEST_FRAME).unwrap();
    framed.len() as u64 + TLS_RECORD_OVERHEAD
}

/// Link bytes of the chunk records from `from` to the end of a `size`-byte
/// artifact, when the chunk at `from` has request id `first_id` (a fresh
/// connection sends `UploadBegin` as id 1, then chunks from id 2 on).
fn records_from(from: u64, size: u64, first_id: u32) -> u64 {
    let mut total = 0;
    let (mut offset, mut id) = (from, first_id);
    while offset < size {
        let len = (size - offset).min(MAX_CHUNK as u64) as usize;
        total += chunk_record(id, offset, len);
        offset += len as u64;
        id += 1;
    }
    total
}

/// What a cut cost on the link, client to device, from byte counts.
#[derive(Debug)]
struct CutCost {
    /// Bytes of the cut connection after the last chunk the device stored:
    /// the torn record, delivered and thrown away (re-sent after resuming).
    resent_on_link: u64,
    /// The second connection's bytes before its first chunk: resumed TLS
    /// handshake and `UploadBegin`.
    reconnect: u64,
}

/// `clean_up`: client-to-device bytes of an uncut upload of an artifact of
/// the same size (a full handshake, `UploadBegin`, every chunk, close_notify).
/// `cut_up` / `second_up`: the cut run's two connections. `resumed_at`: the
/// offset the device reported on the second connection.
fn cut_cost(clean_up: u64, cut_up: u64, second_up: u64, resumed_at: u64, size: u64) -> CutCost {
    let first_chunk_id = 2 + u32::try_from(resumed_at / MAX_CHUNK as u64).unwrap();
    // The cut connection up to the end of the last stored chunk's record is
    // the clean run less its remaining records and the close_notify.
    let stored_prefix = clean_up - CLOSE_NOTIFY - records_from(resumed_at, size, first_chunk_id);
    CutCost {
        resent_on_link: cut_up - stored_prefix,
        reconnect: second_up - CLOSE_NOTIFY - records_from(resumed_at, size, 2),
    }
}

#[test]
fn a_cut_at_half_resumes_and_resends_at_most_one_chunk() {
    let dev = HostDevice::new("test").start();
    let tmp = tempfile::tempdir().unwrap();
    let size = 3 << 20;
    let (clean_file, _) = random_file(tmp.path(), "clean", size);
    let (file, data) = random_file(tmp.path(), "cut", size);

    // An uncut run of the same size: the byte count to compare with.
    let emu = LinkEmu::start(LinkConfig::new(dev.node.address.parse().unwrap())).unwrap();
    let clean = upload(
        &mut connector(dev.tls("admin"), emu.addr().to_string()),
        &clean_file,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((clean.reconnects, clean.resent_bytes), (0, 0));
    assert!(emu.wait_closed(Duration::from_secs(10)));
    let clean_up = emu.connections()[0].up;
    emu.stop();

    let mut cfg = LinkConfig::new(dev.node.address.parse().unwrap());
    cfg.cut_up = vec![clean_up / 2];
    // A few ms each way, as on any real link: the device handles what
    // reached it before the reconnect's handshake is through.
    cfg.latency = Duration::from_millis(5);
    let emu = LinkEmu::start(cfg).unwrap();
    let report = upload(
        &mut connector(dev.tls("admin"), emu.addr().to_string()),
        &file,
        &mut |_, _| {},
    )
    .unwrap();
    assert_stored(&dev, &data);
    assert_eq!(report.reconnects, 1, "{report:?}");
    assert_eq!(report.resumed, 1, "the reconnect resumed the TLS session");
    let resumed_at = report.resume_offsets[1];
    assert_eq!(report.resume_offsets[0], 0);
    assert!(
        resumed_at > 0 && resumed_at % MAX_CHUNK as u64 == 0,
        "{report:?}"
    );
    assert!(emu.wait_closed(Duration::from_secs(10)));
    let conns = emu.connections();
    assert_eq!(conns.len(), 2);
    assert!(conns[0].cut && conns[0].up == clean_up / 2);
    let cost = cut_cost(clean_up, conns[0].up, conns[1].up, resumed_at, size as u64);
    eprintln!(
        "cut at {} of {clean_up} link bytes: {cost:?}, {report:?}",
        clean_up / 2
    );
    assert!(
        cost.resent_on_link <= chunk_record(u32::MAX, u64::MAX, MAX_CHUNK),
        "more than one chunk re-sent on the link: {cost:?}"
    );
    // Client side, what was written again: at most the window in flight.
    assert!(report.resent_bytes <= 8 * MAX_CHUNK as u64, "{report:?}");
    assert_eq!(report.payload_bytes, size as u64 + report.resent_bytes);
}

#[test]
fn a_second_connection_hammering_loses_nothing() {
    let dev = HostDevice::new("test").start();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = random_file(tmp.path(), "a", 3 << 20);
    let (sum, size) = (sha256(&data), data.len() as u64);
    // Slow the upload down so the hammering overlaps it.
    let mut cfg = LinkConfig::new(dev.node.address.parse().unwrap());
    cfg.rate_bps = Some(20_000_000);
    cfg.latency = Duration::from_millis(2);
    let emu = LinkEmu::start(cfg).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (done, mut c) = (done.clone(), admin_client(&dev));
        let mut reader = Client::connect_with(reader_tls(&dev), &dev.node).unwrap();
        std::thread::spawn(move || hammer(&mut c, &mut reader, &done, sum, size))
    };
    let report = upload(
        &mut connector(dev.tls("admin"), emu.addr().to_string()),
        &file,
        &mut |_, _| {},
    )
    .unwrap();
    done.store(true, Ordering::SeqCst);
    let rounds = hammer.join().unwrap();
    assert!(rounds >= 10, "only {rounds} hammer rounds");
    assert_stored(&dev, &data);
    assert_eq!(report.resume_offsets, vec![0]);
    assert_eq!((report.reconnects, report.resent_bytes), (0, 0));
}

fn admin_client(dev: &HostDevice) -> Client {
    Client::connect_with(dev.tls("admin"), &dev.node).unwrap()
}

fn reader_tls(dev: &HostDevice) -> Arc<rustls::ClientConfig> {
    let (crt, key) = dev.site.issue_client("ro", "reader").unwrap();
    client_config(&dev.site.ca_cert(), &crt, &key).unwrap()
}

/// Status, ping, the same `UploadBegin`, stale garbage chunks and wrong
/// requests, in a loop while the upload runs; returns the rounds made.
fn hammer(c: &mut Client, reader: &mut Client, done: &AtomicBool, sum: [u8; 32], size: u64) -> u32 {
    let mut rounds = 0;
    let mut last = 0;
    while !done.load(Ordering::SeqCst) {
        assert!(matches!(c.call(Request::Status), Ok(Response::Status(_))));
        assert!(matches!(c.call(Request::Ping), Ok(Response::Pong)));
        let begin = Request::UploadBegin { sha256: sum, size };
        let Ok(Response::Upload(st)) = c.call(begin.clone()) else {
            panic!("begin refused")
        };
        assert!(st.offset >= last, "the device's offset went back");
        last = st.offset;
        if st.complete {
            break;
        }
        if st.offset > 0 {
            // Stale offsets are answered with the state; nothing is written.
            let garbage = [0x55u8; 100];
            let chunk = Request::UploadChunk {
                handle: st.handle,
                offset: st.offset - 1,
                data: &garbage,
            };
            match c.call(chunk) {
                Ok(Response::Upload(UploadState { offset, .. })) => assert!(offset >= st.offset),
                // The upload finished in between: its handle is gone.
                Err(e) if e.to_string().contains("no upload with handle") => {
                    let again = c.call(begin.clone()).unwrap();
                    assert!(matches!(again, Response::Upload(s) if s.complete));
                }
                other => panic!("stale chunk: {other:?}"),
            }
        }
        let wrong_size = Request::UploadBegin {
            sha256: sum,
            size: size + 1,
        };
        assert!(c
            .call(wrong_size)
            .unwrap_err()
            .to_string()
            .contains("bytes"));
        let refused = reader.call(begin).unwrap_err();
        assert!(refused.to_string().contains("permission denied"));
        rounds += 1;
    }
    rounds
}

#[test]
fn a_device_restart_mid_upload_resumes_from_the_stored_part() {
    let mut dev = HostDevice::new("test").start();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = random_file(tmp.path(), "a", 4 << 20);
    let size = data.len() as u64;
    let mut connect = connector(dev.tls("admin"), dev.node.address.clone());
    let mut killed_at = None;
    let report = upload(&mut connect, &file, &mut |done, _| {
        if killed_at.is_none() && done >= size / 2 {
            killed_at = Some(done);
            dev.kill();
            dev.spawn();
        }
    })
    .unwrap();
    let killed_at = killed_at.unwrap();
    assert_stored(&dev, &data);
    assert!(report.reconnects >= 1, "{report:?}");
    // The new process found the part: nothing the old one stored is sent again.
    assert!(report.resume_offsets[1] >= killed_at, "{report:?}");
    assert!(report.resent_bytes <= 8 * MAX_CHUNK as u64, "{report:?}");
}

#[test]
fn an_interrupted_upload_is_continued_by_the_next_run() {
    let dev = HostDevice::new("test").start();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = random_file(tmp.path(), "a", 1 << 20);
    let (sum, size) = (sha256(&data), data.len() as u64);
    // A client that sends a quarter of the file and goes away.
    let mut c = admin_client(&dev);
    let Response::Upload(st) = c.call(Request::UploadBegin { sha256: sum, size }).unwrap() else {
        panic!()
    };
    for offset in (0..size / 4).step_by(MAX_CHUNK) {
        let chunk = &data[offset as usize..offset as usize + MAX_CHUNK];
        c.call(Request::UploadChunk {
            handle: st.handle,
            offset,
            data: chunk,
        })
        .unwrap();
    }
    drop(c);
    let report = upload(
        &mut connector(dev.tls("admin"), dev.node.address.clone()),
        &file,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(report.resume_offsets, vec![size / 4]);
    assert_eq!(report.payload_bytes, size - size / 4);
    assert_stored(&dev, &data);
    // Once stored, another run sends nothing.
    let again = upload(
        &mut connector(dev.tls("admin"), dev.node.address.clone()),
        &file,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(again.already_there() && again.payload_bytes == 0);
    // A chunk for a finished upload's handle is refused clearly.
    let err = admin_client(&dev)
        .call(Request::UploadChunk {
            handle: st.handle,
            offset: 0,
            data: b"x",
        })
        .unwrap_err();
    assert!(err.to_string().contains("no upload with handle"), "{err:#}");
}

#[test]
fn a_corrupted_part_is_detected_and_deleted() {
    let dev = HostDevice::new("test").start();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = random_file(tmp.path(), "a", 100_000);
    let sum = sha256(&data);
    // A part that claims to be a prefix of the file but is not.
    std::fs::create_dir_all(dev.data.join("staging")).unwrap();
    let part = dev.data.join("staging").join(format!("{}.part", hex(&sum)));
    std::fs::write(&part, vec![0u8; 50_000]).unwrap();
    let err = upload(
        &mut connector(dev.tls("admin"), dev.node.address.clone()),
        &file,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("sha256 mismatch"), "{err:#}");
    assert!(!part.exists() && !staged(&dev, &sum).exists());
    // The next run starts from scratch and succeeds.
    let report = upload(
        &mut connector(dev.tls("admin"), dev.node.address.clone()),
        &file,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(report.resume_offsets, vec![0]);
    assert_stored(&dev, &data);
}

#[test]
fn cli_upload_reports_json() {
    let dev = HostDevice::new("test").start();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = random_file(tmp.path(), "bundle", 200_000);
    dev.write_cli_config();
    let run = || dev.cli.json(&["upload", file.to_str().unwrap()]);
    let first = run();
    assert_eq!(first["sha256"], hex(&sha256(&data)));
    assert_eq!(first["payload_bytes"], 200_000);
    assert_eq!(first["already_there"], false);
    assert_stored(&dev, &data);
    assert_eq!(run()["already_there"], true);
}

/// Goodput and the cost of a cut over an emulated LTE link: 1 Mbit/s each
/// way, 50 ms each way (100 ms RTT). `OUTPOST_BENCH_MIB` sets the artifact
/// size (default 2 MiB). Prints a table for docs/benchmarks.md.
#[test]
#[ignore = "benchmark: ~40 s; run by scripts/bench-protocol"]
fn bench_upload_over_emulated_lte() {
    let mib: usize = std::env::var("OUTPOST_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let size = mib << 20;
    let rate_bps = 1_000_000u64;
    let dev = HostDevice::new("test").start();
    let tmp = tempfile::tempdir().unwrap();
    let (clean_file, _) = random_file(tmp.path(), "clean", size);
    let (cut_file, data) = random_file(tmp.path(), "cut", size);
    let lte = || {
        let mut cfg = LinkConfig::new(dev.node.address.parse().unwrap());
        cfg.latency = Duration::from_millis(50);
        cfg.rate_bps = Some(rate_bps);
        cfg
    };

    let emu = LinkEmu::start(lte()).unwrap();
    let clean = upload(
        &mut connector(dev.tls("admin"), emu.addr().to_string()),
        &clean_file,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(emu.wait_closed(Duration::from_secs(30)));
    let clean_link = emu.connections()[0];
    emu.stop();

    let mut cfg = lte();
    cfg.cut_up = vec![clean_link.up / 2];
    let emu = LinkEmu::start(cfg).unwrap();
    let cut = upload(
        &mut connector(dev.tls("admin"), emu.addr().to_string()),
        &cut_file,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(emu.wait_closed(Duration::from_secs(30)));
    let conns = emu.connections();
    emu.stop();
    assert_stored(&dev, &data);
    let cost = cut_cost(
        clean_link.up,
        conns[0].up,
        conns[1].up,
        cut.resume_offsets[1],
        size as u64,
    );

    let goodput = |r: &UploadReport| r.size as f64 * 8.0 / r.elapsed.as_secs_f64();
    let pct = |bps: f64| 100.0 * bps / rate_bps as f64;
    let chunk_on_link = chunk_record(1000, 1 << 20, MAX_CHUNK);
    println!("## upload benchmark: {mib} MiB over 1 Mbit/s, 100 ms RTT (link emulator)");
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| goodput, uncut (connect + TLS + all chunks) | {:.0} kbit/s = {:.1} % of the link, {:.2} s | >= 90 % |",
        goodput(&clean) / 1000.0,
        pct(goodput(&clean)),
        clean.elapsed.as_secs_f64()
    );
    println!(
        "| link bytes, uncut (up / down) | {} / {} ({:.2} % over the payload) | |",
        clean_link.up,
        clean_link.down,
        100.0 * (clean_link.up as f64 / size as f64 - 1.0)
    );
    println!(
        "| goodput with a cut at 50 % | {:.0} kbit/s = {:.1} % of the link, {:.2} s | |",
        goodput(&cut) / 1000.0,
        pct(goodput(&cut)),
        cut.elapsed.as_secs_f64()
    );
    println!(
        "| re-sent on the link after the cut (torn record) | {} B (one chunk record = {chunk_on_link} B) | <= one chunk |",
        cost.resent_on_link
    );
    println!(
        "| reconnect (resumed TLS handshake + UploadBegin, up) | {} B, resumed: {} | |",
        cost.reconnect,
        cut.resumed == 1
    );
    println!(
        "| payload written again by the client (queued past the cut) | {} B | |",
        cut.resent_bytes
    );
    println!(
        "| device offset at the reconnect | {} of {} | |",
        cut.resume_offsets[1], size
    );
    assert!(
        pct(goodput(&clean)) >= 90.0,
        "goodput below 90 % of the link"
    );
    assert!(cost.resent_on_link <= chunk_on_link, "{cost:?}");
    assert_eq!(cut.resumed, 1);
}

/// Resuming an upload re-hashes the part the device holds (up to 512 MiB:
/// seconds on an SD card). Meanwhile the device keeps answering other
/// connections: that work runs on a blocking thread, not on PID 1's
/// executor, which also serves every other client and pets the watchdog.
#[test]
fn other_clients_are_answered_while_a_large_part_is_rehashed() {
    const SIZE: u64 = 512 << 20; // the device's largest artifact
    let dev = HostDevice::new("test").start();
    let sum = [7u8; 32];
    std::fs::create_dir_all(dev.data.join("staging")).unwrap();
    let part = dev.data.join("staging").join(format!("{}.part", hex(&sum)));
    std::fs::File::create(&part)
        .unwrap()
        .set_len(SIZE - 1)
        .unwrap();

    // A second client pings in a loop; each pong's arrival time is kept.
    let done = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (done, mut client) = (done.clone(), admin_client(&dev));
        std::thread::spawn(move || {
            let mut pongs = Vec::new();
            while !done.load(Ordering::Relaxed) {
                assert_eq!(client.call(Request::Ping).unwrap(), Response::Pong);
                pongs.push(Instant::now());
            }
            pongs
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut client = admin_client(&dev);
    let sent = Instant::now();
    let answer = client.call(Request::UploadBegin {
        sha256: sum,
        size: SIZE,
    });
    let answered = Instant::now();
    done.store(true, Ordering::Relaxed);
    let pongs = pinger.join().unwrap();
    match answer.unwrap() {
        Response::Upload(st) => assert_eq!(st.offset, SIZE - 1, "{st:?}"),
        other => panic!("{other:?}"),
    }
    let took = answered - sent;
    let during = pongs
        .iter()
        .filter(|t| **t > sent && **t < answered)
        .count();
    println!("re-hash of {SIZE} B took {took:?}; {during} pongs meanwhile");
    assert!(
        took >= Duration::from_millis(100),
        "the re-hash took {took:?}: too quick to tell anything"
    );
    // On the executor, at most the pings already in the device's hands
    // before it began would be answered.
    assert!(during >= 20, "{during} pongs in {took:?}");
}
