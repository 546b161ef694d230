//! `outpost image build`: one complete, flashable disk image for one device,
//! made without root, loop devices or mounts. See docs/image.md.
//!
//! MBR → BOOT (FAT: boot.scr, state.env, state2.env; on a Raspberry Pi also
//! the firmware, config.txt, u-boot.bin and the DTBs the firmware hands to
//! U-Boot), SLOT_A (FAT: Image.gz, initrd.img, boot.env, broadcom/*.dtb,
//! manifest.toml), SLOT_B (empty FAT), DATA (ext4: identity, machine config,
//! logs/).

mod bootscr;
mod cpio;
mod ext4;
mod fat;
mod initramfs;
mod kernel;
mod kmod;
mod mbr;
pub mod overlays;
mod personalize;
mod rpi;

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::board::Board;
use super::debian::{self, Kernel, Package};
use crate::bootstate::{initial_copies, BootState, Current, COPY_FILES, STATE_SIZE};
use crate::bundle::{sha256_hex, FileEntry, Manifest, MANIFEST_FILE, MAX_MANIFEST_BYTES};
use crate::config::{validate_hostname, MachineConfig, Release, MAX_CONFIG_BYTES};

pub use mbr::{Layout as DiskLayout, Partition};
pub use personalize::{personalize, PersonalizeReport};

/// Slot file names (boot.cmd loads these).
pub const KERNEL_FILE: &str = "Image.gz";
pub const INITRD_FILE: &str = "initrd.img";
pub const BOOT_ENV_FILE: &str = "boot.env";
pub const BOOT_SCRIPT_FILE: &str = "boot.scr";

/// outpost-init is a few MiB; bound what we read.
const MAX_INIT_BYTES: u64 = 64 << 20;
const MAX_SCRIPT_BYTES: u64 = 64 << 10;

pub struct BuildOptions {
    pub board: Board,
    pub site_dir: PathBuf,
    pub hostname: String,
    pub output: PathBuf,
    /// Static aarch64 outpost-init.
    pub init_binary: PathBuf,
    pub version: String,
    /// The repository's `uboot/boot.cmd`.
    pub uboot_script: PathBuf,
    /// Service binaries copied into the image's extension directory.
    pub extensions: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub image: PathBuf,
    pub size_bytes: u64,
    pub board: String,
    pub hostname: String,
    pub version: String,
    pub build_time: u64,
    /// "name version" of the Debian kernel package.
    pub kernel_package: String,
    pub kernel_release: String,
    /// Every module in the initramfs (canonical names, sorted).
    pub modules: Vec<String>,
    /// `modules.load`, in order.
    pub modules_load: Vec<String>,
    /// SLOT_A's files as in its manifest.
    pub slot_files: Vec<FileEntry>,
    pub warnings: Vec<String>,
}

/// Build the image described by `opts`. The output appears complete or not
/// at all (written beside it, then renamed).
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let board = &opts.board;
    board
        .validate()
        .with_context(|| format!("board {}", board.name))?;
    board.check_supported()?;
    validate_hostname(&opts.hostname)?;
    validate_version(&opts.version)?;
    let build_time = build_time(&opts.init_binary)?;
    let layout = DiskLayout::standard();

    let script = read_script(&opts.uboot_script)?;
    let slot = build_slot(&SlotInputs {
        board,
        site_dir: &opts.site_dir,
        init_binary: &opts.init_binary,
        version: &opts.version,
        build_time,
        volume_id: slot_volume_id(&board.name, &opts.version),
        extensions: &opts.extensions,
    })?;
    let (kpkg, kern, modules, manifest, slot_a) = (
        slot.kernel_package,
        slot.kernel,
        slot.modules,
        slot.manifest,
        slot.image,
    );

    let vol = |p: &Partition| fat::Volume {
        label: p.label,
        size: p.size,
        volume_id: fat::volume_id(&opts.hostname, p.label),
        hidden_sectors: p.start_lba(),
        time: build_time,
    };

    // BOOT: the script and the initial A/B state.
    let scr = bootscr::script_image(
        &format!("outpost {}", board.name),
        &boot_script(board, &script)?,
        build_time,
    )?;
    // Both boot-state copies, written right after each other on a fresh
    // volume: contiguous, preallocated, never resized (U-Boot and
    // outpost-init rewrite them in place).
    let [first, second] = initial_copies(&BootState::initial())?;
    let mut boot_files: Vec<(String, Vec<u8>)> = vec![
        (BOOT_SCRIPT_FILE.into(), scr),
        (COPY_FILES[0].into(), first),
        (COPY_FILES[1].into(), second),
    ];
    boot_files.extend(rpi::boot_files(board, &kern)?);
    let boot_refs: Vec<(&str, &[u8])> = boot_files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let boot = fat::build(&vol(&layout.boot), &boot_refs).context("building BOOT")?;
    let slot_b = fat::build(&vol(&layout.slot_b), &[]).context("building SLOT_B")?;

    // DATA.
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let staging = work.path().join("data");
    ext4::stage(&opts.site_dir, &opts.hostname, &staging)?;
    stage_slot_index(&staging, &slot_a, &board.name, &opts.version)?;
    let data_img = work.path().join("data.ext4");
    ext4::build(
        &staging,
        layout.data.size,
        &data_uuid(&opts.hostname),
        build_time,
        &data_img,
    )
    .context("building DATA")?;

    // A map left from an earlier build must never describe this image.
    let bmap_path = crate::host::bmap::path_for(&opts.output);
    let _ = std::fs::remove_file(&bmap_path);
    write_disk(
        &opts.output,
        &layout,
        &opts.hostname,
        &[
            (&layout.boot, &boot),
            (&layout.slot_a, &slot_a),
            (&layout.slot_b, &slot_b),
        ],
        &data_img,
    )?;
    // The block map beside it (`IMG.bmap`): what `outpost flash` and
    // `bmaptool copy` write.
    crate::host::bmap::write_beside(&opts.output)?;

    Ok(BuildReport {
        image: opts.output.clone(),
        size_bytes: layout.disk_size(),
        board: board.name.clone(),
        hostname: opts.hostname.clone(),
        version: opts.version.clone(),
        build_time,
        kernel_package: kpkg.label(),
        kernel_release: kern.release.clone(),
        modules: modules.modules.keys().cloned().collect(),
        modules_load: modules.load.clone(),
        slot_files: manifest.files.clone(),
        warnings: modules.warnings.clone(),
    })
}

/// What a slot is built from: the same for every device of a site and board.
pub struct SlotInputs<'a> {
    pub board: &'a Board,
    pub site_dir: &'a Path,
    pub init_binary: &'a Path,
    pub version: &'a str,
    pub build_time: u64,
    pub volume_id: u32,
    /// Files for `EXTENSION_DIR` (static service binaries), by their name.
    pub extensions: &'a [PathBuf],
}

/// A built slot: the FAT image (partition-sized) and what went into it.
pub struct SlotImage {
    pub image: Vec<u8>,
    pub manifest: Manifest,
    pub kernel_package: Package,
    pub kernel: Kernel,
    pub(crate) modules: kmod::Selection,
}

/// Build one slot's filesystem: kernel, initramfs (outpost-init, modules,
/// release file, the site's release keys), boot.env and the manifest. Device
/// identity is not in a slot, so one slot image serves every device of a
/// site and board (that is what a bundle carries).
pub fn build_slot(inputs: &SlotInputs<'_>) -> Result<SlotImage> {
    let board = inputs.board;
    board.check_supported()?;
    let build_time = inputs.build_time;
    let cache = debian::cache_dir()?;
    let kpkg = Package::find(&cache, board.kernel_suite(), &board.kernel.package)?;
    let kern = Kernel::find(&kpkg)?;
    let init = read_init(inputs.init_binary)?;
    let release_keys = read_optional(&inputs.site_dir.join("release.pub"), 16 << 10)?;
    let extensions = read_extensions(inputs.extensions)?;
    // Before the slow steps: a missing overlay is a quick error.
    let overlays = overlays::compile_all(Path::new(overlays::SOURCE_DIR), &board.overlays)?;

    let image = kernel::load(&kern.image)?;
    kernel::check_layout(&image, &board.uboot)?;
    let mut tree = kmod::Tree::open(&kern.modules_dir)?;
    let modules = tree.select(&board.modules)?;
    let release = Release {
        board: board.name.clone(),
        version: inputs.version.to_owned(),
        build_time,
    };
    let initrd = initramfs::build(&initramfs::Inputs {
        init: &init,
        release: &release,
        kernel_release: &kern.release,
        modules: &modules,
        modules_builtin: tree.modules_builtin(),
        release_keys: release_keys.as_deref(),
        extensions: &extensions,
    })?;
    if let Some(fdt) = board.uboot.fdt_addr_r {
        let room = fdt - board.uboot.ramdisk_addr_r;
        if initrd.len() as u64 > room {
            bail!(
                "initrd.img is {} bytes but the board leaves {room} (ramdisk_addr_r..fdt_addr_r)",
                initrd.len()
            );
        }
    }
    let boot_env = boot_env(board, inputs.version);
    let dtbs = rpi::slot_dtbs(board, &kern)?;
    let overlay_files: Vec<(String, &[u8])> = overlays
        .iter()
        .map(|(name, blob)| (overlays::slot_path(name), blob.as_slice()))
        .collect();
    let mut payload: Vec<(&str, &[u8])> = vec![
        (KERNEL_FILE, &image.gz),
        (INITRD_FILE, &initrd),
        (BOOT_ENV_FILE, boot_env.as_bytes()),
    ];
    payload.extend(dtbs.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    payload.extend(
        overlay_files
            .iter()
            .map(|(name, blob)| (name.as_str(), *blob)),
    );
    let manifest = Manifest {
        board: board.name.clone(),
        version: inputs.version.to_owned(),
        build_time,
        kernel_package: kpkg.label(),
        files: payload
            .iter()
            .map(|(name, data)| FileEntry {
                name: (*name).into(),
                size: data.len() as u64,
                sha256: sha256_hex(data),
            })
            .collect(),
    };
    let manifest_text = manifest.to_toml();
    let mut slot_files = payload.clone();
    slot_files.push((MANIFEST_FILE, manifest_text.as_bytes()));
    let part = DiskLayout::standard().slot_a;
    let vol = fat::Volume {
        label: part.label,
        size: part.size,
        volume_id: inputs.volume_id,
        hidden_sectors: part.start_lba(),
        time: build_time,
    };
    let image = fat::build(&vol, &slot_files).context("building the slot filesystem")?;
    Ok(SlotImage {
        image,
        manifest,
        kernel_package: kpkg,
        kernel: kern,
        modules,
    })
}

/// The time stamped on everything an image holds: `SOURCE_DATE_EPOCH` when
/// set, else the modification time of `init` (outpost-init, the newest
/// input): two builds from the same tree give the same bytes either way.
pub fn build_time(init: &Path) -> Result<u64> {
    if let Some(t) = source_date_epoch()? {
        return Ok(t);
    }
    std::fs::metadata(init)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading the time of {}", init.display()))?
        .duration_since(std::time::UNIX_EPOCH)
        .context("outpost-init is dated before 1970")
        .map(|d| d.as_secs())
}

/// `SOURCE_DATE_EPOCH`, if set.
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH `{v}` is not a number of seconds")),
        _ => Ok(None),
    }
}

/// The FAT volume id of a slot: from board and version only, so `image
/// build` and `bundle build` make the same slot bytes for a release.
pub fn slot_volume_id(board: &str, version: &str) -> u32 {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{board} {version}").as_bytes(),
    );
    let b = d.as_ref();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Where DATA keeps the chunk list of slot A (see `device::delta`): a
/// fresh card can take delta upgrades from its first boot.
const SLOT_A_CHUNKS: &str = "state/slot-A.chunks";

/// Put the chunk list of `slot` (SLOT_A's filesystem) into DATA's staging.
pub(crate) fn stage_slot_index(
    staging: &Path,
    slot: &[u8],
    board: &str,
    version: &str,
) -> Result<()> {
    let image = crate::host::bundle::trim(slot, 4096);
    if image.is_empty() {
        return Ok(());
    }
    let header = crate::host::bundle::index_image(image, board, version);
    let path = staging.join(SLOT_A_CHUNKS);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // As the device keeps it (the signed start of a bundle); unsigned here:
    // the device checks every chunk it reads through it against a signed header.
    let mut start = crate::bundle::format::encode_signed_part(&header);
    start.extend_from_slice(&[0u8; crate::bundle::format::SIGNATURE_LEN]);
    std::fs::write(&path, start).context("staging the slot's chunk list")
}

/// Versions go into boot.env and file names: one short token.
fn validate_version(v: &str) -> Result<()> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
    {
        bail!("version `{v}`: 1 to 64 letters, digits or . _ + - ~");
    }
    Ok(())
}

/// The slot's text env for `env import -t`: the kernel arguments (with the
/// status LED and button lines), the version and, when the board has any,
/// the overlays boot.scr applies from this slot.
fn boot_env(board: &Board, version: &str) -> String {
    let mut args = format!(
        "console={} outpost.data={}",
        board.console, board.data_device
    );
    if !board.cmdline.trim().is_empty() {
        args.push(' ');
        args.push_str(board.cmdline.trim());
    }
    if let Some(led) = &board.led {
        args.push_str(&format!(" outpost.led={}", led.cmdline_value()));
    }
    if let Some(button) = &board.button {
        args.push_str(&format!(" outpost.button={}", button.cmdline_value()));
    }
    let mut env = format!("OS_ARGS={args}\nOS_VERSION={version}\n");
    if !board.overlays.is_empty() {
        env.push_str(&format!("OS_OVERLAYS={}\n", board.overlays.join(" ")));
    }
    env
}

/// boot.cmd with a prelude of the board's values: the disk to use when the
/// script is run by hand (distro boot sets devtype/devnum itself), the load
/// addresses, and the attempt counts (bare hex, as the script keeps numbers).
fn boot_script(board: &Board, script: &str) -> Result<Vec<u8>> {
    let (devtype, devnum) = board.boot_device()?;
    let u = &board.uboot;
    let prelude = format!(
        "# Added by `outpost image build` for board {name}.\n\
         env exists devtype || setenv devtype {devtype}\n\
         env exists devnum || setenv devnum {devnum}\n\
         setenv kernel_addr_r {:#x}\n\
         setenv kernel_comp_addr_r {:#x}\n\
         setenv ramdisk_addr_r {:#x}\n\
         setenv outpost_fdt_addr ${{{fdt}}}\n\
         {slot_dtb}\
         setenv outpost_attempts {attempts:x}\n\
         setenv outpost_max_attempts {max:x}\n\n",
        u.kernel_addr_r,
        u.kernel_comp_addr_r,
        u.ramdisk_addr_r,
        name = board.name,
        fdt = u.fdt_addr_var,
        // The slot carries DTBs: boot.cmd loads ${fdtfile} from it to here.
        slot_dtb = match (board.dtbs.is_empty(), u.fdt_addr_r) {
            (false, Some(a)) => format!("setenv fdt_addr_r {a:#x}\nsetenv outpost_slot_dtb 1\n"),
            _ => "setenv outpost_slot_dtb\n".to_owned(),
        },
        attempts = crate::bootstate::DEFAULT_ATTEMPTS,
        max = crate::bootstate::MAX_ATTEMPTS,
    );
    Ok([prelude.as_bytes(), script.as_bytes()].concat())
}

fn data_uuid(hostname: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("outpost-data:{hostname}").as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout, so tools accept it
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::bundle::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Most extension files in one image, and the largest one: service binaries
/// go into the initramfs, which is in RAM and must fit the slot.
const MAX_EXTENSIONS: usize = 32;
const MAX_EXTENSION_BYTES: u64 = 32 << 20;

/// Read the extension files; each keeps its file name, which must be unique.
fn read_extensions(paths: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    if paths.len() > MAX_EXTENSIONS {
        bail!("{} extension files, at most {MAX_EXTENSIONS}", paths.len());
    }
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .with_context(|| format!("extension {}: no usable file name", path.display()))?
            .to_owned();
        if out.iter().any(|(n, _)| *n == name) {
            bail!("two extension files are named `{name}`");
        }
        let data = read_bounded(path, MAX_EXTENSION_BYTES)
            .with_context(|| format!("extension {}", path.display()))?;
        out.push((name, data));
    }
    Ok(out)
}

fn read_init(path: &Path) -> Result<Vec<u8>> {
    let data = read_bounded(path, MAX_INIT_BYTES).context("outpost-init binary")?;
    // ELF, 64-bit, little endian, executable or PIE, AArch64.
    let ok = data.len() > 64
        && data.starts_with(b"\x7fELF\x02\x01")
        && matches!(u16::from_le_bytes([data[16], data[17]]), 2 | 3)
        && u16::from_le_bytes([data[18], data[19]]) == 183;
    if !ok {
        bail!(
            "{} is not an aarch64 Linux executable (build it with scripts/build-init)",
            path.display()
        );
    }
    Ok(data)
}

fn read_script(path: &Path) -> Result<String> {
    let data = read_bounded(path, MAX_SCRIPT_BYTES).context("U-Boot script")?;
    let text =
        String::from_utf8(data).with_context(|| format!("{} is not UTF-8", path.display()))?;
    if text.contains('\0') {
        bail!("{} contains a NUL byte", path.display());
    }
    Ok(text)
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut data = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    if data.len() as u64 > limit {
        bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(data)
}

fn read_optional(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    if path.is_file() {
        read_bounded(path, limit).map(Some)
    } else {
        Ok(None)
    }
}

/// Write the disk to a temporary file beside `output`, then rename it: a
/// half-written image never carries the final name.
fn write_disk(
    output: &Path,
    layout: &DiskLayout,
    hostname: &str,
    fat_parts: &[(&Partition, &Vec<u8>)],
    data_img: &Path,
) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(output) {
        if !meta.is_file() {
            bail!(
                "{} exists and is not a regular file (use `outpost flash` for devices)",
                output.display()
            );
        }
    }
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .context("output needs a file name")?;
    let tmp = output.with_file_name(format!(".{name}.partial"));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.set_len(layout.disk_size())?;
        mbr::write(&mut f, layout, mbr::disk_signature(hostname))?;
        for (part, bytes) in fat_parts {
            if bytes.len() as u64 != part.size {
                bail!(
                    "{} image is {} bytes, partition is {}",
                    part.label,
                    bytes.len(),
                    part.size
                );
            }
            write_sparse(&f, part.start, bytes)?;
        }
        let data = std::fs::read(data_img).context("reading the DATA image")?;
        if data.len() as u64 != layout.data.size {
            bail!(
                "DATA image is {} bytes, partition is {}",
                data.len(),
                layout.data.size
            );
        }
        write_sparse(&f, layout.data.start, &data)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", output.display())));
    }
    std::fs::rename(&tmp, output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))
}

/// Write `data` at `offset`, skipping all-zero blocks so the file stays
/// sparse (the file is fresh, so skipped blocks read as zeros).
fn write_sparse(f: &File, offset: u64, data: &[u8]) -> Result<()> {
    const BLOCK: usize = 64 << 10;
    for (i, chunk) in data.chunks(BLOCK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            f.write_all_at(chunk, offset + (i * BLOCK) as u64)?;
        }
    }
    Ok(())
}

/// What an image holds, read back from the image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    pub board: String,
    pub version: String,
    pub build_time: u64,
    pub kernel_package: String,
    pub hostname: String,
    pub api_port: u16,
}

impl ImageInfo {
    /// Read SLOT_A's manifest and DATA's machine config from `image`.
    pub fn read(image: &Path) -> Result<ImageInfo> {
        let layout = check_table(image)?;
        let text = read_fat_file(
            image,
            &layout.slot_a,
            MANIFEST_FILE,
            MAX_MANIFEST_BYTES as u64,
        )?;
        let manifest = Manifest::from_toml(&String::from_utf8_lossy(&text))
            .map_err(|e| anyhow::anyhow!("{}: SLOT_A {e}", image.display()))?;
        let config = ext4::read_file(
            image,
            layout.data.start,
            &format!("/{}", ext4::MACHINE_CONFIG),
            MAX_CONFIG_BYTES as u64,
        )?;
        let config = MachineConfig::from_toml(&String::from_utf8_lossy(&config))
            .with_context(|| format!("{}: DATA {}", image.display(), ext4::MACHINE_CONFIG))?;
        Ok(ImageInfo {
            board: manifest.board,
            version: manifest.version,
            build_time: manifest.build_time,
            kernel_package: manifest.kernel_package,
            hostname: config.hostname,
            api_port: config.api.port,
        })
    }
}

/// Both boot-state copies as stored in the image's BOOT partition.
pub fn read_boot_copies(image: &Path) -> Result<[Vec<u8>; 2]> {
    let layout = check_table(image)?;
    let mut out: [Vec<u8>; 2] = Default::default();
    for (slot, name) in out.iter_mut().zip(COPY_FILES) {
        *slot = read_fat_file(image, &layout.boot, name, STATE_SIZE as u64)?;
    }
    Ok(out)
}

/// The A/B state in the image's BOOT partition: the newer valid copy (what
/// U-Boot or outpost-init last wrote), with what was wrong with the other.
pub fn read_boot_state(image: &Path) -> Result<Current> {
    let [first, second] = read_boot_copies(image)?;
    Ok(Current::read(&first, &second))
}

/// The image's partition table must be the one we build; DATA may be larger
/// (a card whose DATA the device grew at its first boot).
fn check_table(image: &Path) -> Result<DiskLayout> {
    let mut f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let table = mbrman::MBR::read_from(&mut f, mbr::SECTOR as u32)
        .with_context(|| format!("{}: no MBR partition table", image.display()))?;
    let mut layout = DiskLayout::standard();
    let data_size = u64::from(table[usize::from(layout.data.number)].sectors) * mbr::SECTOR;
    if data_size > layout.data.size {
        layout.data.size = data_size;
    }
    for p in layout.partitions() {
        let e = &table[usize::from(p.number)];
        if e.starting_lba != p.start_lba() || u64::from(e.sectors) * mbr::SECTOR != p.size {
            bail!(
                "{}: partition {} is not where an Outpost image has it",
                image.display(),
                p.number
            );
        }
    }
    Ok(layout)
}

fn read_fat_file(image: &Path, part: &Partition, name: &str, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    fat::read_file(fat::Window::new(f, part.start, part.size), name, limit)
        .with_context(|| format!("{}: {}/{name}", image.display(), part.label))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests;
