//! The initramfs: outpost-init as `/init`, the mount points it needs, the
//! release file, and the board's kernel modules with `modules.dep` and
//! `modules.load`. Two cpio (newc) archives, one after the other, as the
//! kernel unpacks them (the early-microcode layout): `/init` alone and
//! uncompressed — it changes in every release, and a raw binary changes
//! in place where a compressed one changes from the first difference on, so
//! a delta upgrade moves only the chunks around its changes (each bundle
//! chunk is compressed anyway) — then everything else, gzipped.

use anyhow::{Context as _, Result};
use flate2::{Compress, Compression, FlushCompress, Status};

use super::cpio::Archive;
use super::kmod::Selection;
use crate::config::{Release, EXTENSION_DIR, RELEASE_PATH};

/// Module files larger than this are not kernel modules we want at boot.
const MAX_MODULE_BYTES: u64 = 64 << 20;

pub(crate) struct Inputs<'a> {
    pub(crate) init: &'a [u8],
    pub(crate) release: &'a Release,
    /// `uname -r` of the kernel the modules belong to.
    pub(crate) kernel_release: &'a str,
    pub(crate) modules: &'a Selection,
    /// The package's `modules.builtin`, if it has one: lets init tell a
    /// built-in driver from a missing one.
    pub(crate) modules_builtin: Option<&'a [u8]>,
    /// The site's release public keys (hex lines): bundles must be signed by one.
    pub(crate) release_keys: Option<&'a [u8]>,
    /// Service binaries for `EXTENSION_DIR`: (file name, contents).
    pub(crate) extensions: &'a [(String, Vec<u8>)],
}

/// The uncompressed second archive: everything but `/init`.
pub(crate) fn archive(inputs: &Inputs<'_>) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for dir in ["dev", "proc", "sys", "run", "data", "etc"] {
        a.dir(dir, 0o755)?;
    }
    a.dir("tmp", 0o1777)?;
    // The kernel opens /dev/console for init's stdio before init can mount
    // devtmpfs; having the node in the archive does not depend on the
    // kernel's built-in initramfs providing it.
    a.char_dev("dev/console", 0o600, 5, 1)?;
    // The root is read-only: outpost-init writes the DNS servers of the
    // links in use to /run/resolv.conf (docs/network.md).
    a.symlink("etc/resolv.conf", "/run/resolv.conf")?;
    a.file(
        RELEASE_PATH.trim_start_matches('/'),
        0o644,
        inputs.release.to_toml().into_bytes(),
    )?;
    if let Some(keys) = inputs.release_keys {
        a.dir("etc/outpost", 0o755)?;
        a.file("etc/outpost/release-keys", 0o644, keys.to_vec())?;
    }
    if !inputs.extensions.is_empty() {
        let ext = EXTENSION_DIR.trim_start_matches('/');
        let mut path = String::new();
        for part in ext.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            a.dir(&path, 0o755)?;
        }
        for (name, data) in inputs.extensions {
            a.file(&format!("{ext}/{name}"), 0o555, data.clone())?;
        }
    }
    let mod_dir = format!("lib/modules/{}", inputs.kernel_release);
    a.dir(&mod_dir, 0o755)?;
    for m in inputs.modules.modules.values() {
        let len = std::fs::metadata(&m.source)
            .with_context(|| format!("{}", m.source.display()))?
            .len();
        if len > MAX_MODULE_BYTES {
            anyhow::bail!("{} is {len} bytes, not a kernel module", m.source.display());
        }
        let data =
            std::fs::read(&m.source).with_context(|| format!("reading {}", m.source.display()))?;
        a.file(&format!("{mod_dir}/{}", m.rel_path), 0o644, data)?;
    }
    a.file(
        &format!("{mod_dir}/modules.dep"),
        0o644,
        inputs.modules.modules_dep().into_bytes(),
    )?;
    a.file(
        &format!("{mod_dir}/modules.load"),
        0o644,
        inputs.modules.modules_load().into_bytes(),
    )?;
    if let Some(builtin) = inputs.modules_builtin {
        a.file(
            &format!("{mod_dir}/modules.builtin"),
            0o644,
            builtin.to_vec(),
        )?;
    }
    a.finish(ENTRY_MTIME)
}

/// What the slot's `initrd.img` holds: `/init` uncompressed, zero padding to
/// `HEAD_ALIGN`, then the rest gzipped.
pub(crate) fn build(inputs: &Inputs<'_>) -> Result<Vec<u8>> {
    let mut head = Archive::new();
    head.file("init", 0o755, inputs.init.to_vec())?;
    let mut out = head.finish(ENTRY_MTIME)?;
    out.resize(out.len().next_multiple_of(HEAD_ALIGN), 0);
    out.extend(gzip(&archive(inputs)?)?);
    Ok(out)
}

/// The mtime of every entry: fixed, not the build time (the release file
/// carries that). A per-release stamp in every cpio header would change
/// every compressed piece of the initramfs, and a delta would carry them all.
const ENTRY_MTIME: u64 = 0;

/// The kernel skips zeros between archives; 512 as dracut's early cpio.
const HEAD_ALIGN: usize = 512;

/// Split an `initrd.img` into its uncompressed head archive and the gzip
/// that follows (tests).
#[cfg(test)]
pub(crate) fn split(initrd: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = (0..initrd.len())
        .step_by(HEAD_ALIGN)
        .find(|&i| initrd.get(i..i + 3) == Some(&[0x1f, 0x8b, 8]))?;
    Some((initrd.get(..at)?, initrd.get(at..)?))
}

/// Gzip with no name and a zero mtime in the header: equal input, equal
/// bytes. "Rsyncable": the input is cut at content-defined points and the
/// compressor is fully flushed (dictionary reset) at each, so an unchanged
/// stretch of input gives the same compressed bytes wherever it sits, and
/// a delta upgrade moves only the pieces around a change (outpost-init
/// rebuilt: its pieces, not every module after it). Level 6: on Debian's
/// kernel, level 9 saves 0.2 % for 3x the time.
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // RFC 1952 header: deflate, no flags, mtime 0, no extra flags, OS unknown.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    // A fresh compressor per piece (a full flush would leave miniz matching
    // against stale window bytes), each ending in a sync flush: its blocks
    // are not final and end byte-aligned, so they concatenate into one
    // stream; then the final empty block (fixed Huffman, end-of-block).
    for (at, len) in crate::host::bundle::cut(data, RSYNC_PIECE) {
        let mut c = Compress::new(Compression::default(), false);
        deflate(&mut c, &data[at..at + len], &mut out, FlushCompress::Sync)?;
    }
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

/// Feed `input` to the compressor and `flush`, appending to `out`.
fn deflate(
    c: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> Result<()> {
    loop {
        out.reserve(input.len() / 2 + 4096);
        let before = c.total_in();
        let status = c.compress_vec(input, out, flush)?;
        let used = usize::try_from(c.total_in() - before).unwrap_or(input.len());
        input = input.get(used..).unwrap_or_default();
        // The flush is complete once output space was left over.
        if status == Status::StreamEnd || (input.is_empty() && out.len() < out.capacity()) {
            return Ok(());
        }
    }
}

/// Gzip in one stream (no name, mtime 0): for the kernel, which changes as a
/// whole when it changes at all (a new build relocates everything), so
/// pieces would buy no delta and cost ~3 % (11.24 vs 11.62 MB on Debian's).
pub(crate) fn gzip_whole(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Average piece between full flushes: each flush costs a few bytes and the
/// matches across it (estimated ~3 % at 32 KiB with zlib on a kernel Image).
const RSYNC_PIECE: u32 = 32 * 1024;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::host::image::kmod;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    /// A change in the middle leaves the compressed bytes after it as they
    /// were (shifted): what keeps delta upgrades small.
    #[test]
    fn gzip_is_rsyncable_and_standard() {
        let mut x = 12345u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Compressible but not trivial, like code.
                    if i % 3 == 0 {
                        (x >> 60) as u8
                    } else {
                        b"initramfs"[i % 9]
                    }
                })
                .collect()
        };
        let (a, b) = (noise(400_000), noise(400_000));
        let mut changed = a.clone();
        changed.extend_from_slice(b"a changed default");
        let one = gzip(&[a.clone(), b.clone()].concat()).unwrap();
        let two = gzip(&[changed, b.clone()].concat()).unwrap();
        // The compressed second half (~100 KB) is nearly all the same bytes.
        let tail = 90_000;
        // Before the trailer (CRC and length differ, of course).
        let common = one[..one.len() - 8]
            .iter()
            .rev()
            .zip(two[..two.len() - 8].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            common > tail,
            "{common} of {} bytes in common at the end",
            one.len()
        );
        for gz in [&one, &two] {
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back)
                .unwrap();
            assert_eq!(back.len(), if gz == &one { 800_000 } else { 800_017 });
        }
        // gzip(1) reads it too, when installed.
        if let Ok(mut child) = Command::new("gzip")
            .args(["-t"])
            .stdin(Stdio::piped())
            .spawn()
        {
            child.stdin.take().unwrap().write_all(&one).unwrap();
            assert!(child.wait().unwrap().success());
        }
    }

    #[test]
    fn cpio_lists_the_layout() {
        let tree_dir = kmod::tests::fake_tree();
        let mut tree = kmod::Tree::open(tree_dir.path()).unwrap();
        let sel = tree
            .select(&["virtio_net".to_string(), "ext4".to_string()])
            .unwrap();
        let release = Release {
            board: "qemu-virt".into(),
            version: "1.2.3".into(),
            build_time: 1_700_000_000,
        };
        let inputs = Inputs {
            init: b"\x7fELF fake init",
            release: &release,
            kernel_release: "6.1.0-9-arm64",
            modules: &sel,
            modules_builtin: Some(b"kernel/fs/fat/fat.ko\n"),
            release_keys: Some(b"00\n"),
            extensions: &[("svc".into(), b"\x7fELF svc".to_vec())],
        };
        let initrd = build(&inputs).unwrap();
        let (head, gz) = split(&initrd).unwrap();
        assert_eq!(head.len() % HEAD_ALIGN, 0);
        assert!(head.starts_with(b"070701") && head.ends_with(&[0; 4]));
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut back).unwrap();
        assert_eq!(back, archive(&inputs).unwrap());
        assert_eq!(initrd, build(&inputs).unwrap(), "deterministic");
        let raw = back;

        // cpio(1) reads one archive: list both and join the listings.
        let mut text = String::new();
        for part in [head, &raw[..]] {
            let Ok(mut child) = Command::new("cpio")
                .args(["-t", "-v", "--quiet"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
            else {
                eprintln!("SKIP: cpio not installed");
                return;
            };
            child.stdin.take().unwrap().write_all(part).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        for want in [
            " init",
            " dev/console",
            " proc",
            " sys",
            " run",
            " tmp",
            " data",
            " etc/outpost-release",
            " lib/modules/6.1.0-9-arm64/kernel/fs/ext4/ext4.ko",
            " lib/modules/6.1.0-9-arm64/kernel/net/core/failover.ko",
            " lib/modules/6.1.0-9-arm64/kernel/crypto/crc32c_generic.ko",
            " lib/modules/6.1.0-9-arm64/modules.dep",
            " lib/modules/6.1.0-9-arm64/modules.load",
            " lib/modules/6.1.0-9-arm64/modules.builtin",
        ] {
            assert!(
                text.lines().any(|l| l.ends_with(want)),
                "{want} missing:\n{text}"
            );
        }
        assert!(text
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")));
        // Extensions: read-only executables in the extension directory.
        assert!(text
            .lines()
            .any(|l| l.starts_with("-r-xr-xr-x") && l.ends_with(" usr/lib/outpost/ext/svc")));
        assert!(text
            .lines()
            .any(|l| l.starts_with('d') && l.ends_with(" usr/lib/outpost")));

        // Extract and compare the text files.
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&raw).unwrap();
        let _ = child.wait().unwrap();
        let base = dir.path().join("lib/modules/6.1.0-9-arm64");
        assert_eq!(
            std::fs::read_to_string(base.join("modules.load")).unwrap(),
            "virtio_net\ncrc32c_generic\next4\n"
        );
        let rel = std::fs::read_to_string(dir.path().join("etc/outpost-release")).unwrap();
        assert_eq!(Release::from_toml(&rel).unwrap(), release);
    }
}
