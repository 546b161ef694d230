//! The `outpost` CLI on bad input: every refusal names what was wrong and how
//! to fix it. No QEMU needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{image_build, Cli};

fn stderr_of(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A site with one device, and a stand-in init: just an aarch64 ELF header
/// (each build below is refused before the init's contents matter).
fn site(cli: &Cli) -> String {
    let s = cli.path("site").to_str().unwrap().to_owned();
    assert!(cli.outpost(&["gen", "site", &s]).status.success());
    assert!(cli
        .outpost(&["gen", "device", "--site", &s, "--hostname", "edge-1"])
        .status
        .success());
    let mut elf = vec![0u8; 128];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[16] = 2; // ET_EXEC
    elf[18] = 183; // EM_AARCH64
    std::fs::write(cli.path("init"), elf).unwrap();
    std::fs::write(cli.path("x86-init"), b"\x7fELF\x02\x01 not for this board").unwrap();
    s
}

#[test]
fn missing_kernel_package_says_how_to_get_it() {
    let cli = Cli::new();
    let s = site(&cli);
    let init = cli.path("init");
    let out = cli
        .command(&image_build(&s, "edge-1", "x.img", init.to_str().unwrap()))
        .env("OUTPOST_CACHE", cli.path("empty-cache"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(err.contains("linux-image-arm64"), "{err}");
    assert!(
        err.contains("scripts/fetch-debian-packages") || err.contains("scripts/setup"),
        "{err}"
    );
}

#[test]
fn invalid_machine_config_names_the_field() {
    let cli = Cli::new();
    let s = site(&cli);
    let config = Path::new(&s).join("devices/edge-1/machine.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("port = 50000", "port = 0");
    std::fs::write(&config, text).unwrap();
    let init = cli.path("init");
    let out = cli.outpost(&image_build(&s, "edge-1", "x.img", init.to_str().unwrap()));
    let err = stderr_of(&out);
    assert!(err.contains("api.port"), "{err}");
}

#[test]
fn bad_names_and_unknown_devices_are_refused() {
    let cli = Cli::new();
    let s = site(&cli);
    let err = stderr_of(&cli.outpost(&["gen", "device", "--site", &s, "--hostname", "bad_name"]));
    assert!(err.contains("hostname"), "{err}");
    let err = stderr_of(&cli.outpost(&[
        "gen", "client", "--site", &s, "--name", "eve", "--role", "root",
    ]));
    assert!(err.contains("role"), "{err}");
    let err = stderr_of(&cli.outpost(&["gen", "site", &s]));
    assert!(err.contains("already"), "{err}");
    let init = cli.path("init");
    let err = stderr_of(&cli.outpost(&image_build(&s, "nope", "x.img", init.to_str().unwrap())));
    assert!(err.contains("outpost gen device"), "{err}");
    let err = stderr_of(&cli.outpost(&[
        "image",
        "build",
        "--board",
        "../etc",
        "--site",
        &s,
        "--hostname",
        "edge-1",
        "-o",
        "x.img",
    ]));
    assert!(err.contains("board"), "{err}");
    let x86 = cli.path("x86-init");
    let err = stderr_of(&cli.outpost(&image_build(&s, "edge-1", "x.img", x86.to_str().unwrap())));
    assert!(err.contains("not an aarch64"), "{err}");
    // No node yet: the error says how to get one.
    let err = stderr_of(&cli.outpost(&["status"]));
    assert!(err.contains("-n NODE") || err.contains("qemu up"), "{err}");
    let err = stderr_of(&cli.outpost(&["-n", "ghost", "status"]));
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn host_mode_init_refuses_an_invalid_config_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("config")).unwrap();
    std::fs::write(
        data.join("config/machine.toml"),
        "hostname = \"ok\"\n[network]\nmode = \"static\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outpost-init"))
        .args([
            "--host-mode",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(err.contains("network.address"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_outpost-init"))
        .args(["--host-mode", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert!(stderr_of(&out).contains("--listen"));
}
