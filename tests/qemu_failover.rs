//! Failover in QEMU: a virt board with two NICs on their own slirp
//! networks (both `restrict=on`, both 10.0.2.0/24, each forwarding the API
//! from its own host port). Each link probes 10.0.2.100 (port 7 or 8), a `guestfwd` to
//! a listener of this test on 127.0.0.1, so a probe succeeds exactly while
//! its NIC passes packets. The preferred link is cut with the QEMU monitor
//! (`set_link wan off`): the board moves its routes to the other link,
//! the CLI (a node with both endpoints) reconnects there and resumes its TLS
//! session; `set_link wan on` moves the routes back.
//!
//! Both slirps use one subnet on purpose: the answer to a management
//! connection (from 10.0.2.2) leaves by the lowest-metric subnet route, so
//! the API over the backup link answers only once the board has moved its
//! routes — the test fails without failover.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{hmp, skip_qemu, Cli, QemuGuard};
use outpost::config::network::LinkConfig;
use outpost::host::client::{client_config, Client, ENDPOINT_ATTEMPT};
use outpost::host::context::{CliConfig, Node};
use outpost::host::qemu::free_port;
use outpost::wire::{Request, Response};

const HOST: &str = "edge-fo";
const WAN_MAC: &str = "52:54:00:00:00:a1";
const LTE_MAC: &str = "52:54:00:00:00:a2";
/// A link with carrier whose probe target never answers (no guestfwd for
/// its port; `restrict=on` drops the rest): the best priority, never used.
const DEAD_MAC: &str = "52:54:00:00:00:a3";

fn link(name: &str, mac: &str, priority: u32, guest_port: u16) -> LinkConfig {
    let mut l = LinkConfig::new(name, "");
    l.mac = Some(mac.into());
    l.priority = priority;
    // Static: QEMU's DHCP under `restrict=on` offers no router, and the
    // default routes are what must move.
    l.mode = outpost::config::NetworkMode::Static;
    l.address = Some("10.0.2.15/24".into());
    l.gateway = Some("10.0.2.2".into());
    l.dns = vec![format!("192.0.2.{guest_port}")];
    l.probe = Some(format!("10.0.2.100:{guest_port}"));
    l.probe_interval_secs = 1;
    l.probe_timeout_ms = 500;
    l.probe_failures = 2;
    l
}

/// `-netdev` and `-device` for one NIC with its API forward and probe target.
/// (QEMU names the guestfwd's chardev after its guest port: one per NIC.)
fn nic(id: &str, mac: &str, api_port: u16, guest_port: u16, probe_port: u16) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "user,id={id},restrict=on,hostfwd=tcp:127.0.0.1:{api_port}-:50000,\
             guestfwd=tcp:10.0.2.100:{guest_port}-tcp:127.0.0.1:{probe_port}"
        ),
        "-device".into(),
        format!("virtio-net-pci,netdev={id},mac={mac},romfile="),
    ]
}

fn routes(env: &Cli) -> Vec<String> {
    try_routes(env).expect("outpost network")
}

/// The routes, or `None` if the CLI could not get them (while routes move,
/// a connection can be answered out of the other link and fail).
fn try_routes(env: &Cli) -> Option<Vec<String>> {
    let out = env.outpost(&["-o", "json", "network"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["Network"]["routes"]
        .as_array()?
        .iter()
        .map(|r| r.as_str().map(str::to_owned))
        .collect()
}

/// The interface name of the NIC with `mac` ("eth1 up 52:54:… mtu 1500").
fn iface_of(env: &Cli, mac: &str) -> String {
    let v = env.json(&["network"]);
    let links = v["Network"]["links"].as_array().unwrap();
    let line = links
        .iter()
        .map(|l| l.as_str().unwrap())
        .find(|l| l.contains(mac))
        .unwrap_or_else(|| panic!("no link with {mac}: {links:?}"));
    line.split_whitespace().next().unwrap().to_owned()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn the_api_stays_reachable_when_the_preferred_link_fails() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let img = env.image_with_links(
        "fo",
        HOST,
        vec![
            link("wan", WAN_MAC, 10, 7),
            link("lte", LTE_MAC, 20, 8),
            link("dead", DEAD_MAC, 5, 9),
        ],
    );

    // The probe target: QEMU connects each guestfwd here at start.
    let probe_target = TcpListener::bind("127.0.0.1:0").unwrap();
    let probe_port = probe_target.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in probe_target.incoming().flatten() {
            held.push(s);
        }
    });
    let (wan_port, lte_port) = (free_port().unwrap(), free_port().unwrap());
    let monitor = env.path("monitor.sock");
    let mut args = vec![
        "qemu".to_owned(),
        "up".into(),
        img.to_str().unwrap().into(),
        "--name".into(),
        "fo".into(),
        "--no-wait".into(),
    ];
    let mut extra = nic("wan", WAN_MAC, wan_port, 7, probe_port);
    extra.extend(nic("lte", LTE_MAC, lte_port, 8, probe_port));
    extra.extend([
        "-netdev".into(),
        "user,id=dead,restrict=on".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=dead,mac={DEAD_MAC},romfile="),
    ]);
    extra.extend([
        "-monitor".into(),
        format!("unix:{},server=on,wait=off", monitor.display()),
    ]);
    for a in extra {
        args.push(format!("--qemu-arg={a}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
    let _guard = QemuGuard::new(&env, "fo");

    // The node: the wan forward first, then the lte one.
    let both = format!("127.0.0.1:{wan_port},127.0.0.1:{lte_port}");
    let cli_toml = env.path("cli.toml");
    let mut cli = CliConfig::load(&cli_toml).unwrap();
    let ctx = cli.context_mut(None).unwrap();
    ctx.nodes.get_mut("fo").unwrap().address = both.clone();
    let ctx = ctx.clone();
    cli.save(&cli_toml).unwrap();
    let up = wait_for("the API answers", Duration::from_secs(240), || {
        env.outpost(&["status"]).status.success()
    });
    eprintln!("API up after {up:?}");

    let wan = iface_of(&env, WAN_MAC);
    let lte = iface_of(&env, LTE_MAC);
    let wan_default = |metric: u32| format!("default via 10.0.2.2 dev {wan} metric {metric}");
    let lte_default = format!("default via 10.0.2.2 dev {lte} metric 20");
    // The dead link's probe fails with carrier up: its routes sit at
    // 10005, behind wan's 10 (the API answering at all shows it: its
    // subnet route would otherwise take the answers).
    let dead = iface_of(&env, DEAD_MAC);
    let dead_default = format!("default via 10.0.2.2 dev {dead} metric 10005");
    let mut r = Vec::new();
    wait_for("the dead link demoted", Duration::from_secs(30), || {
        r = try_routes(&env).unwrap_or_default();
        r.contains(&dead_default)
    });
    assert!(
        r.contains(&wan_default(10)) && r.contains(&lte_default),
        "{r:?}"
    );
    let links = env.json(&["network"])["Links"].clone();
    assert_eq!(links[2]["name"], "dead");
    assert_eq!(
        (&links[2]["healthy"], &links[2]["carrier"]),
        (&serde_json::json!(false), &serde_json::json!(true)),
        "{links}"
    );
    assert!(links[2]["probe_misses"].as_u64().unwrap() >= 2, "{links}");
    assert!(
        r.contains(&format!("10.0.2.0/24 dev {wan} metric 10")),
        "{r:?}"
    );

    // One TLS config for the whole run, as the CLI keeps for one command.
    let tls = client_config(&ctx.ca, &ctx.cert, &ctx.key).unwrap();
    let node = Node {
        address: both.clone(),
        server_name: HOST.into(),
    };
    let lte_only = Node {
        address: format!("127.0.0.1:{lte_port}"),
        server_name: HOST.into(),
    };
    let status = |c: &mut Client| matches!(c.call(Request::Status), Ok(Response::Status(_)));
    let mut first = Client::connect_with(tls.clone(), &node).unwrap();
    assert!(status(&mut first));
    drop(first);

    // Outpost's own traffic on the idle backup link (probes, ARP): the
    // management connections above all went over wan.
    let lte_bytes = |env: &Cli| {
        let v = env.json(&["network"]);
        let l = &v["Links"][1];
        l["rx_bytes"].as_u64().unwrap() + l["tx_bytes"].as_u64().unwrap()
    };
    let (b0, t0) = (lte_bytes(&env), Instant::now());
    std::thread::sleep(Duration::from_secs(30));
    let (b1, window) = (lte_bytes(&env), t0.elapsed());
    let per_sec = (b1 - b0) as f64 / window.as_secs_f64();
    eprintln!(
        "BENCH idle: lte carried {} B in {:.1} s with a probe every 1 s: {per_sec:.0} B/s, {:.0} B per probe",
        b1 - b0,
        window.as_secs_f64(),
        per_sec
    );
    assert!(b1 > b0, "the probes cost bytes");

    // Cut the preferred link (times count from before the monitor command).
    let cut = Instant::now();
    let out = hmp(&monitor, "set_link wan off");
    assert!(!out.contains("not found"), "{out}");
    let mut resumed = false;
    wait_for(
        "the API over the other link",
        Duration::from_secs(60),
        || match Client::connect_with(tls.clone(), &node) {
            Ok(mut c) => {
                resumed = c.resumed();
                status(&mut c)
            }
            Err(_) => false,
        },
    );
    let reachable = cut.elapsed();
    eprintln!(
        "BENCH failover: link cut -> API answering again: {} ms",
        reachable.as_millis()
    );
    assert!(resumed, "the reconnect resumed the TLS session");
    assert!(reachable < Duration::from_secs(20), "{reachable:?}");
    // The backup endpoint alone answers (it would not with the old routes).
    let mut c = Client::connect_with(tls.clone(), &lte_only).unwrap();
    assert!(status(&mut c));
    drop(c);
    let r = routes(&env);
    assert!(
        r.contains(&wan_default(10_010)) && r.contains(&lte_default),
        "{r:?}"
    );
    let logs = env.ok(&["logs", "--lines", "300"]);
    assert!(logs.contains("link wan is down"), "{logs}");
    // The configured links as the API shows them.
    let links = env.json(&["network"])["Links"].clone();
    let wan_info = &links[0];
    assert_eq!(wan_info["name"], "wan");
    assert_eq!(wan_info["healthy"], false, "{links}");
    assert_eq!(wan_info["carrier"], false, "{links}");
    assert_eq!(wan_info["metric"], 10_010);
    assert_eq!(wan_info["downs"], 1);
    assert!(wan_info["events"].to_string().contains("down"), "{links}");
    assert_eq!(links[1]["healthy"], true, "{links}");
    assert_eq!(links[1]["address"], "10.0.2.15/24 via 10.0.2.2");
    assert_eq!(links[1]["dns"][0], "192.0.2.8");
    let text = env.ok(&["network"]);
    assert!(
        text.contains("CONFIGURED LINKS") && text.contains("wan (") && text.contains("DOWN"),
        "{text}"
    );

    // Mend it: the API answers over wan again, the routes are back.
    let mended = Instant::now();
    hmp(&monitor, "set_link wan on");
    let wan_endpoint = format!("127.0.0.1:{wan_port}");
    wait_for("the API over wan again", Duration::from_secs(30), || {
        Client::connect_endpoint(tls.clone(), &wan_endpoint, HOST, ENDPOINT_ATTEMPT)
            .is_ok_and(|mut c| status(&mut c))
    });
    let back = mended.elapsed();
    eprintln!(
        "BENCH failback: link mended -> API answering over wan again: {} ms",
        back.as_millis()
    );
    let r = routes(&env);
    assert!(r.contains(&wan_default(10)), "{r:?}");
    let logs = env.ok(&["logs", "--lines", "100"]);
    assert!(logs.contains("link wan is healthy again"), "{logs}");

    let down = env.ok(&["qemu", "down", "--name", "fo"]);
    assert!(down.contains("stopped"), "{down}");
}
