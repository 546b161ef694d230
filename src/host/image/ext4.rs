//! DATA: an ext4 filesystem made by e2fsprogs from a staging directory
//! (`mke2fs -d`; no root, no loop device, no mount). It holds what makes one
//! card this device: its identity and machine config.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::config::MachineConfig;

/// Certificates, keys and configs are a few KiB.
const MAX_SITE_FILE: u64 = 64 * 1024;

/// Files staged on DATA: (path on DATA, mode).
pub(crate) const IDENTITY_CERT: &str = "identity/device.crt";
pub(crate) const IDENTITY_KEY: &str = "identity/device.key";
pub(crate) const IDENTITY_CA: &str = "identity/ca.crt";
pub(crate) use crate::wire::revocation::CRL_FILE as IDENTITY_CRL;
pub(crate) const MACHINE_CONFIG: &str = "config/machine.toml";

/// Copy the device's files from the site directory into `staging`:
/// `SITE/ca.crt` and `SITE/devices/<hostname>/{device.crt,device.key,machine.toml}`.
/// Never anything else: the site CA key stays on the operator's machine.
pub(crate) fn stage(site: &Path, hostname: &str, staging: &Path) -> Result<MachineConfig> {
    let device_dir = site.join("devices").join(hostname);
    if !device_dir.is_dir() {
        bail!(
            "no device `{hostname}` in site {} ({} is missing): run `outpost gen device --site {} --hostname {hostname}`",
            site.display(),
            device_dir.display(),
            site.display()
        );
    }
    let machine_text = read_site_file(&device_dir.join("machine.toml"))?;
    let config = MachineConfig::from_toml(&machine_text)
        .with_context(|| format!("{}", device_dir.join("machine.toml").display()))?;
    if config.hostname != hostname {
        bail!(
            "{}: hostname is `{}`, expected `{hostname}`",
            device_dir.join("machine.toml").display(),
            config.hostname
        );
    }
    let files: [(PathBuf, &str, u32); 4] = [
        (device_dir.join("device.crt"), IDENTITY_CERT, 0o644),
        (device_dir.join("device.key"), IDENTITY_KEY, 0o600),
        (site.join("ca.crt"), IDENTITY_CA, 0o644),
        (device_dir.join("machine.toml"), MACHINE_CONFIG, 0o644),
    ];
    for (dir, mode) in [("identity", 0o700), ("config", 0o755), ("logs", 0o755)] {
        let p = staging.join(dir);
        std::fs::create_dir_all(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    for (from, to, mode) in files {
        let text = read_site_file(&from)?;
        if text.trim().is_empty() {
            bail!("{} is empty", from.display());
        }
        let dest = staging.join(to);
        std::fs::write(&dest, text.as_bytes()).with_context(|| format!("staging {to}"))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
    }
    // The site's revocation list, when it has one: a card flashed today
    // refuses what was revoked before it ever calls in.
    let crl = crate::host::revoke::crl_path_in(site);
    if crl.is_file() {
        let dest = staging.join(IDENTITY_CRL);
        std::fs::write(&dest, crate::host::revoke::read_crl(&crl)?)
            .with_context(|| format!("staging {IDENTITY_CRL}"))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(config)
}

fn read_site_file(path: &Path) -> Result<String> {
    if !path.is_file() {
        bail!("{} is missing", path.display());
    }
    super::super::debian::read_small(path, MAX_SITE_FILE)
}

/// Make an ext4 image of `size` bytes labelled DATA from `staging`, owned
/// by root whoever builds it, with a fixed UUID and timestamps.
pub(crate) fn build(staging: &Path, size: u64, uuid: &str, time: u64, out: &Path) -> Result<()> {
    let mut cmd = Command::new("mke2fs");
    cmd.args([
        "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "DATA", "-U", uuid,
    ])
    .arg("-E")
    .arg(format!("root_owner=0:0,hash_seed={uuid}"))
    .arg("-d")
    .arg(staging)
    .arg(out)
    .arg(format!("{}k", size / 1024))
    .env("E2FSPROGS_FAKE_TIME", time.to_string())
    .env("SOURCE_DATE_EPOCH", time.to_string())
    .env("MKE2FS_CONFIG", "/etc/mke2fs.conf");
    run(&mut cmd, "mke2fs (install e2fsprogs)")?;

    // mke2fs -d copies the builder's uid/gid and the staging files' times;
    // make them root's and the build time.
    let mut script = String::new();
    for path in staged_paths(staging)? {
        for field in ["uid", "gid"] {
            script.push_str(&format!("sif /{path} {field} 0\n"));
        }
        for field in ["atime", "mtime", "ctime", "crtime"] {
            script.push_str(&format!("sif /{path} {field} @{time}\n"));
        }
    }
    let script_path = staging.with_extension("debugfs");
    std::fs::write(&script_path, script)?;
    let mut cmd = Command::new("debugfs");
    cmd.arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", time.to_string());
    let res = run(&mut cmd, "debugfs (install e2fsprogs)");
    let _ = std::fs::remove_file(&script_path);
    res
}

/// Every path under `staging`, relative, sorted.
fn staged_paths(staging: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(staging.join(&rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            let Some(s) = child.to_str() else {
                bail!("non-UTF-8 staging path")
            };
            out.push(s.to_owned());
            if entry.file_type()?.is_dir() {
                stack.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    // debugfs reports failed requests on stderr but exits 0.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = stderr
        .lines()
        .any(|l| !l.starts_with("debugfs ") && !l.trim().is_empty());
    if !out.status.success() || failed {
        bail!("{what} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(())
}

/// Read one file from an ext4 filesystem at byte `offset` of `image`
/// (debugfs, read-only). `-c` skips the allocation bitmaps: after a power
/// cut they may not match their checksums until the board replays the
/// journal, and a file's contents do not need them. (What is still only in
/// the journal is not seen: the device's own view wins once it boots.)
pub(crate) fn read_file(image: &Path, offset: u64, path: &str, limit: u64) -> Result<Vec<u8>> {
    let out = Command::new("debugfs")
        .arg("-c")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(format!("{}?offset={offset}", image.display()))
        .output()
        .context("running debugfs (install e2fsprogs)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        || stderr
            .lines()
            .any(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
    {
        bail!(
            "reading {path} from DATA of {}: {}",
            image.display(),
            stderr.trim()
        );
    }
    if out.stdout.len() as u64 > limit {
        bail!("{path} on DATA is larger than {limit} bytes");
    }
    Ok(out.stdout)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A site directory with fake PEM files for `hostname`.
    pub(crate) fn fake_site(hostname: &str) -> tempfile::TempDir {
        let site = tempfile::tempdir().unwrap();
        let dev = site.path().join("devices").join(hostname);
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(
            site.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nCA\n",
        )
        .unwrap();
        std::fs::write(
            site.path().join("ca.key"),
            "-----BEGIN PRIVATE KEY-----\nSECRET-CA-KEY\n",
        )
        .unwrap();
        std::fs::write(dev.join("device.crt"), "-----BEGIN CERTIFICATE-----\nDEV\n").unwrap();
        std::fs::write(
            dev.join("device.key"),
            "-----BEGIN PRIVATE KEY-----\nDEVKEY\n",
        )
        .unwrap();
        std::fs::write(
            dev.join("machine.toml"),
            MachineConfig::new(hostname).to_toml(),
        )
        .unwrap();
        site
    }

    #[test]
    fn stage_copies_only_the_device_files() {
        let site = fake_site("edge-1");
        let staging = tempfile::tempdir().unwrap();
        stage(site.path(), "edge-1", staging.path()).unwrap();
        let paths = staged_paths(staging.path()).unwrap();
        assert_eq!(
            paths,
            [
                "config",
                "config/machine.toml",
                "identity",
                "identity/ca.crt",
                "identity/device.crt",
                "identity/device.key",
                "logs"
            ]
        );
        let mode = std::fs::metadata(staging.path().join(IDENTITY_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = stage(site.path(), "edge-2", tempfile::tempdir().unwrap().path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("outpost gen device --site"),
            "{err:#}"
        );
        std::fs::write(
            site.path().join("devices/edge-1/machine.toml"),
            "hostname = \"-bad\"",
        )
        .unwrap();
        assert!(stage(site.path(), "edge-1", tempfile::tempdir().unwrap().path()).is_err());
    }

    #[test]
    fn a_site_with_a_revocation_list_stages_it_for_the_board() {
        let tmp = tempfile::tempdir().unwrap();
        let site = crate::host::pki::Site::create(&tmp.path().join("s"), "s").unwrap();
        site.issue_device("edge-1", 50000).unwrap();
        let (alice, _) = site.issue_client("alice", "reader").unwrap();
        let pem = std::fs::read(alice).unwrap();
        let done = crate::host::revoke::revoke(&site, &pem, "client alice").unwrap();
        let staging = tmp.path().join("staging");
        stage(&site.dir, "edge-1", &staging).unwrap();
        let staged = std::fs::read(staging.join(IDENTITY_CRL)).unwrap();
        assert_eq!(staged, crate::host::revoke::read_crl(&done.crl).unwrap());
    }

    #[test]
    fn builds_a_clean_root_owned_ext4() {
        if Command::new("mke2fs").arg("-V").output().is_err() {
            eprintln!("SKIP: e2fsprogs not installed");
            return;
        }
        let site = fake_site("edge-1");
        let work = tempfile::tempdir().unwrap();
        let staging = work.path().join("staging");
        stage(site.path(), "edge-1", &staging).unwrap();
        let img = work.path().join("data.ext4");
        build(
            &staging,
            64 << 20,
            "0b8a3b5e-0000-4000-8000-000000000001",
            1_700_000_000,
            &img,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let key = read_file(&img, 0, "/identity/device.key", 4096).unwrap();
        assert_eq!(key, b"-----BEGIN PRIVATE KEY-----\nDEVKEY\n");
        let stat = Command::new("debugfs")
            .args(["-R", "stat /identity/device.key"])
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&stat.stdout);
        assert!(text.contains("Mode:  0600"), "{text}");
        assert!(text.contains("User:     0   Group:     0"), "{text}");
        let ls = Command::new("debugfs")
            .args(["-R", "ls -l /"])
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&ls.stdout);
        assert!(text.contains("logs") && !text.contains("ca.key"), "{text}");
        // As a power cut leaves it: a block bitmap whose checksum is wrong
        // (found by the power-cut campaign). Files are still readable.
        let broke = Command::new("debugfs")
            .args(["-w", "-R", "set_bg 0 block_bitmap_csum 0x1234"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(broke.status.success());
        assert!(!Command::new("e2fsck")
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap()
            .status
            .success());
        let key = read_file(&img, 0, "/identity/device.key", 4096).unwrap();
        assert_eq!(key, b"-----BEGIN PRIVATE KEY-----\nDEVKEY\n");
    }
}
