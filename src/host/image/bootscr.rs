//! `boot.scr`: a U-Boot script in the legacy uImage format, as
//! `mkimage -A arm64 -O linux -T script -C none -n NAME -d boot.cmd` writes it.
//! A 64-byte big-endian header, then the multi-file payload: each part's
//! length (u32 BE), a 0 terminator, then the parts (here: the one script).

use anyhow::{bail, Result};

const IH_MAGIC: u32 = 0x2705_1956;
const IH_OS_LINUX: u8 = 5;
const IH_ARCH_ARM64: u8 = 22;
const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;
/// `ih_name` is 32 bytes, NUL padded.
const IH_NMLEN: usize = 32;
const HEADER_LEN: usize = 64;

/// Wrap `script` (hush text) into a boot.scr image named `name`, stamped
/// `time` (seconds since the epoch, like mkimage's SOURCE_DATE_EPOCH).
pub(crate) fn script_image(name: &str, script: &[u8], time: u64) -> Result<Vec<u8>> {
    if name.len() >= IH_NMLEN {
        bail!(
            "boot script name `{name}` is longer than {} bytes",
            IH_NMLEN - 1
        );
    }
    let Ok(script_len) = u32::try_from(script.len()) else {
        bail!("boot script is {} bytes, too large", script.len());
    };
    let mut data = Vec::with_capacity(8 + script.len());
    data.extend_from_slice(&script_len.to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script);
    let Ok(data_len) = u32::try_from(data.len()) else {
        bail!("boot script is too large");
    };

    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&IH_MAGIC.to_be_bytes());
    // 4..8 header CRC, filled last
    // ih_time is 32-bit: saturate rather than wrap after 2106.
    let time32 = u32::try_from(time).unwrap_or(u32::MAX);
    h[8..12].copy_from_slice(&time32.to_be_bytes());
    h[12..16].copy_from_slice(&data_len.to_be_bytes());
    // 16..20 load address, 20..24 entry point: 0 for scripts
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = IH_OS_LINUX;
    h[29] = IH_ARCH_ARM64;
    h[30] = IH_TYPE_SCRIPT;
    h[31] = IH_COMP_NONE;
    h[32..32 + name.len()].copy_from_slice(name.as_bytes());
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());

    let mut out = h.to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::process::Command;

    const SCRIPT: &[u8] = b"echo hello from outpost\nsetenv a 1\n";

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("-V").output().is_ok()
    }

    #[test]
    fn layout_is_the_legacy_script_format() {
        let img = script_image("outpost", SCRIPT, 1_700_000_000).unwrap();
        assert_eq!(&img[0..4], &[0x27, 0x05, 0x19, 0x56]);
        assert_eq!(img.len(), 64 + 8 + SCRIPT.len());
        assert_eq!(&img[64..68], &(SCRIPT.len() as u32).to_be_bytes());
        assert_eq!(&img[72..], SCRIPT);
        assert!(script_image(&"x".repeat(32), SCRIPT, 0).is_err());
    }

    /// Byte-identical to Debian's mkimage with the same timestamp, and
    /// accepted by `mkimage -l` and `dumpimage`.
    #[test]
    fn matches_mkimage() {
        if !have("mkimage") {
            eprintln!("SKIP: mkimage (u-boot-tools) not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cmd = dir.path().join("boot.cmd");
        let theirs = dir.path().join("theirs.scr");
        let ours = dir.path().join("ours.scr");
        std::fs::write(&cmd, SCRIPT).unwrap();
        let st = Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "-A",
                "arm64",
                "-O",
                "linux",
                "-T",
                "script",
                "-C",
                "none",
                "-n",
                "outpost boot",
            ])
            .arg("-d")
            .arg(&cmd)
            .arg(&theirs)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        let img = script_image("outpost boot", SCRIPT, 1_700_000_000).unwrap();
        std::fs::write(&ours, &img).unwrap();
        assert_eq!(img, std::fs::read(&theirs).unwrap());

        let out = Command::new("mkimage")
            .arg("-l")
            .arg(&ours)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("AArch64 Linux Script"), "{text}");

        let extracted = dir.path().join("extracted");
        let out = Command::new("dumpimage")
            .args(["-T", "script", "-p", "0", "-o"])
            .arg(&extracted)
            .arg(&ours)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // dumpimage hands back the whole payload: length table, then the script.
        assert_eq!(std::fs::read(&extracted).unwrap(), &img[64..]);
    }
}
