//! The kernel for a slot: Debian's `vmlinuz` (an uncompressed arm64 `Image`
//! on bookworm; gzipped ones are accepted too), checked and gzipped into
//! `Image.gz`, and checked against the board's U-Boot memory layout.

use std::io::Read as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use flate2::read::GzDecoder;

use super::initramfs::gzip_whole as gzip;
use crate::host::board::UbootSpec;

/// Far above any arm64 kernel Image (Debian's is ~33 MB).
const MAX_IMAGE: u64 = 256 << 20;
/// "ARM\x64" at offset 56 of the arm64 Image header.
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";

pub(crate) struct KernelImage {
    /// Image.gz as it goes into the slot.
    pub(crate) gz: Vec<u8>,
    /// Size of the raw Image.
    pub(crate) raw_len: u64,
    /// The header's `image_size`: Image plus BSS, what the kernel occupies.
    pub(crate) image_size: u64,
}

pub(crate) fn load(path: &Path) -> Result<KernelImage> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if len > MAX_IMAGE {
        bail!("{} is {len} bytes, too large for a kernel", path.display());
    }
    let file = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let raw = if file.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&file[..])
            .take(MAX_IMAGE + 1)
            .read_to_end(&mut out)
            .with_context(|| format!("{}: bad gzip", path.display()))?;
        if out.len() as u64 > MAX_IMAGE {
            bail!("{} inflates past {MAX_IMAGE} bytes", path.display());
        }
        out
    } else {
        file
    };
    if raw.len() < 64 || &raw[56..60] != ARM64_MAGIC {
        bail!(
            "{} is not an arm64 kernel Image (no ARM\\x64 magic); compressed formats other than gzip are not supported",
            path.display()
        );
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&raw[16..24]);
    // image_size 0 means an old kernel without the field; U-Boot then assumes 16 MiB
    // of room, so count at least the Image itself.
    let image_size = u64::from_le_bytes(size).max(raw.len() as u64);
    Ok(KernelImage {
        raw_len: raw.len() as u64,
        image_size,
        gz: gzip(&raw)?,
    })
}

/// Everything fits where boot.scr puts it (see the board's `[uboot]`):
/// Image.gz below kernel_comp_addr_r, the inflated Image between that and
/// ramdisk_addr_r, and the running kernel (with BSS) below the ramdisk.
pub(crate) fn check_layout(k: &KernelImage, u: &UbootSpec) -> Result<()> {
    let mib = |n: u64| n as f64 / f64::from(1u32 << 20);
    let checks = [
        (
            "Image.gz",
            k.gz.len() as u64,
            u.kernel_comp_addr_r - u.kernel_addr_r,
            "kernel_addr_r..kernel_comp_addr_r",
        ),
        (
            "inflated Image",
            k.raw_len,
            u.ramdisk_addr_r - u.kernel_comp_addr_r,
            "kernel_comp_addr_r..ramdisk_addr_r",
        ),
        (
            "kernel with BSS",
            k.image_size,
            u.ramdisk_addr_r - u.kernel_addr_r,
            "kernel_addr_r..ramdisk_addr_r",
        ),
    ];
    for (what, size, room, span) in checks {
        if size > room {
            bail!(
                "{what} is {:.1} MiB but the board leaves {:.1} MiB ({span}); move the addresses in the board's [uboot]",
                mib(size),
                mib(room)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::host::image::tests::qemu_board;

    fn fake_image(len: usize, image_size: u64) -> Vec<u8> {
        let mut raw = vec![0u8; len];
        raw[16..24].copy_from_slice(&image_size.to_le_bytes());
        raw[56..60].copy_from_slice(ARM64_MAGIC);
        raw
    }

    #[test]
    fn loads_raw_and_gzipped_images() {
        let dir = tempfile::tempdir().unwrap();
        let raw = fake_image(4096, 8192);
        for (name, bytes) in [("raw", raw.clone()), ("gz", gzip(&raw).unwrap())] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let k = load(&p).unwrap();
            assert_eq!((k.raw_len, k.image_size), (4096, 8192), "{name}");
            assert_eq!(&k.gz[..2], &[0x1f, 0x8b]);
        }
        let p = dir.path().join("bad");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert!(format!("{:#}", load(&p).err().unwrap()).contains("arm64"));
    }

    #[test]
    fn layout_limits_name_the_addresses() {
        let u = qemu_board().uboot;
        let ok = KernelImage {
            gz: vec![0; 11 << 20],
            raw_len: 33 << 20,
            image_size: 35 << 20,
        };
        check_layout(&ok, &u).unwrap();
        let big_gz = KernelImage {
            gz: vec![0; 17 << 20],
            ..ok
        };
        let err = format!("{:#}", check_layout(&big_gz, &u).unwrap_err());
        assert!(err.contains("kernel_comp_addr_r"), "{err}");
        let big_bss = KernelImage {
            gz: vec![],
            raw_len: 33 << 20,
            image_size: 61 << 20,
        };
        assert!(check_layout(&big_bss, &u).is_err());
    }
}
