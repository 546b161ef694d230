//! The device's modem driver against the simulated modem over a real
//! pseudo-terminal: the driver opens the slave side with the `serialport`
//! crate as it opens a USB modem's AT port; the simulator answers on the
//! master side, misbehaving as each scenario asks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost::config::network::{ModemConfig, ModemFamily};
use outpost::device::modem::at::Final;
use outpost::device::modem::{Modem, ModemError, ModemStatus};
use outpost::host::modemsim::{Scenario, Sim, Simulator};

/// The simulator on a pty's master, the driver on its slave (opened by
/// path with `serialport`, 100 ms read timeout).
struct Rig {
    modem: Modem<Box<dyn serialport::SerialPort>>,
    sim: Arc<Mutex<Simulator>>,
    _slave: OwnedFd,
}

fn rig(scenario: Scenario) -> Rig {
    let pty = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(&pty.slave).unwrap();
    let sim = Arc::new(Mutex::new(Simulator::new(scenario)));
    let shared = sim.clone();
    let mut master = File::from(pty.master);
    std::thread::spawn(move || {
        // Serve one command at a time so the test can read the log.
        let mut s = Simulator::new(shared.lock().unwrap().scenario.clone());
        let _ = serve_shared(&mut s, &mut master, &shared);
    });
    let port = serialport::new(path.to_str().unwrap(), 115_200)
        .timeout(Duration::from_millis(100))
        .open()
        .unwrap();
    let start = Instant::now();
    let clock = Box::new(move || u64::try_from(start.elapsed().as_millis()).unwrap());
    Rig {
        modem: Modem::new(port, clock),
        sim,
        _slave: pty.slave,
    }
}

/// `Simulator::serve`, copying the log out after every chunk.
fn serve_shared(
    s: &mut Simulator,
    io: &mut File,
    shared: &Arc<Mutex<Simulator>>,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = match io.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\r' {
                let cmd = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                let reply = s.respond(&cmd);
                // The log first: once the reply is out, the driver may
                // return and the test read the log.
                {
                    let mut sh = shared.lock().unwrap();
                    sh.log = s.log.clone();
                    sh.data = s.data;
                }
                io.write_all(&reply)?;
            } else if b != b'\n' {
                line.push(b);
            }
        }
    }
}

fn config(family: ModemFamily) -> ModemConfig {
    ModemConfig {
        port: "/dev/ttyUSB2".into(),
        apn: "internet".into(),
        pin: None,
        family,
        register_secs: 5,
        reboot_after: 0,
    }
}

#[test]
fn happy_dial_with_garbage_and_urcs_in_between() {
    let mut r = rig(Scenario {
        register_after: 2,
        garbage: true,
        ..Scenario::default()
    });
    let mut status = ModemStatus::default();
    r.modem
        .dial(&config(ModemFamily::Generic), &mut status)
        .unwrap();
    assert_eq!(
        status,
        ModemStatus {
            sim: "READY".into(),
            registration: "home".into(),
            operator: "Outpost Sim".into(),
            signal_dbm: Some(-73),
            rsrp_dbm: Some(-91),
            data: true,
        }
    );
    assert!(
        r.modem.garbage() > 0,
        "garbage lines were dropped, not parsed"
    );
    assert!(r.modem.urcs.iter().any(|u| u.starts_with("+QIND:")));
    let sim = r.sim.lock().unwrap();
    assert!(sim.data);
    let log = sim.log.join("|");
    assert!(
        log.contains("AT+CGDCONT=1,\"IP\",\"internet\"|AT+CGATT=1"),
        "{log}"
    );
    assert_eq!(sim.log.iter().filter(|c| *c == "AT+CEREG?").count(), 3);
    assert!(log.ends_with("AT+CGACT=1,1"), "{log}");
}

#[test]
fn families_start_data_their_way() {
    for (family, want) in [
        (ModemFamily::Quectel, "AT+QNETDEVCTL=1,1,1"),
        (ModemFamily::Huawei, "AT^NDISDUP=1,1,\"internet\""),
    ] {
        let mut r = rig(Scenario::default());
        let mut status = ModemStatus::default();
        r.modem.dial(&config(family), &mut status).unwrap();
        assert!(status.data);
        assert_eq!(r.sim.lock().unwrap().log.last().unwrap(), want);
    }
}

#[test]
fn sim_failures_are_named() {
    let mut status = ModemStatus::default();
    let mut r = rig(Scenario {
        sim: Sim::Missing,
        ..Scenario::default()
    });
    let e = r
        .modem
        .dial(&config(ModemFamily::Generic), &mut status)
        .unwrap_err();
    assert!(matches!(e, ModemError::NoSim(ref c) if c == "10"), "{e}");

    let locked = Scenario {
        sim: Sim::Pin("4321".into()),
        ..Scenario::default()
    };
    let mut r = rig(locked.clone());
    let e = r
        .modem
        .dial(&config(ModemFamily::Generic), &mut status)
        .unwrap_err();
    assert!(matches!(e, ModemError::PinRequired), "{e}");

    let mut wrong = config(ModemFamily::Generic);
    wrong.pin = Some("0000".into());
    let mut r = rig(locked.clone());
    let e = r.modem.dial(&wrong, &mut status).unwrap_err();
    assert!(matches!(e, ModemError::PinRejected), "{e}");

    let mut right = config(ModemFamily::Generic);
    right.pin = Some("4321".into());
    let mut r = rig(locked);
    r.modem.dial(&right, &mut status).unwrap();
    assert!(status.data);

    let mut r = rig(Scenario {
        sim: Sim::Puk,
        ..Scenario::default()
    });
    let e = r
        .modem
        .dial(&config(ModemFamily::Generic), &mut status)
        .unwrap_err();
    assert!(matches!(e, ModemError::PukRequired), "{e}");
}

#[test]
fn registration_failures() {
    let mut status = ModemStatus::default();
    let mut short = config(ModemFamily::Generic);
    short.register_secs = 2;
    let mut r = rig(Scenario {
        register_after: u32::MAX,
        ..Scenario::default()
    });
    let start = Instant::now();
    let e = r.modem.dial(&short, &mut status).unwrap_err();
    assert!(
        matches!(
            e,
            ModemError::NotRegistered {
                state: "searching",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(status.registration, "not registered");
    assert!(!status.data);

    let mut r = rig(Scenario {
        denied: true,
        ..Scenario::default()
    });
    let e = r.modem.dial(&short, &mut status).unwrap_err();
    assert!(matches!(e, ModemError::Denied), "{e}");

    // A modem without +CEREG answers ERROR; +CREG is asked instead.
    let mut r = rig(Scenario {
        no_cereg: true,
        ..Scenario::default()
    });
    r.modem.dial(&short, &mut status).unwrap();
    assert!(r.sim.lock().unwrap().log.iter().any(|c| c == "AT+CREG?"));
}

#[test]
fn cme_errors_and_a_silent_port() {
    let mut status = ModemStatus::default();
    let mut r = rig(Scenario {
        cme: vec![("AT+CGATT".into(), "30".into())],
        ..Scenario::default()
    });
    let e = r
        .modem
        .dial(&config(ModemFamily::Generic), &mut status)
        .unwrap_err();
    assert!(
        matches!(e, ModemError::Refused { ref command, result: Final::Cme(ref c) } if command == "AT+CGATT=1" && c == "30"),
        "{e}"
    );

    // Answers three commands, then nothing: the fourth times out by name.
    let mut r = rig(Scenario {
        stop_after: Some(3),
        ..Scenario::default()
    });
    let start = Instant::now();
    let e = r
        .modem
        .dial(&config(ModemFamily::Generic), &mut status)
        .unwrap_err();
    assert!(
        e.to_string().contains("AT+CPIN?") && e.to_string().contains("no final result"),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// The modem thread of a link, on the pty: a SIM that is missing fails the
/// dial; with `reboot_after = 1` the watchdog's first step is the reboot,
/// and every step is in the link's events (what the API shows).
#[test]
fn the_watchdog_records_its_steps_and_reboots() {
    use outpost::config::network::LinkConfig;
    use outpost::device::net::links::LinkRuntime;
    use std::sync::atomic::{AtomicBool, Ordering};

    let pty = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(&pty.slave).unwrap();
    let mut master = File::from(pty.master);
    std::thread::spawn(move || {
        let mut sim = Simulator::new(Scenario {
            sim: Sim::Missing,
            ..Scenario::default()
        });
        let _ = sim.serve(&mut master);
    });
    let mut config = LinkConfig::new("lte", "wwan0");
    config.modem = Some(path.to_str().unwrap().into());
    config.apn = "internet".into();
    config.reboot_after = 1;
    let link = Arc::new(LinkRuntime::new(config.clone()));
    let rebooted = Arc::new(AtomicBool::new(false));
    let flag = rebooted.clone();
    outpost::device::modem::task::start(
        link.clone(),
        config.modem().unwrap(),
        None,
        Box::new(move || flag.store(true, Ordering::SeqCst)),
    );
    let start = Instant::now();
    while !rebooted.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(10), "no reboot asked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = link.state();
    let events: Vec<&String> = st.events.iter().collect();
    assert!(events[0].contains("dial failed: no SIM card"), "{events:?}");
    assert!(
        events[1].contains("watchdog: failure 1 -> reboot"),
        "{events:?}"
    );
    let (state, _) = st.modem.as_ref().unwrap();
    assert_eq!(state, "recovering");
    drop(pty.slave);
}
