//! System test: build a real image (Debian's kernel, outpost-init for aarch64),
//! boot it in QEMU through Debian's U-Boot, and manage it with the CLI over
//! mutual TLS. Needs `scripts/setup` and `scripts/build-init` (the test
//! command runs both); set OUTPOST_SKIP_QEMU=1 to leave it out explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{skip_qemu, Cli, QemuGuard};
use outpost::host::client::{client_config, Client};
use outpost::host::context::Node;
use outpost::host::pki::Site;
use outpost::wire::{self, Request, Response};

fn status_of(env: &Cli) -> serde_json::Value {
    env.json(&["status"])["Status"].clone()
}

#[test]
fn image_boots_in_qemu_and_is_managed_over_mutual_tls() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let img = env.qemu_image("systest", "edge-sys");
    let site = env.path("site");

    let up = env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "sys",
        "--timeout",
        "240",
    ]);
    eprintln!("qemu up: {up}");
    let _guard = QemuGuard::new(&env, "sys");

    // status over mutual TLS: slot A, our hostname, a DHCP address.
    let s = status_of(&env);
    assert_eq!(s["hostname"], "edge-sys");
    assert_eq!(s["slot"], "A");
    assert!(s["addresses"].to_string().contains("10.0.2.15"), "{s}");
    let boot_id = s["boot_id"].as_str().unwrap().to_owned();
    assert_eq!(boot_id.len(), 36);

    // logs and dmesg come from the device.
    let logs = env.ok(&["logs", "--lines", "200"]);
    assert!(logs.contains("API listening"), "{logs}");
    let dmesg = env.ok(&["dmesg"]);
    assert!(
        dmesg.contains("outpost.slot=A"),
        "kernel command line should be in dmesg"
    );

    // A client with a certificate from another CA is refused.
    let other = Site::create(&env.path("other"), "other").unwrap();
    let (crt, key) = other.client_paths("admin");
    let node = Node {
        address: up["address"].as_str().unwrap().to_owned(),
        server_name: "edge-sys".into(),
    };
    let foreign = client_config(&site.join("ca.crt"), &crt, &key).unwrap();
    assert!(Client::connect_with(foreign, &node)
        .and_then(|mut c| c.call(Request::Status))
        .is_err());

    // A client of this site whose certificate the site revoked is refused
    // once the board holds the list (webpki's CRL check on aarch64).
    let admin = Site::open(&site).unwrap();
    let (crt, key) = admin.issue_client("alice", "reader").unwrap();
    let alice = client_config(&site.join("ca.crt"), &crt, &key).unwrap();
    let status = |c| Client::connect_with(c, &node).and_then(|mut c| c.call(Request::Status));
    assert!(status(alice.clone()).is_ok());
    let site_arg = site.to_str().unwrap();
    env.ok(&["gen", "revoke", "--site", site_arg, "--client", "alice"]);
    let crl = site.join("crl.pem");
    let held = env.ok(&["revocations", "--install", crl.to_str().unwrap()]);
    assert!(held.contains("(1 certificate revoked)"), "{held}");
    assert!(status(alice).is_err(), "a revoked client was served");

    // Garbage frames close that connection; the device keeps serving.
    let (crt, key) = admin.client_paths("admin");
    let config = client_config(&site.join("ca.crt"), &crt, &key).unwrap();
    {
        use std::io::{Read, Write};
        let tcp = std::net::TcpStream::connect(&node.address).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn =
            rustls::ClientConnection::new(config.clone(), "edge-sys".try_into().unwrap()).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(&[0xff, 0xff, 0xff, 0x7f]).unwrap();
        s.flush().unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "oversized frame must close the connection"
        );
    }
    match Client::connect_with(config, &node)
        .unwrap()
        .call(Request::Version {
            protocol: wire::PROTOCOL_VERSION,
        })
        .unwrap()
    {
        Response::Version(v) => assert_eq!(v.board, "qemu-virt"),
        other => panic!("{other:?}"),
    }

    // Config apply on a real board: a config that would move the board off
    // the address it is managed at is refused by name; a try applies the
    // hostname and watchdog live, and once confirmed it survives a reboot.
    let current = env.ok(&["config", "get"]);
    let moved = current.replace(
        "mode = \"dhcp\"",
        "mode = \"static\"\naddress = \"192.0.2.9/24\"",
    );
    let moved_file = env.path("moved.toml");
    std::fs::write(&moved_file, &moved).unwrap();
    let out = env.outpost(&[
        "config",
        "apply",
        moved_file.to_str().unwrap(),
        "--mode",
        "reboot",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a cut-off config was applied");
    assert!(
        err.contains("network.address") && err.contains("10.0.2.15") && err.contains("--force"),
        "{err}"
    );
    let renamed = current.replace("\"edge-sys\"", "\"edge-tried\"");
    let tried = if renamed.contains("[watchdog]") {
        renamed.replace("[watchdog]", "[watchdog]\ntimeout_secs = 21")
    } else {
        format!("{renamed}\n[watchdog]\ntimeout_secs = 21\n")
    };
    let tried_file = env.path("tried.toml");
    std::fs::write(&tried_file, &tried).unwrap();
    let out = env.ok(&[
        "config",
        "apply",
        tried_file.to_str().unwrap(),
        "--mode",
        "try",
        "--timeout",
        "600",
    ]);
    assert!(out.contains("reverts in 600 s"), "{out}");
    assert_eq!(status_of(&env)["hostname"], "edge-tried");
    env.ok(&["config", "confirm"]);
    let logs = env.ok(&["logs", "--lines", "50"]);
    assert!(logs.contains("watchdog timeout set to 21 s"), "{logs}");
    assert!(logs.contains("config try confirmed"), "{logs}");

    // reboot: the device comes back with a new boot id.
    env.ok(&["reboot"]);
    let after = env.status_after_reboot(&boot_id, Duration::from_secs(240));
    let new_id = after["boot_id"].as_str().unwrap();
    assert_ne!(new_id, boot_id);
    assert_eq!(after["hostname"], "edge-tried");
    assert_eq!(after["hostname"], "edge-tried");

    // poweroff ends QEMU by itself (clean shutdown, not a kill).
    let down = env.ok(&["qemu", "down", "--name", "sys"]);
    assert!(down.contains("powered off"), "{down}");
}
