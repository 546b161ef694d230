//! `outpost support`: one archive with what an engineer needs after a board
//! misbehaved, from the real outpost-init in host mode — after a reboot, so
//! the previous boot's log is in it — read back with the system's `tar`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{add_to_machine_config, HostDevice, HOSTNAME};

/// `tar -xzf` of `archive` into `dir`; the file names it held.
fn untar(archive: &Path, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("tar")
        .arg("-xzvf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(HOSTNAME).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_support_bundle_holds_this_boot_the_previous_one_and_every_service() {
    let dev = HostDevice::new("support");
    dev.site.issue_client("watcher", "reader").unwrap();
    add_to_machine_config(
        &dev.data,
        "\n[[services]]\nname = \"web\"\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"echo hello-from-web; exec sleep 3600\"]\n",
    );
    let dev = dev.start();
    dev.write_cli_config();
    let first = dev.cli.json(&["status"])["Status"]["boot_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let web_has_logged = || {
        let start = Instant::now();
        while !dev.cli.ok(&["logs", "web"]).contains("hello-from-web") {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "web never logged"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // A reboot: the first boot's log becomes "previous-boot".
    web_has_logged();
    dev.cli.ok(&["reboot"]);
    dev.cli.status_after_reboot(&first, Duration::from_secs(30));
    web_has_logged();

    // The previous boot's log, larger than one frame: it is paged whole.
    // (Its files no longer change; what is appended here stands for a long
    // boot's worth of lines.)
    let previous_log = dev.data.join("logs/boot-1/system.log");
    let mut long_log = std::fs::read_to_string(&previous_log).unwrap();
    for i in 0..2500 {
        long_log.push_str(&format!("[ 9.{i:03}] INFO filler line {i:04}\n"));
    }
    long_log.push_str("[ 9.999] INFO the last line before the reboot\n");
    std::fs::write(&previous_log, &long_log).unwrap();
    assert!(long_log.len() > 3 * 16 * 1024, "{}", long_log.len());

    // As a reader: support needs nothing more.
    let archive = dev.cli.path("bundle.tar.gz");
    let cli_toml = dev.cli.path("cli.toml");
    let text = std::fs::read_to_string(&cli_toml).unwrap();
    let (admin_crt, _) = dev.site.client_paths("admin");
    let (watcher_crt, _) = dev.site.client_paths("watcher");
    std::fs::write(
        &cli_toml,
        text.replace(&format!("{admin_crt:?}"), &format!("{watcher_crt:?}"))
            .replace(
                &format!("{:?}", admin_crt.with_extension("key")),
                &format!("{:?}", watcher_crt.with_extension("key")),
            ),
    )
    .unwrap();
    let refused = dev.cli.outpost(&["reboot"]);
    assert!(!refused.status.success(), "the CLI is not the reader");
    let summary = dev.cli.json(&["support", archive.to_str().unwrap()]);
    assert_eq!(summary["file"], archive.to_str().unwrap(), "{summary}");

    let dir = dev.cli.path("unpacked");
    let names = untar(&archive, &dir);
    for want in [
        "status.json",
        "version.json",
        "config.toml",
        "services.json",
        "network.json",
        "links.json",
        "time.json",
        "metrics.json",
        "revocations.json",
        "logs.txt",
        "previous-boot/logs.txt",
        "services/web.log",
    ] {
        let path = format!("{HOSTNAME}/{want}");
        assert!(names.contains(&path), "{path} not in {names:?}");
        assert!(
            summary["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == want),
            "{want} not in the summary {summary}"
        );
    }
    let status: serde_json::Value = serde_json::from_str(&read(&dir, "status.json")).unwrap();
    assert_eq!(status["Status"]["hostname"], HOSTNAME);
    assert_ne!(status["Status"]["boot_id"], first.as_str());
    let config = outpost::config::MachineConfig::from_toml(&read(&dir, "config.toml")).unwrap();
    assert_eq!(config.services[0].name, "web");
    assert!(read(&dir, "services/web.log").contains("hello-from-web"));
    let logs = read(&dir, "logs.txt");
    let now = status["Status"]["boot_id"].as_str().unwrap();
    assert!(logs.contains(&format!("boot id {now}")), "{logs}");
    let previous = read(&dir, "previous-boot/logs.txt");
    assert!(previous.contains(&format!("boot id {first}")), "{previous}");
    assert!(
        previous == long_log,
        "the whole previous-boot log, in order: {} bytes of {}",
        previous.len(),
        long_log.len()
    );
    // Host mode keeps no kernel log of the previous boot (and, started
    // without slot images, has no slots): those files are missing, and
    // errors.txt says why, by name. Nothing else is missing.
    let errors = read(&dir, "errors.txt");
    for missing in ["previous-boot/dmesg.txt", "slots.json"] {
        assert!(!names.contains(&format!("{HOSTNAME}/{missing}")));
        assert!(errors.contains(&format!("{missing}: ")), "{errors}");
    }
    for line in errors.lines() {
        let file = line.split(": ").next().unwrap();
        assert!(
            ["previous-boot/dmesg.txt", "slots.json", "dmesg.txt"].contains(&file),
            "unexpected: {line}"
        );
    }
    assert!(
        summary["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("previous-boot/dmesg.txt")),
        "{summary}"
    );

    // The text form says where it is and what is missing.
    let again = dev.cli.path("again.tar.gz");
    let text = dev.cli.ok(&["support", again.to_str().unwrap()]);
    assert!(
        text.contains("support bundle") && text.contains("again.tar.gz"),
        "{text}"
    );
    assert!(
        text.contains("not collected: previous-boot/dmesg.txt"),
        "{text}"
    );
    // An unwritable destination is an error naming it, and leaves nothing.
    let out = dev.cli.outpost(&["support", "/nonexistent-dir/x.tar.gz"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
