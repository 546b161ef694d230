//! Reproducible builds: two `outpost image build` runs from the same inputs
//! give byte-identical images (and block maps), and two `outpost bundle
//! build` runs byte-identical bundles — without SOURCE_DATE_EPOCH, whose
//! absence dates everything by outpost-init's modification time. Needs the
//! Debian packages `scripts/setup` fetched (skipped without them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{repo, Cli};

/// An ELF header that passes the aarch64 executable check (nothing boots it).
fn fake_init(path: &Path) {
    let mut elf = vec![0u8; 256];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    elf[16] = 2; // ET_EXEC
    elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    std::fs::write(path, elf).unwrap();
}

fn sha256(path: &Path) -> String {
    outpost::bundle::sha256_hex(&std::fs::read(path).unwrap())
}

fn debian_packages_cached() -> bool {
    let board = outpost::host::board::Board::load(&repo().join("boards"), "qemu-virt").unwrap();
    let found = outpost::host::debian::cache_dir().and_then(|c| {
        outpost::host::debian::Package::find(&c, board.kernel_suite(), &board.kernel.package)
    });
    if let Err(e) = &found {
        eprintln!("SKIP: {e:#}");
    }
    found.is_ok()
}

#[test]
fn two_builds_give_the_same_bytes() {
    if !debian_packages_cached() {
        return;
    }
    let env = Cli::new();
    let site = env.path("site");
    let site = site.to_str().unwrap();
    env.ok(&["gen", "site", site, "--name", "repro"]);
    env.ok(&["gen", "device", "--site", site, "--hostname", "edge-r"]);
    let init = env.path("outpost-init");
    fake_init(&init);
    let build = |name: &str| {
        let out = env.path(name);
        let mut cmd = env.command(&common::image_build(
            site,
            "edge-r",
            out.to_str().unwrap(),
            init.to_str().unwrap(),
        ));
        let run = cmd
            .args(["--version", "0.3.0"])
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    };
    let (one, two) = (build("one.img"), build("two.img"));
    assert_eq!(sha256(&one), sha256(&two), "image is not reproducible");
    let bmap = |p: &Path| p.with_extension("img.bmap");
    assert_eq!(
        std::fs::read(bmap(&one)).unwrap(),
        std::fs::read(bmap(&two)).unwrap()
    );

    let bundle = |name: &str| {
        let out = env.path(name);
        let run = env
            .command(&[
                "bundle",
                "build",
                "--site",
                site,
                "--version",
                "0.3.0",
                "-o",
                out.to_str().unwrap(),
                "--init",
                init.to_str().unwrap(),
            ])
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    };
    let (b1, b2) = (bundle("one.bundle"), bundle("two.bundle"));
    assert_eq!(sha256(&b1), sha256(&b2), "bundle is not reproducible");
    // The card's SLOT_A is the bundle's image (same slot bytes for a
    // release): what makes a fresh card's first delta small.
    let part = outpost::host::image::DiskLayout::standard().slot_a;
    let disk = std::fs::read(&one).unwrap();
    let slot = &disk[part.start as usize..(part.start + part.size) as usize];
    let header = outpost::host::bundle::BundleFile::open(&b1).unwrap().header;
    let image = &slot[..header.image_size as usize];
    assert!(slot[image.len()..].iter().all(|&b| b == 0));
    assert_eq!(outpost::host::bundle::sha256(image), header.image_sha256);
}
