//! System test: the management API over a serial line into a real image in
//! QEMU. The board's second UART (a 16550 from `-device pci-serial`, /dev/ttyS0
//! in the guest, `outpost.serial=/dev/ttyS0` on its command line) is wired to a
//! Unix socket on the host. The CLI talks to it directly (`--serial SOCK`) and
//! through a pseudo-terminal (`--serial /dev/pts/N`, the serialport path), as
//! an operator with a USB serial adapter would. Needs `scripts/setup` and
//! `scripts/build-init`; OUTPOST_SKIP_QEMU=1 leaves it out explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{skip_qemu, Cli, QemuGuard};
use outpost::host::client::{client_config, Client};
use outpost::host::pki::Site;
use outpost::host::serial::SerialTransport;
use outpost::wire::{Request, Response};
use serialport::{SerialPort as _, TTYPort};

/// A pseudo-terminal whose other end is QEMU's UART socket: what a USB serial
/// adapter is to an operator. Counts the bytes that cross it.
struct PtyBridge {
    tty: String,
    bytes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    _slave: TTYPort,
}

impl PtyBridge {
    fn new(sock: &Path) -> Self {
        let (master, slave) = TTYPort::pair().unwrap();
        let sock = UnixStream::connect(sock).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let bytes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (mut from, mut to) = (
                sock.try_clone().unwrap(),
                master.try_clone_native().unwrap(),
            );
            let (bytes, stop) = (bytes.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        bytes.fetch_add(n, Ordering::SeqCst);
                        let _ = to.write_all(&buf[..n]);
                    }
                }
            });
        }
        {
            let (mut from, mut to) = (master, sock);
            from.set_timeout(Duration::from_millis(20)).unwrap();
            let (bytes, stop) = (bytes.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = from.read(&mut buf) {
                        bytes.fetch_add(n, Ordering::SeqCst);
                        let _ = to.write_all(&buf[..n]);
                    }
                }
            });
        }
        Self {
            tty: slave.name().unwrap(),
            bytes,
            stop,
            _slave: slave,
        }
    }
}

impl Drop for PtyBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Let both pumps see it and the socket close before the next user.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn api_over_the_second_uart_in_qemu() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let img = env.qemu_image("sertest", "edge-ser");
    let site = env.path("site");

    let sock = env.path("mgmt.sock");
    let chardev = format!(
        "--qemu-arg=socket,id=mgmt,path={},server=on,wait=off",
        sock.display()
    );
    let up = env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "ser",
        "--timeout",
        "240",
        "--qemu-arg=-chardev",
        &chardev,
        "--qemu-arg=-device",
        "--qemu-arg=pci-serial,chardev=mgmt",
    ]);
    eprintln!("qemu up: {up}");
    let _guard = QemuGuard::new(&env, "ser");
    let sock_s = sock.to_str().unwrap();

    // Straight into QEMU's socket: status names our device and slot A (the
    // server name comes from the current node, which `qemu up` set).
    let s = env.json(&["--serial", sock_s, "status"])["Status"].clone();
    assert_eq!(s["hostname"], "edge-ser");
    assert_eq!(s["slot"], "A");
    let logs = env.ok(&["--serial", sock_s, "logs", "--lines", "200"]);
    assert!(logs.contains("serial API on /dev/ttyS0"), "{logs}");
    // dmesg: a large answer, many link frames through the 16550.
    let dmesg = env.ok(&["--serial", sock_s, "dmesg"]);
    assert!(dmesg.contains("outpost.serial=/dev/ttyS0"), "{dmesg}");
    assert!(dmesg.len() > 4 * outpost::wire::serial::MAX_LINK_DATA);

    // Through a pseudo-terminal, as with a USB serial adapter.
    {
        let bridge = PtyBridge::new(&sock);
        let start = bridge.bytes.load(Ordering::SeqCst);
        let s = env.json(&["--serial", &bridge.tty, "status"])["Status"].clone();
        assert_eq!(s["hostname"], "edge-ser");
        assert_eq!(s["slot"], "A");
        eprintln!(
            "`outpost --serial {} status`: {} bytes on the UART, goodbye included",
            bridge.tty,
            bridge.bytes.load(Ordering::SeqCst) - start
        );

        // Bytes on the line: full handshake + status, then a resumed one.
        let admin = Site::open(&site).unwrap();
        let (crt, key) = admin.client_paths("admin");
        let tls = client_config(&site.join("ca.crt"), &crt, &key).unwrap();
        for expect_resumed in [false, true] {
            // The previous session's goodbye is not part of this one.
            std::thread::sleep(Duration::from_millis(300));
            let start = bridge.bytes.load(Ordering::SeqCst);
            let line = SerialTransport::open(Path::new(&bridge.tty)).unwrap();
            let mut client = Client::over(tls.clone(), "edge-ser", Box::new(line)).unwrap();
            assert_eq!(client.resumed(), expect_resumed);
            match client.call(Request::Status).unwrap() {
                Response::Status(s) => assert_eq!(s.hostname, "edge-ser"),
                other => panic!("{other:?}"),
            }
            let used = bridge.bytes.load(Ordering::SeqCst) - start;
            let before = bridge.bytes.load(Ordering::SeqCst);
            client.call(Request::Status).unwrap();
            let warm = bridge.bytes.load(Ordering::SeqCst) - before;
            eprintln!(
                "QEMU UART, {} handshake + status: {used} bytes (a warm status: {warm})",
                if expect_resumed { "resumed" } else { "full" },
            );
        }
    }

    // TCP still serves alongside.
    let s = env.json(&["status"])["Status"].clone();
    assert_eq!(s["hostname"], "edge-ser");

    let down = env.ok(&["qemu", "down", "--name", "ser"]);
    assert!(down.contains("powered off"), "{down}");
}
