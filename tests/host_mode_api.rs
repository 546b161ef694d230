//! The device API end to end in host mode: the real outpost-init binary,
//! unprivileged, with DATA in a temp dir, talked to over real TLS on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::HostDevice;
use outpost::host::client::{client_config, Client};
use outpost::host::pki::Site;
use outpost::wire::{self, Request, Response, WireError};

/// Device `edge-1` in host mode, booted from slot B.
fn start_device() -> HostDevice {
    HostDevice::new("test").args(&["--slot", "B"]).start()
}

fn admin(dev: &HostDevice) -> Client {
    Client::connect_with(dev.tls("admin"), &dev.node).unwrap()
}

fn status(client: &mut Client) -> wire::Status {
    match client.call(Request::Status).unwrap() {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

/// A client config from arbitrary PEM text (written to temp files).
fn config_from_pem(dir: &Path, ca: &Path, cert: &str, key: &str) -> Arc<rustls::ClientConfig> {
    let (c, k) = (dir.join("c.crt"), dir.join("c.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    client_config(ca, &c, &k).unwrap()
}

#[test]
fn status_version_logs_over_mutual_tls() {
    let dev = start_device();
    let mut c = admin(&dev);
    let s = status(&mut c);
    assert_eq!((s.hostname.as_str(), s.slot.as_str()), ("edge-1", "B"));
    assert_eq!(s.boot_id.len(), 36);
    assert!(s.init_rss_kib > 0 && s.mem_total_kib > 0);
    match c
        .call(Request::Version {
            protocol: wire::PROTOCOL_VERSION,
        })
        .unwrap()
    {
        Response::Version(v) => assert_eq!(v.protocol, wire::PROTOCOL_VERSION),
        other => panic!("{other:?}"),
    }
    match c
        .call(Request::Logs {
            service: None,
            lines: 50,
            follow: false,
        })
        .unwrap()
    {
        Response::Logs(lines) => {
            assert!(lines.iter().any(|l| l.text.contains("API on")), "{lines:?}")
        }
        other => panic!("{other:?}"),
    }
    // Host mode has no kernel log: a clear error, and the connection stays usable.
    let err = c.call(Request::Dmesg { max_bytes: 100 }).unwrap_err();
    assert!(err.to_string().contains("no kernel log"), "{err:#}");
    assert_eq!(status(&mut c).hostname, "edge-1");
}

#[test]
fn clients_outside_the_site_are_refused() {
    let dev = start_device();
    let tmp = tempfile::tempdir().unwrap();
    // Certificate from another CA.
    let other = Site::create(&tmp.path().join("other"), "other").unwrap();
    let (crt, key) = other.client_paths("admin");
    let foreign = client_config(&dev.site.ca_cert(), &crt, &key).unwrap();
    assert!(Client::connect_with(foreign, &dev.node)
        .and_then(|mut c| c.call(Request::Status))
        .is_err());
    // Expired certificate from the right CA.
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = dev
        .site
        .client_pem(
            "old",
            "admin",
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    let expired = config_from_pem(tmp.path(), &dev.site.ca_cert(), &cert, &key);
    assert!(Client::connect_with(expired, &dev.node)
        .and_then(|mut c| c.call(Request::Status))
        .is_err());
    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::pem::PemObject::pem_file_iter(dev.site.ca_cert()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let anonymous = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    assert!(Client::connect_with(anonymous, &dev.node)
        .and_then(|mut c| c.call(Request::Status))
        .is_err());
    // The device still serves its own site.
    assert_eq!(status(&mut admin(&dev)).hostname, "edge-1");
}

/// Raw TLS stream to send hand-made bytes.
fn raw_tls(dev: &HostDevice) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = dev.tls("admin");
    let tcp = TcpStream::connect(&dev.node.address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(config, "edge-1".try_into().unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn read_until_closed(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn malformed_and_oversized_frames_close_only_that_connection() {
    let dev = start_device();
    // Oversized length prefix: closed without an answer.
    let mut s = raw_tls(&dev);
    let len = wire::MAX_REQUEST_FRAME + 1;
    s.write_all(&[
        (len & 0x7f) as u8 | 0x80,
        ((len >> 7) & 0x7f) as u8 | 0x80,
        (len >> 14) as u8,
    ])
    .unwrap();
    s.flush().unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    // Over-long varint.
    let mut s = raw_tls(&dev);
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    s.flush().unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    // A whole frame of garbage: answered with DecodeFailed, connection usable.
    let mut s = raw_tls(&dev);
    s.write_all(&[3, 1, 0xee, 0xee]).unwrap();
    s.write_all(
        &wire::encode_frame(
            &wire::RequestFrame {
                id: 9,
                body: Request::Status,
            }
            .encode(),
            64,
        )
        .unwrap(),
    )
    .unwrap();
    s.flush().unwrap();
    let mut dec = wire::FrameDecoder::<{ wire::MAX_RESPONSE_FRAME }>::default();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        let mut input = &buf[..n];
        while let wire::FeedResult::Frame { payload, rest } = dec.feed(input) {
            got.push(wire::ResponseFrame::decode(payload).unwrap());
            input = rest;
            if input.is_empty() {
                break;
            }
        }
    }
    assert_eq!(
        got[0],
        wire::ResponseFrame {
            id: 0,
            body: Err(WireError::DecodeFailed)
        }
    );
    assert!(matches!(got[1].body, Ok(Response::Status(_))) && got[1].id == 9);
    // Not TLS at all.
    let mut plain = TcpStream::connect(&dev.node.address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = read_until_closed(&mut plain);
    // Truncated frame then hang-up.
    let mut s = raw_tls(&dev);
    s.write_all(&[10, 1, 1]).unwrap();
    s.flush().unwrap();
    drop(s);
    // After all that, the device still answers.
    assert_eq!(status(&mut admin(&dev)).slot, "B");
}

#[test]
fn reboot_gives_a_new_boot_id_and_poweroff_exits() {
    let mut dev = start_device();
    let before = status(&mut admin(&dev)).boot_id;
    assert_eq!(
        admin(&dev).call(Request::Reboot).unwrap(),
        Response::Accepted
    );
    let after = status_after_reboot(&dev, &before).boot_id;
    assert_ne!(before, after);
    assert_eq!(
        admin(&dev).call(Request::Poweroff).unwrap(),
        Response::Accepted
    );
    let start = Instant::now();
    loop {
        if let Some(code) = dev.try_wait() {
            assert!(code.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "device did not power off"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn roles_from_client_certificates_are_enforced() {
    let dev = start_device();
    let (crt, key) = dev.site.issue_client("ro", "reader").unwrap();
    let mut reader = Client::connect_with(
        client_config(&dev.site.ca_cert(), &crt, &key).unwrap(),
        &dev.node,
    )
    .unwrap();
    assert_eq!(status(&mut reader).hostname, "edge-1");
    let err = reader.call(Request::Reboot).unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err:#}");
    let err = reader.call(Request::Poweroff).unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err:#}");
    // Still up, and the same connection still serves reads.
    assert_eq!(status(&mut reader).slot, "B");
    let (crt, key) = dev.site.issue_client("op", "operator").unwrap();
    let mut operator = Client::connect_with(
        client_config(&dev.site.ca_cert(), &crt, &key).unwrap(),
        &dev.node,
    )
    .unwrap();
    assert_eq!(
        operator.call(Request::Poweroff).unwrap(),
        Response::Accepted
    );
}

#[test]
fn pipelined_requests_streams_and_cancel_on_one_connection() {
    let dev = start_device();
    let mut c = admin(&dev);
    // A log stream runs while other requests are answered on the same connection.
    let follow = c
        .send(Request::Logs {
            service: None,
            lines: 5,
            follow: true,
        })
        .unwrap();
    let answers = c
        .pipeline(vec![
            Request::Ping,
            Request::Status,
            Request::Time,
            Request::Ping,
        ])
        .unwrap();
    assert!(matches!(answers[0], Ok(Response::Pong)));
    assert!(matches!(answers[1], Ok(Response::Status(_))));
    assert!(matches!(answers[2], Ok(Response::Time(_))));
    assert!(matches!(answers[3], Ok(Response::Pong)));
    // Cancelling the stream ends it with End, then acknowledges the cancel.
    let cancel = c.send(Request::Cancel { id: follow }).unwrap();
    let mut saw_end = false;
    loop {
        let r = c.receive().unwrap();
        if r.id == follow && r.body == Ok(Response::End) {
            saw_end = true;
        }
        if r.id == cancel {
            assert_eq!(r.body, Ok(Response::Accepted));
            break;
        }
    }
    assert!(saw_end);
    // Cancelling a stream that does not exist is a clear error.
    assert!(c
        .call(Request::Cancel { id: 999 })
        .unwrap_err()
        .to_string()
        .contains("no stream"));
}

#[test]
fn follow_delivers_new_lines() {
    let dev = start_device();
    let mut c = admin(&dev);
    let mut batches = 0;
    let mut other = admin(&dev);
    c.stream(
        Request::Logs {
            service: None,
            lines: 1,
            follow: true,
        },
        |r| {
            let Response::Logs(lines) = r else {
                panic!("{r:?}")
            };
            batches += 1;
            if batches == 1 {
                // Make the device log something: a refused request is logged.
                let _ = other.call(Request::Cancel { id: 77 });
                let (crt, key) = dev.site.issue_client("ro2", "reader").unwrap();
                let mut reader = Client::connect_with(
                    client_config(&dev.site.ca_cert(), &crt, &key).unwrap(),
                    &dev.node,
                )
                .unwrap();
                let _ = reader.call(Request::Reboot);
                return true;
            }
            !lines.iter().any(|l| l.text.contains("refused to a reader"))
        },
    )
    .unwrap();
    assert!(batches >= 2);
}

#[test]
fn config_time_metrics_network_and_not_yet_supported() {
    let dev = start_device();
    let mut c = admin(&dev);
    let Response::Config(text) = c.call(Request::ConfigGet).unwrap() else {
        panic!()
    };
    assert!(text.contains("edge-1"));
    let new = text.replace("edge-1", "edge-2");
    match c
        .call(Request::ConfigApply {
            config: &new,
            mode: outpost::wire::ApplyMode::NoReboot,
            dry_run: true,
        })
        .unwrap()
    {
        Response::ConfigPlan(plan) => {
            assert_eq!(
                plan.changes,
                vec!["hostname: \"edge-1\" -> \"edge-2\"".to_string()]
            );
            assert!(!plan.applied);
        }
        other => panic!("{other:?}"),
    }
    let err = c
        .call(Request::ConfigApply {
            config: "hostname = \"-x\"",
            mode: outpost::wire::ApplyMode::NoReboot,
            dry_run: true,
        })
        .unwrap_err();
    assert!(err.to_string().contains("hostname"), "{err:#}");
    let Response::Time(t) = c.call(Request::Time).unwrap() else {
        panic!()
    };
    assert!(t.unix_ms > 1_700_000_000_000);
    let Response::Metrics(m) = c.call(Request::Metrics).unwrap() else {
        panic!()
    };
    assert!(m.cpus >= 1 && m.mem_total_kib > 0 && m.disk_total_kib > 0);
    assert!(matches!(
        c.call(Request::Network).unwrap(),
        Response::Network(_)
    ));
    // No services configured: an empty list (tests/services_host.rs has more).
    assert_eq!(
        c.call(Request::Services).unwrap(),
        Response::Services(vec![])
    );
    // Without a (simulated) card there are no slots to roll back to.
    let err = c.call(Request::Rollback).unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err:#}");
    // A reader may not even ask to apply a config.
    let (crt, key) = dev.site.issue_client("ro3", "reader").unwrap();
    let mut reader = Client::connect_with(
        client_config(&dev.site.ca_cert(), &crt, &key).unwrap(),
        &dev.node,
    )
    .unwrap();
    let err = reader
        .call(Request::ConfigApply {
            config: &text,
            mode: outpost::wire::ApplyMode::NoReboot,
            dry_run: true,
        })
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"));
}

/// Wait for the device to answer `Status` with a boot id other than `before`.
fn status_after_reboot(dev: &HostDevice, before: &str) -> wire::Status {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "device did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
        let Ok(mut c) = Client::connect_with(dev.tls("admin"), &dev.node) else {
            continue;
        };
        if let Ok(Response::Status(s)) = c.call(Request::Status) {
            if s.boot_id != before {
                return s;
            }
        }
    }
}

#[test]
fn config_apply_modes_no_reboot_try_staged_reboot() {
    use outpost::wire::{ApplyMode, ConfigPlan};
    let dev = start_device();
    let mut c = admin(&dev);
    let apply = |c: &mut Client, text: &str, mode, try_secs| {
        c.call(Request::ConfigApplyOpts {
            config: text,
            mode,
            dry_run: false,
            force: false,
            try_secs,
        })
        .map(|r| match r {
            Response::ConfigPlan(p) => p,
            other => panic!("{other:?}"),
        })
    };
    let get = |c: &mut Client| match c.call(Request::ConfigGet).unwrap() {
        Response::Config(t) => t,
        other => panic!("{other:?}"),
    };
    let base = get(&mut c);
    let named = |n: &str| base.replace("\"edge-1\"", &format!("\"{n}\""));
    assert!(base.contains("mode = \"dhcp\""), "{base}");
    let static_net = |n: &str| {
        named(n).replace(
            "mode = \"dhcp\"",
            "mode = \"static\"\naddress = \"192.0.2.7/24\"",
        )
    };

    // no-reboot: the hostname changes live and is kept on DATA.
    let plan: ConfigPlan = apply(&mut c, &named("edge-live"), ApplyMode::NoReboot, 0).unwrap();
    assert!(plan.applied && !plan.needs_reboot, "{plan:?}");
    assert_eq!(status(&mut c).hostname, "edge-live");
    assert!(get(&mut c).contains("edge-live"));
    // ... but fields read at boot are refused, by name, with the way out.
    let err = apply(&mut c, &static_net("edge-live"), ApplyMode::NoReboot, 0).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("network.address") && msg.contains("--mode reboot"),
        "{msg}"
    );
    assert!(!get(&mut c).contains("static"));

    // try: live at once, reverted when not confirmed in time.
    apply(&mut c, &named("edge-try"), ApplyMode::Try, 2).unwrap();
    assert_eq!(status(&mut c).hostname, "edge-try");
    assert!(get(&mut c).contains("edge-try"));
    let err = apply(&mut c, &named("edge-other"), ApplyMode::NoReboot, 0).unwrap_err();
    assert!(err.to_string().contains("try is pending"), "{err:#}");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(status(&mut c).hostname, "edge-live");
    // ... and kept when confirmed.
    apply(&mut c, &named("edge-kept"), ApplyMode::Try, 30).unwrap();
    assert_eq!(c.call(Request::ConfigConfirm).unwrap(), Response::Accepted);
    let err = c.call(Request::ConfigConfirm).unwrap_err();
    assert!(err.to_string().contains("no config try"), "{err:#}");
    assert!(get(&mut c).contains("edge-kept"));

    // staged: written now, in force after the next boot.
    let plan = apply(&mut c, &static_net("edge-staged"), ApplyMode::Staged, 0).unwrap();
    assert!(plan.applied && plan.needs_reboot, "{plan:?}");
    assert!(!get(&mut c).contains("static"));
    let before = status(&mut c).boot_id;
    assert_eq!(c.call(Request::Reboot).unwrap(), Response::Accepted);
    let s = status_after_reboot(&dev, &before);
    assert_eq!(s.hostname, "edge-staged");
    let mut c = admin(&dev);
    assert!(get(&mut c).contains("192.0.2.7/24"));

    // reboot: written, and the board reboots into it by itself.
    let plan = apply(&mut c, &named("edge-rebooted"), ApplyMode::Reboot, 0).unwrap();
    assert!(plan.applied, "{plan:?}");
    let s = status_after_reboot(&dev, &s.boot_id);
    assert_eq!(s.hostname, "edge-rebooted");
}

/// The test harness itself: a device restarted after its port was taken
/// (another test process may grab a port a killed device gave back) moves to
/// a new port, and the CLI's config follows it.
#[test]
fn a_device_restarted_on_a_taken_port_moves_and_the_cli_follows() {
    let mut dev = start_device();
    dev.write_cli_config();
    let old = dev.node.address.clone();
    dev.kill();
    let squatter = std::net::TcpListener::bind(&old).unwrap();
    dev.spawn();
    assert_ne!(dev.node.address, old);
    let v = dev.cli.json(&["status"]);
    assert_eq!(v["Status"]["hostname"], "edge-1", "{v}");
    drop(squatter);
}

/// `gen revoke` puts an operator on the site's list; once the board holds
/// it (`revocations --install`), that operator is refused from the next
/// handshake — a ticket from before does not get it back in — and its open
/// connection (a log follow, sending nothing) ends at once, while everyone
/// else goes on. The list survives a restart; an older one is refused.
#[test]
fn a_revoked_client_is_refused_and_its_open_connection_closed() {
    let mut dev = start_device();
    dev.write_cli_config();
    dev.site.issue_client("alice", "operator").unwrap();
    let alice = dev.tls("alice");
    let mut open = Client::connect_with(alice.clone(), &dev.node).unwrap();
    status(&mut open); // and alice now holds a ticket to resume with
    open.send(Request::Logs {
        service: None,
        lines: 1,
        follow: true,
    })
    .unwrap();
    assert!(matches!(
        open.receive().unwrap().body,
        Ok(Response::Logs(_))
    ));
    let site = dev.site.dir.to_str().unwrap().to_owned();
    let crl = dev.site.dir.join("crl.pem");
    let install = |dev: &HostDevice, file: &Path| {
        dev.cli
            .outpost(&["revocations", "--install", file.to_str().unwrap()])
    };

    dev.cli
        .ok(&["gen", "revoke", "--site", &site, "--client", "alice"]);
    let first = std::fs::read(&crl).unwrap();
    let out = install(&dev, &crl);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("(1 certificate revoked)"), "{shown}");

    // The follow's connection is closed: its frames stop at once (the
    // board keeps logging; a follow would send them every 500 ms).
    let installed = Instant::now();
    let closed = loop {
        match open.receive() {
            Err(e) => break e,
            Ok(_) => assert!(
                installed.elapsed() < Duration::from_secs(10),
                "still following"
            ),
        }
    };
    assert!(
        installed.elapsed() < Duration::from_secs(5),
        "closed only after {:?}: {closed:#}",
        installed.elapsed()
    );
    let resumed =
        Client::connect_with(alice.clone(), &dev.node).and_then(|mut c| c.call(Request::Status));
    assert!(resumed.is_err(), "resumed with a ticket: {resumed:?}");
    let fresh =
        Client::connect_with(dev.tls("alice"), &dev.node).and_then(|mut c| c.call(Request::Status));
    assert!(fresh.is_err(), "{fresh:?}");
    status(&mut admin(&dev));

    // A newer list (bob too) replaces it; the first is now older: refused.
    dev.site.issue_client("bob", "reader").unwrap();
    dev.cli
        .ok(&["gen", "revoke", "--site", &site, "--client", "bob"]);
    assert!(install(&dev, &crl).status.success());
    let old = dev.cli.path("old-crl.pem");
    std::fs::write(&old, first).unwrap();
    let out = install(&dev, &old);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("older than the one this board holds"),
        "{err}"
    );

    dev.kill();
    dev.spawn();
    let held = dev.cli.json(&["revocations"]);
    assert_eq!(held["Revocations"]["revoked"], 2, "{held}");
    let after =
        Client::connect_with(dev.tls("alice"), &dev.node).and_then(|mut c| c.call(Request::Status));
    assert!(after.is_err(), "{after:?}");
}

/// A stolen board: once its certificate is on the site's list (beside the
/// context's CA), the CLI refuses to talk to it.
#[test]
fn the_cli_refuses_a_board_whose_certificate_the_site_revoked() {
    let dev = start_device();
    dev.write_cli_config();
    dev.cli.ok(&["status"]);
    let site = dev.site.dir.to_str().unwrap().to_owned();
    let own = dev.site.device_dir("edge-1").join("device.crt");
    dev.cli.ok(&[
        "gen",
        "revoke",
        "--site",
        &site,
        "--cert",
        own.to_str().unwrap(),
    ]);
    let out = dev.cli.outpost(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Revoked"), "{err}");
}
