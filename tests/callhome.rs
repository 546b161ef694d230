//! Call home end to end: `outpost-init --host-mode` dials a real mosquitto
//! (Debian's, started here on 127.0.0.1 with TLS from the site CA and
//! per-board ACLs); the CLI reaches it through the broker only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{read_lossy, wait_until, HostDevice, Mosquitto};
use outpost::host::broker::{self, BrokerLink, BrokerUrl, DeviceLink, Operator};
use outpost::host::client::client_config;
use outpost::host::pki::Site;
use outpost::wire::envelope::{topic, Target};
use outpost::wire::{Request, RequestFrame, Response, WireError};

/// `edge-1` (groups `north`) calling home to a fresh mosquitto, connected.
fn start(keepalive: u16) -> (HostDevice, Mosquitto) {
    let mut dev = HostDevice::new("test").log_to_file();
    dev.site.issue_client("reader", "reader").unwrap();
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    common::add_to_machine_config(&dev.data, &broker.callhome_toml(keepalive, &["north"]));
    dev.spawn();
    dev.write_cli_config();
    assert!(
        wait_until(20, || connected(&dev) >= 1),
        "device did not call home:\n{}",
        log(&dev)
    );
    (dev, broker)
}

fn log(dev: &HostDevice) -> String {
    read_lossy(&dev.cli.path("device.log"))
}

fn connected(dev: &HostDevice) -> usize {
    log(dev).matches("callhome: connected").count()
}

fn url(broker: &Mosquitto) -> BrokerUrl {
    BrokerUrl::parse(&broker.url()).unwrap()
}

fn operator(site: &Site, name: &str) -> Operator {
    let (crt, key) = site.client_paths(name);
    Operator::load(&crt, &key).unwrap()
}

/// An MQTT session as client `name` of `site` (an operator or a device).
fn session(
    site: &Site,
    broker: &Mosquitto,
    cert: (&std::path::Path, &std::path::Path),
    filters: &[String],
) -> anyhow::Result<BrokerLink> {
    let tls = client_config(&site.ca_cert(), cert.0, cert.1).unwrap();
    BrokerLink::connect(
        &url(broker),
        tls,
        &broker::client_id("test"),
        filters,
        outpost::mqtt::QoS::AtLeastOnce,
    )
}

fn admin_session(dev: &HostDevice, broker: &Mosquitto) -> BrokerLink {
    let (crt, key) = dev.site.client_paths("admin");
    session(&dev.site, broker, (&crt, &key), &[]).unwrap()
}

/// A signed command for edge-1, as the CLI makes it; returns (seq, payload).
fn command(op: &mut Operator, request: Request, expires: u64) -> (u64, Vec<u8>) {
    let frame = RequestFrame {
        id: 9,
        body: request,
    }
    .encode();
    op.sign(
        Target::Device("edge-1"),
        &topic::req("edge-1"),
        expires,
        &frame,
    )
}

fn link(dev: &HostDevice, broker: &Mosquitto, who: &str) -> DeviceLink {
    let (crt, key) = dev.site.client_paths(who);
    let tls = client_config(&dev.site.ca_cert(), &crt, &key).unwrap();
    DeviceLink::connect(
        &url(broker),
        tls,
        &dev.site.ca_cert(),
        operator(&dev.site, who),
        "edge-1",
        broker::DEFAULT_EXPIRY,
    )
    .unwrap()
}

fn boot_id(cli: &common::Cli, url: &str) -> String {
    let v = cli.json(&["--broker", url, "-n", "edge-1", "status"]);
    v["Status"]["boot_id"].as_str().unwrap().to_owned()
}

/// The label column of `status`'s text output (values change with time).
fn labels(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn status_logs_reboot_through_the_broker_as_directly() {
    let (dev, broker) = start(200);
    let cli = &dev.cli;
    let url = broker.url();
    let direct = cli.ok(&["status"]);
    let via = cli.ok(&["--broker", &url, "-n", "edge-1", "status"]);
    assert_eq!(labels(&direct), labels(&via), "{direct}\n---\n{via}");
    let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).unwrap().to_owned();
    for k in ["NODE", "HOSTNAME", "SLOT", "BOOT ID", "ADDRESSES"] {
        assert_eq!(line(&direct, k), line(&via, k));
    }
    let logs = cli.ok(&["--broker", &url, "-n", "edge-1", "logs", "--lines", "50"]);
    assert!(logs.contains("callhome: connected"), "{logs}");
    // A context that names the broker does the same without --broker.
    let conf = cli.path("cli.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    let with_broker = text.replace(
        "current_node = ",
        &format!("broker = \"{url}\"\ncurrent_node = "),
    );
    std::fs::write(&conf, with_broker).unwrap();
    let before = cli.json(&["status"])["Status"]["boot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(&conf, text).unwrap();
    assert_eq!(before, boot_id(cli, &url));
    // An upload goes in signed 8 KiB chunks through the broker, resumable.
    let file = cli.path("artifact.bin");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let up = cli.json(&[
        "--broker",
        &url,
        "-n",
        "edge-1",
        "upload",
        file.to_str().unwrap(),
    ]);
    assert_eq!(up["size"], 100_000, "{up}");
    let again = cli.json(&[
        "--broker",
        &url,
        "-n",
        "edge-1",
        "upload",
        file.to_str().unwrap(),
    ]);
    assert_eq!(again["already_there"], true, "{again}");
    let out = cli.ok(&["--broker", &url, "-n", "edge-1", "reboot"]);
    assert!(out.contains("edge-1"), "{out}");
    // Sent while the board is re-executing: queued by the broker (the
    // board's session persists) and answered after it calls back.
    assert!(
        wait_until(30, || log(&dev).matches("INFO: boot id").count() == 2),
        "{}",
        log(&dev)
    );
    let after = boot_id(cli, &url);
    assert_ne!(after, before, "boot id must change after a reboot");
    assert!(
        log(&dev).matches("callhome: reboot (seq").count() == 1,
        "{}",
        log(&dev)
    );
    // A support bundle comes through the broker as directly (its requests
    // pipelined in signed envelopes): the previous boot's log included.
    let archive = cli.path("support.tar.gz");
    let summary = cli.json(&[
        "--broker",
        &url,
        "-n",
        "edge-1",
        "support",
        archive.to_str().unwrap(),
    ]);
    let files = summary["files"].to_string();
    for want in [
        "status.json",
        "config.toml",
        "logs.txt",
        "previous-boot/logs.txt",
    ] {
        assert!(files.contains(want), "{want}: {summary}");
    }
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(&archive)
        .arg("edge-1/previous-boot/logs.txt")
        .output()
        .unwrap();
    let previous = String::from_utf8_lossy(&out.stdout);
    assert!(
        previous.contains(&format!("boot id {before}")),
        "{previous}"
    );
}

#[test]
fn broker_restart_and_commands_sent_while_away() {
    let (mut dev, mut broker) = start(200);
    broker.restart();
    assert!(
        wait_until(30, || connected(&dev) >= 2),
        "no reconnect after a broker restart:\n{}",
        log(&dev)
    );
    let url = broker.url();
    assert_eq!(boot_id(&dev.cli, &url).len(), 36);

    // The board is away; one command may wait 300 s, one only 2 s.
    dev.kill();
    let mut pubs = admin_session(&dev, &broker);
    let mut op = operator(&dev.site, "admin");
    let (keep, keep_msg) = command(
        &mut op,
        Request::Slots,
        broker::expires_in(Duration::from_secs(300)),
    );
    let (lapse, lapse_msg) = command(
        &mut op,
        Request::Time,
        broker::expires_in(Duration::from_secs(2)),
    );
    pubs.publish(&topic::req("edge-1"), &keep_msg, false)
        .unwrap();
    pubs.publish(&topic::req("edge-1"), &lapse_msg, false)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    dev.spawn();
    let ran = format!("callhome: slots (seq {keep},");
    assert!(
        wait_until(20, || log(&dev).contains(&ran)
            && log(&dev).contains("expired")),
        "{}",
        log(&dev)
    );
    assert!(
        !log(&dev).contains(&format!("seq {lapse},")),
        "expired command ran"
    );
    // A copy of the one that ran (as a QoS 1 redelivery would be) is refused.
    pubs.publish(&topic::req("edge-1"), &keep_msg, false)
        .unwrap();
    assert!(
        wait_until(10, || log(&dev).contains("already used")),
        "{}",
        log(&dev)
    );
    assert_eq!(log(&dev).matches(&ran).count(), 1, "{}", log(&dev));

    // Later commands of a link name the operator certificate by its id; a
    // board that restarted since asks for it whole, and the CLI resends.
    let mut l = link(&dev, &broker, "admin");
    let ping = RequestFrame {
        id: 2,
        body: Request::Ping,
    }
    .encode();
    l.send_request(&ping).unwrap();
    assert_eq!(l.receive().unwrap().body, Ok(Response::Pong));
    dev.kill();
    dev.spawn();
    assert!(wait_until(20, || connected(&dev) >= 1), "{}", log(&dev));
    l.send_request(&ping).unwrap();
    assert_eq!(l.receive().unwrap().body, Ok(Response::Pong));
    assert!(log(&dev).contains("unknown certificate"), "{}", log(&dev));
}

/// The board's link to the broker is cut twice — in the TLS handshake of its
/// first connection, and in the established session of its second, on the
/// way out with an answer — by a link emulator between board and broker.
/// The board reconnects each time by itself and answers through the broker.
#[test]
fn link_cuts_between_board_and_broker_are_survived() {
    let mut dev = HostDevice::new("test").log_to_file();
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    let mut link = outpost::host::linkemu::LinkConfig::new(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        broker.port,
    )));
    // Connection 0: cut 300 bytes up (inside the TLS handshake); connection
    // 1: after 2,400 bytes up (the TLS handshake, connect, subscribe, the
    // certificate, presence and seal key are ~1.7 KB; a status answer with
    // its PUBACK ~260 B: the third status below crosses the cut, fewer CLI
    // runs for a loaded host to get through).
    link.cut_up = vec![300, 2400];
    let emu = outpost::host::linkemu::LinkEmu::start(link).unwrap();
    common::add_to_machine_config(
        &dev.data,
        &broker.callhome_toml_via(emu.addr().port(), 200, &[]),
    );
    dev.spawn();
    dev.write_cli_config();
    assert!(
        wait_until(30, || connected(&dev) >= 1),
        "no session after a cut in the handshake:\n{}",
        log(&dev)
    );
    let conns = emu.connections();
    assert!(conns.len() >= 2 && conns[0].cut, "{conns:?}");

    // Status requests until the second connection is cut on an answer.
    let url = broker.url();
    let cut = wait_until(120, || {
        let _ = dev
            .cli
            .outpost(&["--broker", &url, "-n", "edge-1", "status"]);
        emu.connections().get(1).is_some_and(|c| c.cut)
    });
    assert!(cut, "{:?}\n{}", emu.connections(), log(&dev));
    assert!(
        wait_until(30, || connected(&dev) >= 2),
        "no reconnect after a cut in the session:\n{}",
        log(&dev)
    );
    assert_eq!(boot_id(&dev.cli, &url).len(), 36);
    assert!(emu.connections().len() >= 3);
}

/// An answer the link loses on its way up (the cut lands inside it) is kept
/// by the board until the broker acknowledges it, and sent again after the
/// reconnect; the broker's copy of the command does not run a second time.
#[test]
fn an_answer_cut_on_the_link_is_sent_again_after_the_reconnect() {
    use outpost::host::linkemu::{LinkConfig, LinkEmu};
    let mut dev = HostDevice::new("test").log_to_file();
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    let to_broker = std::net::SocketAddr::from(([127, 0, 0, 1], broker.port));
    let machine = dev.data.join("config/machine.toml");
    let base = std::fs::read_to_string(&machine).unwrap();
    let through = |emu: &LinkEmu| {
        let block = broker.callhome_toml_via(emu.addr().port(), 200, &[]);
        std::fs::write(&machine, format!("{base}{block}")).unwrap();
    };

    // First: the bytes the board sends to connect and announce itself.
    let emu = LinkEmu::start(LinkConfig::new(to_broker)).unwrap();
    through(&emu);
    dev.spawn();
    dev.write_cli_config();
    assert!(wait_until(20, || connected(&dev) >= 1), "{}", log(&dev));
    let mut idle = 0;
    assert!(wait_until(10, || {
        let now = emu.connections()[0].up;
        std::thread::sleep(Duration::from_millis(700));
        idle = now;
        now == emu.connections()[0].up
    }));
    dev.kill();

    // Then the same board through a link that dies 40 bytes later: inside
    // the TLS record of its first answer (a status answer is ~250 bytes).
    let mut cut = LinkConfig::new(to_broker);
    cut.cut_up = vec![idle + 40];
    let emu = LinkEmu::start(cut).unwrap();
    through(&emu);
    dev.spawn();
    assert!(wait_until(20, || connected(&dev) >= 1), "{}", log(&dev));
    let mut cli = link(&dev, &broker, "admin");
    cli.set_timeout(Duration::from_secs(60));
    let seq = cli
        .send_request(
            &RequestFrame {
                id: 7,
                body: Request::Status,
            }
            .encode(),
        )
        .unwrap();
    let answer = cli.receive().unwrap();
    assert!(matches!(answer.body, Ok(Response::Status(_))), "{answer:?}");
    let conns = emu.connections();
    assert!(conns[0].cut && conns.len() >= 2, "{conns:?}");
    let text = log(&dev);
    assert!(
        text.contains("sending 1 unacknowledged answer(s) again"),
        "{text}"
    );
    assert_eq!(text.matches(&format!("(seq {seq},")).count(), 1, "{text}");
}

/// `fleet list` reads each board's signed presence, retained on the broker:
/// online while its session is up, and offline — the session's last will,
/// said by the broker — once the board dies without a goodbye.
#[test]
fn presence_is_retained_and_the_last_will_says_offline() {
    let (mut dev, broker) = start(200);
    let url = broker.url();
    let list = |cli: &common::Cli| cli.json(&["--broker", &url, "fleet", "list", "--timeout", "5"]);
    let boot = boot_id(&dev.cli, &url);
    let v = list(&dev.cli);
    let seen = &v["seen"]["edge-1"];
    assert_eq!(seen["online"], true, "{v}");
    assert_eq!(seen["boot_id"], boot.as_str(), "{v}");
    assert_eq!(seen["slot"], "A", "{v}");
    let since = seen["since"].as_u64().unwrap();
    let v = dev.cli.json(&[
        "--broker",
        &url,
        "fleet",
        "list",
        "--devices",
        "edge-1,ghost",
    ]);
    assert_eq!(v["never_seen"], serde_json::json!(["ghost"]), "{v}");

    dev.kill();
    let mut v = serde_json::Value::Null;
    assert!(
        wait_until(15, || {
            v = list(&dev.cli);
            v["seen"]["edge-1"]["online"] == false
        }),
        "{v}\n{}",
        broker.log()
    );
    assert_eq!(v["seen"]["edge-1"]["boot_id"], boot.as_str(), "{v}");
    assert_eq!(v["seen"]["edge-1"]["since"], since, "{v}");

    // An operator's (or anyone's) unsigned overwrite is shown as such.
    let mut admin = admin_session(&dev, &broker);
    admin
        .publish(&topic::presence("edge-1"), b"not signed", true)
        .unwrap();
    drop(admin);
    let v = list(&dev.cli);
    assert!(v["seen"].get("edge-1").is_none(), "{v}");
    assert!(v["unverified"]["edge-1"].is_string(), "{v}");

    dev.spawn();
    assert!(
        wait_until(20, || list(&dev.cli)["seen"]["edge-1"]["online"] == true),
        "{}",
        log(&dev)
    );
}

/// `logs --follow` through the broker, plain and sealed: the tail, then new
/// lines as the board logs them, until the operator cancels (the stream
/// ends with `End`). Sealed, an observer on the broker reads none of it.
#[test]
fn logs_follow_through_the_broker_until_cancelled() {
    let (dev, broker) = start(200);
    let url = broker.url();
    // What the broker's operator would see of the board's answers.
    let (crt, key) = dev.site.client_paths("admin");
    let mut observer = session(&dev.site, &broker, (&crt, &key), &[topic::resp("edge-1")]).unwrap();

    // Sealed first: a killed CLI leaves its follow running on the board
    // until the lease ends, and a plain one would then show on the broker.
    for seal in [true, false] {
        // The CLI, as an operator runs it: lines appear while it runs.
        let mut args = vec!["--broker", &url, "-n", "edge-1"];
        if seal {
            args.push("--seal");
        }
        args.extend(["logs", "--follow", "--lines", "1"]);
        let mut follower = dev
            .cli
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = follower.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let mut wait_for = |needle: &str| {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                    seen.push(line);
                    if seen.last().unwrap().contains(needle) {
                        return true;
                    }
                }
            }
            false
        };
        // Its own command is logged on the board before the tail is taken.
        assert!(wait_for("callhome: logs (seq"), "{seen:?}\n{}", log(&dev));
        // A line logged afterwards comes through the stream.
        let mut poke = link(&dev, &broker, "admin");
        poke.set_seal(seal);
        let status = RequestFrame {
            id: 1,
            body: Request::Status,
        };
        let seq = poke.send_request(&status.encode()).unwrap();
        poke.receive().unwrap();
        let marker = format!("callhome: status (seq {seq},");
        assert!(wait_for(&marker), "{seen:?}\n{}", log(&dev));
        let _ = follower.kill();
        let _ = follower.wait();

        // What crossed the broker: sealed, no log text in the clear.
        let mut bodies = Vec::new();
        while let Some((_, payload)) = observer
            .next_message(Instant::now() + Duration::from_millis(300))
            .unwrap()
        {
            bodies.push(payload);
        }
        let clear = bodies
            .iter()
            .any(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()));
        assert_eq!(clear, !seal, "marker readable on the broker: {clear}");
        if seal {
            let streamed = bodies.iter().any(|b| {
                let signed: outpost::wire::envelope::SignedByDevice =
                    outpost::wire::envelope::decode(b).unwrap();
                let says: outpost::wire::envelope::DeviceSays =
                    outpost::wire::envelope::decode(signed.says).unwrap();
                matches!(
                    says.message,
                    outpost::wire::envelope::DeviceMessage::SealedStream { .. }
                )
            });
            assert!(streamed, "no SealedStream among {} messages", bodies.len());
        }

        // Through the library: Cancel ends the stream with End, and Accepted.
        let mut cli = link(&dev, &broker, "admin");
        cli.set_seal(seal);
        let logs = RequestFrame {
            id: 5,
            body: Request::Logs {
                service: None,
                lines: 0,
                follow: true,
            },
        };
        cli.send_stream_request(&logs.encode()).unwrap();
        let first = cli.receive().unwrap();
        assert_eq!(first.id, 5);
        assert!(matches!(first.body, Ok(Response::Logs(_))), "{first:?}");
        let cancel = RequestFrame {
            id: 6,
            body: Request::Cancel { id: 5 },
        };
        cli.send_request(&cancel.encode()).unwrap();
        let mut ended = false;
        let mut accepted = false;
        while !(ended && accepted) {
            let f = cli.receive().unwrap();
            match (f.id, f.body) {
                (5, Ok(Response::End)) => ended = true,
                (5, Ok(Response::Logs(_))) => {} // the cancel's own log line
                (6, Ok(Response::Accepted)) => accepted = true,
                other => panic!("{other:?}"),
            }
        }
        // A second cancel finds nothing: the stream is gone.
        let again = RequestFrame {
            id: 7,
            body: Request::Cancel { id: 5 },
        };
        cli.send_request(&again.encode()).unwrap();
        let f = cli.receive().unwrap();
        assert!(matches!(f.body, Err(WireError::Invalid(_))), "{f:?}");
    }
}

#[test]
fn forged_tampered_expired_misdirected_and_wrong_role_commands_are_refused() {
    let (dev, broker) = start(200);
    let url = broker.url();
    let boot = boot_id(&dev.cli, &url);
    let mut pubs = admin_session(&dev, &broker);
    let later = broker::expires_in(Duration::from_secs(60));
    let req = topic::req("edge-1");
    let refusals = || log(&dev).matches("callhome: refused a command").count();

    // Signed by an admin of another site.
    let tmp = tempfile::tempdir().unwrap();
    let evil = Site::create(&tmp.path().join("evil"), "evil").unwrap();
    let mut stranger = operator(&evil, "admin");
    pubs.publish(
        &req,
        &command(&mut stranger, Request::Reboot, later).1,
        false,
    )
    .unwrap();
    assert!(
        wait_until(10, || log(&dev).contains("certificate not accepted")),
        "{}",
        log(&dev)
    );
    // Our admin's command with one byte of the request changed.
    let mut op = operator(&dev.site, "admin");
    let (_, good) = command(&mut op, Request::Ping, later);
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 70] ^= 1; // inside the signed command, before the signature
    pubs.publish(&req, &bad, false).unwrap();
    assert!(wait_until(10, || refusals() >= 2), "{}", log(&dev));
    // Expired.
    let past = broker::expires_in(Duration::ZERO) - 10;
    pubs.publish(&req, &command(&mut op, Request::Reboot, past).1, false)
        .unwrap();
    assert!(
        wait_until(10, || log(&dev).contains("expired")),
        "{}",
        log(&dev)
    );
    // For another device, published on this one's topic.
    let frame = RequestFrame {
        id: 1,
        body: Request::Reboot,
    }
    .encode();
    let (_, other) = op.sign(Target::Device("edge-2"), &req, later, &frame);
    pubs.publish(&req, &other, false).unwrap();
    assert!(
        wait_until(10, || log(&dev).contains("addressed to another device")),
        "{}",
        log(&dev)
    );
    // Garbage.
    pubs.publish(&req, b"\x05\x01not an envelope", false)
        .unwrap();
    assert!(
        wait_until(10, || log(&dev).contains("does not decode")),
        "{}",
        log(&dev)
    );

    // A reader may read but not reboot: answered "permission denied".
    let mut reader = link(&dev, &broker, "reader");
    reader
        .send_request(
            &RequestFrame {
                id: 3,
                body: Request::Reboot,
            }
            .encode(),
        )
        .unwrap();
    let answer = reader.receive().unwrap();
    assert_eq!(
        (answer.id, answer.body),
        (3, Err(WireError::PermissionDenied))
    );
    assert!(log(&dev).contains("reboot refused to a reader client"));
    reader
        .send_request(
            &RequestFrame {
                id: 4,
                body: Request::Ping,
            }
            .encode(),
        )
        .unwrap();
    assert_eq!(reader.receive().unwrap().body, Ok(Response::Pong));

    // A group command reaches the board through its group topic.
    let group = topic::group_req("north");
    let (seq, msg) = op.sign(
        Target::Group("north"),
        &group,
        later,
        &RequestFrame {
            id: 5,
            body: Request::Ping,
        }
        .encode(),
    );
    pubs.publish(&group, &msg, false).unwrap();
    assert!(
        wait_until(10, || log(&dev).contains(&format!("ping (seq {seq},"))),
        "{}",
        log(&dev)
    );

    assert_eq!(
        boot_id(&dev.cli, &url),
        boot,
        "nothing refused may have rebooted it"
    );
}

#[test]
fn another_devices_topics_are_refused_by_the_acl() {
    let (dev, broker) = start(200);
    dev.site.issue_device("edge-2", 50000).unwrap();
    let dir = dev.site.device_dir("edge-2");
    let cert = (dir.join("device.crt"), dir.join("device.key"));
    let as_edge2 = |filters: &[String]| session(&dev.site, &broker, (&cert.0, &cert.1), filters);
    // mosquitto 2.0 grants the SUBACK but delivers nothing the ACL denies:
    // edge-2 listening on edge-1's topics hears nothing of an exchange.
    let mut spy = as_edge2(&[topic::req("edge-1"), topic::resp("edge-1")]).unwrap();
    let mut admin = link(&dev, &broker, "admin");
    admin
        .send_request(
            &RequestFrame {
                id: 1,
                body: Request::Ping,
            }
            .encode(),
        )
        .unwrap();
    assert_eq!(admin.receive().unwrap().body, Ok(Response::Pong));
    let heard = spy
        .next_message(Instant::now() + Duration::from_millis(1500))
        .unwrap();
    assert!(heard.is_none(), "edge-2 heard {heard:?}");
    // A valid command (captured) published by edge-2 onto edge-1's topic
    // never reaches edge-1: the broker drops it.
    let mut op = operator(&dev.site, "admin");
    let (seq, msg) = command(
        &mut op,
        Request::Ping,
        broker::expires_in(Duration::from_secs(60)),
    );
    let mut edge2 = as_edge2(&[]).unwrap();
    edge2.publish(&topic::req("edge-1"), &msg, false).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!log(&dev).contains(&format!("seq {seq}")), "{}", log(&dev));
    assert!(broker.log().contains("edge-2"), "{}", broker.log());
}

/// A TCP relay that counts bytes and reads (≈ segments) each way.
struct Counter {
    port: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    up_reads: Arc<AtomicU64>,
    down_reads: Arc<AtomicU64>,
}

impl Counter {
    fn start(to: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = Self {
            port,
            up: Arc::default(),
            down: Arc::default(),
            up_reads: Arc::default(),
            down_reads: Arc::default(),
        };
        let (up, down, ur, dr) = (
            c.up.clone(),
            c.down.clone(),
            c.up_reads.clone(),
            c.down_reads.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    up.clone(),
                    ur.clone(),
                );
                pipe(server, client, down.clone(), dr.clone());
            }
        });
        c
    }

    fn snapshot(&self) -> [u64; 4] {
        [&self.up, &self.down, &self.up_reads, &self.down_reads].map(|a| a.load(Ordering::SeqCst))
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, bytes: Arc<AtomicU64>, reads: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Ok(n) => {
                    bytes.fetch_add(n as u64, Ordering::SeqCst);
                    reads.fetch_add(1, Ordering::SeqCst);
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Bytes on the board's link: idle (keepalive pings) and one status round
/// trip, counted between the board and the broker. Prints the numbers that
/// docs/benchmarks.md records; fails if idle traffic misses the goal.
#[test]
fn bytes_on_the_board_link() {
    let mut dev = HostDevice::new("test").log_to_file();
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    let relay = Counter::start(broker.port);
    let keepalive = 10u16;
    common::add_to_machine_config(
        &dev.data,
        &broker.callhome_toml_via(relay.port, keepalive, &[]),
    );
    let start = Instant::now();
    dev.spawn();
    assert!(wait_until(20, || connected(&dev) >= 1), "{}", log(&dev));
    std::thread::sleep(Duration::from_millis(500));
    let connect = relay.snapshot();
    let setup_ms = start.elapsed().as_millis();

    // Idle: three keepalive periods.
    std::thread::sleep(Duration::from_secs(u64::from(keepalive) * 3 + 2));
    let idle = relay.snapshot();
    let pings = (
        idle[0] - connect[0],
        idle[1] - connect[1],
        idle[2] - connect[2],
        idle[3] - connect[3],
    );
    // TCP/IP per segment: IPv4 20 + TCP 20 + timestamps 12; each ping
    // exchange also has one pure ACK (the board's ACK of the PINGRESP).
    let segments = pings.2 + pings.3;
    let exchanges = pings.2.max(1);
    let per_exchange = (pings.0 + pings.1 + (segments + exchanges) * 52) as f64 / exchanges as f64;
    let per_day = |ka: f64| per_exchange * 86_400.0 / ka;

    // Status round trips through the broker: bytes (in, out) on the board's side.
    let trip = |l: &mut DeviceLink, id: u32| {
        let before = relay.snapshot();
        l.send_request(
            &RequestFrame {
                id,
                body: Request::Status,
            }
            .encode(),
        )
        .unwrap();
        assert!(matches!(l.receive().unwrap().body, Ok(Response::Status(_))));
        std::thread::sleep(Duration::from_millis(300));
        let after = relay.snapshot();
        (after[1] - before[1], after[0] - before[0])
    };
    let mut l = link(&dev, &broker, "admin");
    let first = trip(&mut l, 1);
    // The next command names the operator certificate by its id.
    let known = trip(&mut l, 2);
    let (cli_tx, cli_rx) = l.counted();
    // The same two round trips sealed (docs/benchmarks.md "Sealed commands").
    let mut sealed = link(&dev, &broker, "admin");
    sealed.set_seal(true);
    let trips = [trip(&mut sealed, 3), trip(&mut sealed, 4)];
    println!(
        "callhome sealed status round trip on the board link: {} B in + {} B out (TLS+MQTT), \
         later ones {} B in + {} B out",
        trips[0].0, trips[0].1, trips[1].0, trips[1].1
    );
    println!(
        "callhome bytes: connect {} up / {} down (TLS+MQTT, incl. cert and online event); \
         idle {:.0} B per ping exchange incl. TCP/IP ({} pings in {} s); \
         per day at keepalive 200 s: {:.0} KB, 220 s: {:.0} KB, 240 s: {:.0} KB; \
         status round trip on the board link: {} B in + {} B out (TLS+MQTT), later ones {} B in + {} B out; \
         CLI side MQTT: {cli_tx} B out (incl. CONNECT/SUBSCRIBE), {cli_rx} B in (incl. retained cert); setup {setup_ms} ms",
        connect[0], connect[1], per_exchange, exchanges, keepalive * 3 + 2,
        per_day(200.0) / 1000.0, per_day(220.0) / 1000.0, per_day(240.0) / 1000.0,
        first.0, first.1, known.0, known.1,
    );
    assert!(
        per_day(200.0) <= 100_000.0,
        "idle traffic over the 100 KB/day goal"
    );
}

/// Host-mode boards `b0000`… of one site, all calling home to `broker`.
struct Fleet {
    boards: Vec<(String, std::path::PathBuf, Option<std::process::Child>)>,
}

impl Fleet {
    fn start(
        site: &Site,
        root: &std::path::Path,
        broker: &Mosquitto,
        n: usize,
        group_every: usize,
    ) -> Self {
        let mut boards = Vec::new();
        for i in 0..n {
            let name = format!("b{i:04}");
            site.issue_device(&name, 50000).unwrap();
            let data = root.join(&name);
            common::stage_data(site, &name, &data);
            let groups: &[&str] = if i % group_every == 0 {
                &["north"]
            } else {
                &[]
            };
            common::add_to_machine_config(&data, &broker.callhome_toml(200, groups));
            boards.push((name, data, None));
        }
        let mut fleet = Self { boards };
        for i in 0..n {
            fleet.spawn(i);
        }
        fleet
    }

    fn spawn(&mut self, i: usize) {
        let (name, data, child) = &mut self.boards[i];
        let log = std::fs::File::create(data.join("device.log")).unwrap();
        *child = Some(
            std::process::Command::new(env!("CARGO_BIN_EXE_outpost-init"))
                .args(["--host-mode", "--no-led", "--board", "sim", "--data"])
                .arg(&*data)
                .args(["--listen", "127.0.0.1:0"])
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.boards[i].2.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn connected(&self, i: usize) -> bool {
        read_lossy(&self.boards[i].1.join("device.log")).contains("callhome: connected")
    }

    fn names(&self) -> Vec<String> {
        self.boards.iter().map(|b| b.0.clone()).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in 0..self.boards.len() {
            self.kill(i);
        }
    }
}

/// Fan-out to a fleet of host-mode boards on one mosquitto: a group status,
/// a device list with one that does not exist (reported missing), and a
/// board that comes back during the grace period (reported late). Boards:
/// `OUTPOST_FLEET_BOARDS` (default 20; docs/benchmarks.md has 200).
#[test]
fn fleet_fan_out_group_list_missing_and_late() {
    let n: usize = std::env::var("OUTPOST_FLEET_BOARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dev = HostDevice::new("fleet");
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    dev.write_cli_config();
    let started = Instant::now();
    let mut fleet = Fleet::start(&dev.site, &dev.cli.path("boards"), &broker, n, 2);
    assert!(
        wait_until(60 + n as u64 / 5, || (0..n).all(|i| fleet.connected(i))),
        "not every board called home"
    );
    let all_up = started.elapsed();
    let url = broker.url();
    let cli = &dev.cli;

    let t = Instant::now();
    let v = cli.json(&[
        "--broker",
        &url,
        "fleet",
        "status",
        "--group",
        "north",
        "--timeout",
        "5",
        "--grace",
        "0",
    ]);
    let group_wall = t.elapsed();
    let group_ms = v["elapsed_ms"].as_f64().unwrap();
    let answers = v["answers"].as_object().unwrap();
    assert_eq!(answers.len(), n.div_ceil(2), "{v}");
    assert!(answers
        .keys()
        .all(|k| k[1..].parse::<usize>().unwrap() % 2 == 0));

    let mut list = fleet.names();
    list.push("ghost".into());
    let t = Instant::now();
    let v = cli.json(&[
        "--broker",
        &url,
        "fleet",
        "ping",
        "--devices",
        &list.join(","),
        "--timeout",
        "10",
    ]);
    let list_wall = t.elapsed();
    assert_eq!(v["answers"].as_object().unwrap().len(), n, "{v}");
    assert_eq!(v["missing"], serde_json::json!(["ghost"]));
    let fan_out_ms = v["elapsed_ms"].as_f64().unwrap();

    // b0001 is away when the command goes out and back after the timeout.
    fleet.kill(1);
    let two = "b0000,b0001";
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| {
            cli.json(&[
                "--broker",
                &url,
                "fleet",
                "ping",
                "--devices",
                two,
                "--timeout",
                "2",
                "--grace",
                "20",
            ])
        });
        std::thread::sleep(Duration::from_secs(3));
        fleet.spawn(1);
        run.join().unwrap()
    });
    assert_eq!(out["answers"]["b0000"]["late"], false, "{out}");
    assert_eq!(out["answers"]["b0001"]["late"], true, "{out}");
    println!(
        "fleet: {n} boards up and called home in {:.1} s; group status to {} boards: last answer after {group_ms:.0} ms ({:.0} ms wall: CLI incl. connect, 5 s collection); \
         ping to {n} listed boards: last answer after {fan_out_ms:.0} ms, {:.0} ms wall",
        all_up.as_secs_f64(),
        n.div_ceil(2),
        group_wall.as_secs_f64() * 1000.0,
        list_wall.as_secs_f64() * 1000.0
    );
}

/// (topic, payload) of each message seen.
type Seen = Vec<(String, Vec<u8>)>;

/// Everything published on `outpost/edge-1/#` while it runs, as another
/// admin client of the broker sees it (the broker operator's view).
struct Observer {
    seen: Arc<std::sync::Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    fn start(dev: &HostDevice, broker: &Mosquitto) -> Self {
        let (crt, key) = dev.site.client_paths("admin");
        let mut s = session(
            &dev.site,
            broker,
            (&crt, &key),
            &["outpost/edge-1/#".into()],
        )
        .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let deadline = Instant::now() + Duration::from_millis(200);
                if let Some(m) = s.next_message(deadline).unwrap() {
                    seen2.lock().unwrap().push(m);
                }
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Request and answer payloads seen so far, then forget them.
    fn take(&self) -> Seen {
        std::thread::sleep(Duration::from_millis(500));
        std::mem::take(&mut *self.seen.lock().unwrap())
            .into_iter()
            .filter(|(t, _)| t.ends_with("/req") || t.ends_with("/resp"))
            .collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every request carries a sealed body, every answer is a `SealedAnswer`.
fn all_sealed(seen: &[(String, Vec<u8>)]) -> bool {
    use outpost::wire::envelope::{
        decode, Body, Command, DeviceMessage, DeviceSays, SignedByDevice, SignedCommand,
    };
    seen.iter().all(|(t, p)| {
        if t.ends_with("/req") {
            let signed: SignedCommand = decode(p).unwrap();
            let c: Command = decode(signed.command).unwrap();
            matches!(c.request, Body::Sealed { .. })
        } else {
            let signed: SignedByDevice = decode(p).unwrap();
            let says: DeviceSays = decode(signed.says).unwrap();
            matches!(says.message, DeviceMessage::SealedAnswer { .. })
        }
    })
}

fn contains(seen: &[(String, Vec<u8>)], needle: &[u8]) -> bool {
    seen.iter()
        .any(|(_, p)| p.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn sealed_commands_hide_requests_and_answers_from_the_broker() {
    let (mut dev, broker) = start(200);
    let cli = &dev.cli;
    let url = broker.url();
    let watch = Observer::start(&dev, &broker);
    let via = |extra: &[&str]| {
        let mut a = vec!["--broker", url.as_str(), "-n", "edge-1"];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let json = |args: Vec<String>| cli.json(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // In the clear, the broker's operator reads the answer (the boot id).
    let plain = json(via(&["status"]));
    let boot_id = plain["Status"]["boot_id"].as_str().unwrap().to_owned();
    let seen = watch.take();
    assert!(
        seen.iter().any(|(t, _)| t.ends_with("/req")),
        "observer saw no request"
    );
    assert!(
        contains(&seen, boot_id.as_bytes()),
        "observer sees plain answers"
    );

    // Sealed: the same answer reaches the CLI, the broker sees neither.
    let sealed = json(via(&["--seal", "status"]));
    assert_eq!(sealed["Status"]["boot_id"], boot_id, "{sealed}");
    assert_eq!(sealed["Status"]["hostname"], plain["Status"]["hostname"]);
    let seen = watch.take();
    // `status` asks three things (status, slots, metrics): all sealed.
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(all_sealed(&seen));
    assert!(
        !contains(&seen, boot_id.as_bytes()),
        "sealed answer readable"
    );

    // A small upload, sealed chunk by chunk: its bytes never show.
    let marker = b"SEAL-MARKER-7c1e";
    let file = cli.path("secret.bin");
    let body: Vec<u8> = marker.iter().copied().cycle().take(20_000).collect();
    std::fs::write(&file, &body).unwrap();
    let up = json(via(&["--seal", "upload", file.to_str().unwrap()]));
    assert_eq!(up["size"], 20_000, "{up}");
    let seen = watch.take();
    assert!(seen.len() >= 4, "{}", seen.len());
    assert!(all_sealed(&seen));
    assert!(!contains(&seen, marker), "sealed upload readable");
    // The control: the same kind of upload in the clear is readable.
    let plain_file = cli.path("plain.bin");
    std::fs::write(&plain_file, b"PLAIN-MARKER-".repeat(100)).unwrap();
    json(via(&["upload", plain_file.to_str().unwrap()]));
    assert!(contains(&watch.take(), b"PLAIN-MARKER-"));

    // Fan-out: a sealed device list works; a sealed group publish is refused.
    let fan = cli.json(&[
        "--broker",
        &url,
        "--seal",
        "fleet",
        "status",
        "--devices",
        "edge-1",
        "--timeout",
        "10",
    ]);
    assert_eq!(
        fan["answers"]["edge-1"]["answer"]["Status"]["boot_id"], boot_id,
        "{fan}"
    );
    assert!(!contains(&watch.take(), boot_id.as_bytes()));
    let out = cli.outpost(&[
        "--broker", &url, "--seal", "fleet", "status", "--group", "north",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seal cannot go to a --group"));

    // No seal key published for a device: a clear error, nothing sent.
    let mut l = {
        let (crt, key) = dev.site.client_paths("admin");
        let tls = client_config(&dev.site.ca_cert(), &crt, &key).unwrap();
        DeviceLink::connect(
            &url_of(&url),
            tls,
            &dev.site.ca_cert(),
            operator(&dev.site, "admin"),
            "edge-9",
            broker::DEFAULT_EXPIRY,
        )
        .unwrap()
    };
    l.set_timeout(Duration::from_secs(2));
    l.set_seal(true);
    let err = l
        .send_request(
            &RequestFrame {
                id: 1,
                body: Request::Ping,
            }
            .encode(),
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("no seal key"), "{err:#}");

    // A board that requires sealing refuses plain commands and says why;
    // its seal key survives the restart (same file on DATA).
    let key_file = dev.data.join("state/callhome-x25519.key");
    let key = std::fs::read(&key_file).unwrap();
    assert_eq!(key.len(), 32);
    dev.kill();
    // [callhome] is the last table: the line joins it.
    common::add_to_machine_config(&dev.data, "require_sealed = true\n");
    dev.spawn();
    assert!(wait_until(20, || connected(&dev) >= 1), "{}", log(&dev));
    let out = dev.cli.outpost(
        &via(&["status"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sealed commands only"), "{stderr}");
    assert!(log(&dev).contains("sealed commands only"), "{}", log(&dev));
    let again = dev.cli.json(
        &via(&["--seal", "status"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(again["Status"]["hostname"], plain["Status"]["hostname"]);
    assert_eq!(std::fs::read(&key_file).unwrap(), key);
}

fn url_of(url: &str) -> BrokerUrl {
    BrokerUrl::parse(url).unwrap()
}

/// The site's revocation list as the broker's `crlfile` (`gen broker` adds
/// it when the site has one): a revoked operator cannot even open a session
/// with the broker, and mosquitto (OpenSSL) takes our Ed25519-signed list —
/// the other operators and the board still connect.
#[test]
fn a_broker_with_the_site_list_refuses_a_revoked_operator() {
    let mut dev = HostDevice::new("test").log_to_file();
    dev.site.issue_client("reader", "reader").unwrap();
    let (crt, key) = dev.site.client_paths("reader");
    let pem = std::fs::read(&crt).unwrap();
    outpost::host::revoke::revoke(&dev.site, &pem, "client reader").unwrap();
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    let conf = std::fs::read_to_string(dev.cli.path("broker/mosquitto.conf")).unwrap();
    assert!(conf.contains("crlfile "), "{conf}");
    assert!(session(&dev.site, &broker, (&crt, &key), &[]).is_err());
    admin_session(&dev, &broker);
    common::add_to_machine_config(&dev.data, &broker.callhome_toml(200, &[]));
    dev.spawn();
    assert!(
        wait_until(20, || connected(&dev) >= 1),
        "the board did not get through:\n{}\n{}",
        log(&dev),
        broker.log()
    );
    // And the board takes the same list through the broker, fleet-wide.
    dev.write_cli_config();
    let crl = dev.site.dir.join("crl.pem");
    let url = broker.url();
    let fleet = |extra: &[&str]| {
        let mut args = vec![
            "--broker",
            &url,
            "fleet",
            "--devices",
            "edge-1",
            "revocations",
        ];
        args.extend_from_slice(extra);
        dev.cli.json(&args)["answers"]["edge-1"]["answer"].clone()
    };
    assert_eq!(fleet(&[])["Revocations"], serde_json::Value::Null);
    let installed = fleet(&["--install", crl.to_str().unwrap()]);
    assert_eq!(installed["Revocations"]["revoked"], 1, "{installed}");
    let held = dev.data.join("identity/revoked.crl");
    assert!(held.exists());
    // The list also stays retained on the broker: a board that did not
    // get it (here: the same board without it) takes it when it connects.
    dev.kill();
    std::fs::remove_file(&held).unwrap();
    dev.spawn();
    assert!(
        wait_until(20, || held.exists()),
        "the retained list was not taken:\n{}",
        log(&dev)
    );
    assert!(log(&dev).contains("took the site's revocation list"));
}
