//! An LTE modem in QEMU: `-device qemu-xhci` with `usb-net` standing in for
//! the modem's ECM network function and `usb-serial` (an FTDI adapter,
//! ftdi_sio → /dev/ttyUSB0) for its AT port, wired to the modem simulator
//! on a 127.0.0.1 socket. The board's only configured link is the modem:
//! it dials (SIM, APN, attach, registration, data session), gets an address
//! by DHCP on the USB interface, and the API answers through that link.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{skip_qemu, Cli, QemuGuard};
use outpost::config::network::{LinkConfig, ModemFamily};
use outpost::host::context::CliConfig;
use outpost::host::modemsim::{Scenario, Simulator};
use outpost::host::qemu::free_port;

const HOST: &str = "edge-lte";
const MODEM_MAC: &str = "52:54:00:00:00:b2";

/// The repository's boards with USB host, USB network and FTDI serial
/// modules added to qemu-virt, in the CLI's own boards dir.
fn boards_with_usb(env: &Cli) {
    common::boards_with_qemu_virt_edits(
        env,
        &[(
            "modules = [\"virtio_pci\", \"virtio_blk\", \"virtio_net\", \"ext4\", \"i6300esb\"]",
            "modules = [\"virtio_pci\", \"virtio_blk\", \"virtio_net\", \"ext4\", \"i6300esb\", \
             \"xhci_pci\", \"cdc_ether\", \"rndis_host\", \"ftdi_sio\"]",
        )],
    );
}

#[test]
fn the_board_dials_its_modem_and_answers_over_it() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    boards_with_usb(&env);
    let mut lte = LinkConfig::new("lte", "");
    lte.mac = Some(MODEM_MAC.into());
    lte.modem = Some("/dev/ttyUSB0".into());
    lte.apn = "internet".into();
    lte.modem_family = ModemFamily::Generic;
    lte.register_secs = 30;
    let img = env.image_with_links("lte", HOST, vec![lte]);

    // The simulator: QEMU connects its chardev here at start.
    let modem = TcpListener::bind("127.0.0.1:0").unwrap();
    let modem_port = modem.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in modem.incoming().flatten() {
            let mut sim = Simulator::new(Scenario {
                register_after: 2,
                garbage: true,
                ..Scenario::default()
            });
            let _ = sim.serve(&mut s);
        }
    });

    let api_port = free_port().unwrap();
    let extra = [
        "-device".to_owned(),
        "qemu-xhci,id=xhci".into(),
        "-netdev".into(),
        format!("user,id=lte,restrict=on,hostfwd=tcp:127.0.0.1:{api_port}-:50000"),
        "-device".into(),
        format!("usb-net,netdev=lte,mac={MODEM_MAC},bus=xhci.0"),
        "-chardev".into(),
        format!("socket,id=at,host=127.0.0.1,port={modem_port}"),
        "-device".into(),
        "usb-serial,chardev=at,bus=xhci.0".into(),
    ];
    let mut args = vec![
        "qemu".to_owned(),
        "up".into(),
        img.to_str().unwrap().into(),
        "--name".into(),
        "lte".into(),
        "--no-wait".into(),
    ];
    args.extend(extra.iter().map(|a| format!("--qemu-arg={a}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
    let _guard = QemuGuard::new(&env, "lte");

    let cli_toml = env.path("cli.toml");
    let mut cli = CliConfig::load(&cli_toml).unwrap();
    let ctx = cli.context_mut(None).unwrap();
    ctx.nodes.get_mut("lte").unwrap().address = format!("127.0.0.1:{api_port}");
    cli.save(&cli_toml).unwrap();

    let start = Instant::now();
    while !env.outpost(&["status"]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no API over the modem link:\n{}",
            env.console_tail("lte", 60)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("API over the modem link after {:?}", start.elapsed());

    // The modem dialled: the board reports it connected.
    let deadline = Instant::now();
    let link = loop {
        let v = env.json(&["network"]);
        let l = v["Links"][0].clone();
        if l["modem"]["state"] == "connected" {
            break l;
        }
        assert!(
            deadline.elapsed() < Duration::from_secs(120),
            "modem not connected: {l}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(link["modem"]["operator"], "Outpost Sim", "{link}");
    assert_eq!(link["modem"]["registration"], "home", "{link}");
    assert_eq!(link["modem"]["signal_dbm"], -73, "{link}");
    assert!(
        link["address"]
            .as_str()
            .unwrap()
            .starts_with("10.0.2.15/24"),
        "{link}"
    );
    assert!(link["events"].to_string().contains("connected"), "{link}");
    let text = env.ok(&["network"]);
    eprintln!("{text}");
    assert!(
        text.contains("modem: connected; SIM READY, home on Outpost Sim"),
        "{text}"
    );
}
