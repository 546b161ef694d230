//! `outpost image personalize`: one device's card from a generic image of
//! its site and board, without rebuilding it.
//!
//! What is per-device in an image is DATA: `identity/` (the device's
//! certificate and key, the site CA) and `config/machine.toml` (hostname,
//! API port, …). BOOT (boot script, A/B state) and the slots (kernel,
//! initramfs, `boot.env` with the board's command line, manifest) hold
//! nothing of one device — the slots are what every device of the site gets
//! as a bundle. So a new DATA is made (the builder's staging and mke2fs) and
//! everything else is copied byte for byte: the MBR's disk signature and
//! the FAT volume ids stay the base image's (the builder derives them from
//! the hostname it built for; nothing reads them as an identity).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::{check_table, data_uuid, ext4, write_sparse, ImageInfo};
use crate::config::validate_hostname;

/// The site CA certificate is a few KiB.
const MAX_CA_BYTES: u64 = 64 << 10;
/// Bytes copied per read.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct PersonalizeReport {
    pub base: PathBuf,
    pub output: PathBuf,
    pub bmap: PathBuf,
    /// The base image's hostname (from its DATA) and the new one.
    pub base_hostname: String,
    pub hostname: String,
    pub image_size: u64,
    pub mapped_bytes: u64,
    pub elapsed_ms: u128,
}

/// Write `output`: `base` with a new DATA for `hostname` of `site`, and
/// `output.bmap`. The output appears complete or not at all.
pub fn personalize(
    base: &Path,
    site: &Path,
    hostname: &str,
    output: &Path,
) -> Result<PersonalizeReport> {
    let started = Instant::now();
    validate_hostname(hostname)?;
    let layout = check_table(base)?;
    let info = ImageInfo::read(base)
        .with_context(|| format!("{} is not an Outpost image", base.display()))?;

    // The slots carry the site's release keys and DATA its CA: a base image
    // of another site would give a card that trusts the wrong site.
    let base_ca = ext4::read_file(
        base,
        layout.data.start,
        &format!("/{}", ext4::IDENTITY_CA),
        MAX_CA_BYTES,
    )?;
    let site_ca = std::fs::read(site.join("ca.crt"))
        .with_context(|| format!("reading {}", site.join("ca.crt").display()))?;
    if base_ca != site_ca {
        bail!(
            "{} was built for another site (its {} differs from {}): build a base image for this site",
            base.display(),
            ext4::IDENTITY_CA,
            site.join("ca.crt").display()
        );
    }

    // Timestamps: SOURCE_DATE_EPOCH, else the base's build time, so equal
    // inputs give equal cards.
    let time = super::source_date_epoch()?.unwrap_or(info.build_time);
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let staging = work.path().join("data");
    ext4::stage(site, hostname, &staging)?;
    // The base's SLOT_A, so the card takes delta upgrades (as `image build`).
    let mut slot = vec![0u8; usize::try_from(layout.slot_a.size).context("slot size")?];
    std::fs::File::open(base)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut slot, layout.slot_a.start))
        .with_context(|| format!("reading SLOT_A of {}", base.display()))?;
    super::stage_slot_index(&staging, &slot, &info.board, &info.version)?;
    let data_img = work.path().join("data.ext4");
    ext4::build(
        &staging,
        layout.data.size,
        &data_uuid(hostname),
        time,
        &data_img,
    )
    .context("building DATA")?;

    if let Ok(meta) = std::fs::metadata(output) {
        if !meta.is_file() {
            bail!(
                "{} exists and is not a regular file (use --device for a card)",
                output.display()
            );
        }
    }
    let bmap_path = crate::host::bmap::path_for(output);
    // A map left from an earlier output must never describe this one.
    let _ = std::fs::remove_file(&bmap_path);
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .context("output needs a file name")?;
    let tmp = output.with_file_name(format!(".{name}.partial"));
    let res = write_output(base, &tmp, layout.data.start, layout.data.size, &data_img);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", output.display())));
    }
    std::fs::rename(&tmp, output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))?;
    let (bmap, map) = crate::host::bmap::write_beside(output)?;
    Ok(PersonalizeReport {
        base: base.to_owned(),
        output: output.to_owned(),
        bmap,
        base_hostname: info.hostname,
        hostname: hostname.to_owned(),
        image_size: map.image_size,
        mapped_bytes: map.mapped_bytes(),
        elapsed_ms: started.elapsed().as_millis(),
    })
}

/// `base` everywhere but DATA, which comes from `data_img`; all-zero
/// chunks are left as holes (the file is new).
fn write_output(
    base: &Path,
    tmp: &Path,
    data_start: u64,
    data_size: u64,
    data_img: &Path,
) -> Result<()> {
    let src = File::open(base).with_context(|| format!("opening {}", base.display()))?;
    let size = src.metadata()?.len();
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    out.set_len(size)?;
    let data_end = data_start + data_size;
    let mut buf = vec![0u8; CHUNK];
    for (from, to) in [(0, data_start), (data_end, size)] {
        let mut off = from;
        while off < to {
            let n = usize::try_from((to - off).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = buf.get_mut(..n).unwrap_or_default();
            src.read_exact_at(chunk, off)
                .with_context(|| format!("reading {} at byte {off}", base.display()))?;
            write_sparse(&out, off, chunk)?;
            off += n as u64;
        }
    }
    let data = std::fs::read(data_img).context("reading the new DATA")?;
    if data.len() as u64 != data_size {
        bail!(
            "new DATA is {} bytes, the partition {data_size}",
            data.len()
        );
    }
    write_sparse(&out, data_start, &data)?;
    out.sync_all()?;
    Ok(())
}
